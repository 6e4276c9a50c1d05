"""PgBouncer's words: why it closes connections, the other log lines that matter, its level names.

Every closed connection is one log line, `C-0x…: db/user@addr:port closing because: REASON (age=Ns)`
(`S-0x…` for server connections), printed by disconnect_client_sqlstate / disconnect_server in
src/objects.c when log_disconnections = 1 (the default since 1.9.0 and before, main.c). The
REASONs come from about 200 calls across src/*.c: disconnect_client, disconnect_server,
disconnect_client_sqlstate, close_client_list, close_server_list, pkt_cb_disconnect and
kill_pool_logins. tools/pgbouncer_reasons.py extracts every literal reason from every release tag
from 1.9.0 to 1.25.2 and master into catalogs/pgbouncer_reasons.json (format, side, first and
last release, files); `printed(reason)` and `Reason.since` read it. REASONS below maps each of
them (and the server's own login errors PgBouncer passes on verbatim, which are PostgreSQL's
words) to a family: which side it closes, whether it is normal recycling, what the application
feels, and one of the five categories. tests/test_vocabulary.py checks every extracted format
maps to a family.

Corrections against the source (pgbouncer/pgbouncer, commit 13a344f, 2026-07-10, and its tags):
- "server lifetime over" is printed since 1.9.0 or earlier by janitor.c for idle server
  connections past server_lifetime; release_server (objects.c) printed "server_lifetime" through
  1.16.1 and "server lifetime over" from 1.17.0 ("Make messages consistent").
- "server login has been failing, try again later (server_login_retry)" 1.17.0-1.23.1; "…, cached
  error: %s (server_login_retry)" from 1.24.0.
- "transaction timeout" from 1.25.0; the prepared-statement reasons from 1.21.0; "server shutting
  down" from 1.23.0 (PgBouncer's own shutdown, SHUTDOWN WAIT_FOR_SERVERS); "pooler is shutting
  down" from 1.25.0.
- client_idle_timeout skips clients linked to a server connection (janitor.c pool_client_maint:
  `if (client->link) continue;`), so it never fires in session mode.
- A client that disconnects while logging in before sending anything (a probe) is closed with no
  reason and so no log line at all (client.c, SBUF_EV_RECV_FAILED).
- "pgbouncer cannot connect to server" is printed up to 1.16.1 only (objects.c); later releases
  say "server login has been failing, …" (server_login_retry) or pass the server's error on.
- A client closed with notify gets an ErrorResponse with SQLSTATE 08P01 and the reason as its
  message (proto.c), except the server's own login error, passed on with the server's SQLSTATE
  from 1.20.0 (kill_pool_logins with a sqlstate; 08P01 before).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final, Literal, get_args

from playbook.vocabulary.categories import Category

CATALOG: Final = Path(__file__).parent / "catalogs" / "pgbouncer_reasons.json"

# Level names PgBouncer prints, from libusual's log_level_list (usual/logging.c, identical from
# 1.9.0 to master, vendored as lib/usual/logging.c since 1.25.0): LG_STATS and LG_INFO both print LOG.
LevelName = Literal["FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE"]
LEVELS: Final[tuple[LevelName, ...]] = get_args(LevelName)

# What a line of PgBouncer's log is, as the `kind` column of the pgbouncer_log_events frame says:
# a close ("closing because:"), an error sent to a client ("pooler error:"), a client login
# attempt, a new server connection, a refused client login ("login failed"), a failed server
# login ("server login failed:"), or another line that matters (EVENTS).
LogKind = Literal[
    "close", "pooler_error", "login", "server_login", "login_failed", "server_login_failed", "event"
]
LOG_KINDS: Final[tuple[LogKind, ...]] = get_args(LogKind)
# The kinds that reached a client as an error or a close.
FELT_KINDS: Final[tuple[LogKind, ...]] = ("close", "pooler_error")

# The key of every reason family (REASONS), and "unknown" for a text no family matches.
ReasonKey = Literal[
    "client_idle_timeout", "idle_transaction_timeout", "query_timeout", "query_wait_timeout",
    "transaction_timeout", "client_login_timeout_server_down", "client_login_timeout", "cancel_wait_timeout",
    "suspend_timeout", "max_client_conn", "max_db_client_connections", "max_user_client_connections",
    "server_too_many_clients", "server_conn_crashed", "server_connection_closed", "server_shutting_down",
    "server_connect_failed", "server_connect_timeout", "server_dns_failed", "server_login_retry",
    "server_login_failed", "server_check_failed", "server_reset_failed", "exec_on_connect_failed",
    "server_protocol_error", "auth_query_failed", "prepared_statement_in_use", "prepared_statement_missing",
    "statement_mode_transaction", "client_unexpected_eof", "client_gone_mid_query", "client_close_request",
    "cancel_request_done", "server_lifetime", "server_idle_timeout", "obsolete_connection", "evicted",
    "pool_shrunk", "server_dirty", "replication_ended", "admin_action", "client_auth_failed",
    "no_such_database", "unsupported_startup_parameter", "client_protocol_error", "pooler_internal",
    "unknown",
]  # fmt: skip
REASON_KEYS: Final[tuple[ReasonKey, ...]] = get_args(ReasonKey)
# The key of every other line that matters (EVENTS), and the keys the log reader gives logins.
EventKey = Literal[
    "reserve_pool_used", "pooler_restart", "pooler_up", "reload", "pause", "resume", "auth_config",
    "tls_error", "connect_error", "fd_limit", "unsupported_startup_parameter", "login", "server_login",
]  # fmt: skip
EVENT_KEYS: Final[tuple[EventKey, ...]] = get_args(EventKey)

# -- the close-reason vocabulary -------------------------------------------------------------------

Side = Literal["client", "server", "either"]


@dataclass(frozen=True)
class Reason:
    """What one family of PgBouncer close reasons means.

    - `side`: which connection PgBouncer closes for it ("either": both kinds, e.g. a pool removed).
      A server reason also appears on the client it was linked to (unlink_server passes it on).
    - `recycling`: PgBouncer retiring a server connection as part of its normal work (lifetime,
      idle timeout, obsolete after a reload, evicted for another pool, pool shrunk): never an
      incident by itself.
    - `benign`: an ordinary end that is no incident either (the client said goodbye, a cancel
      request done).
    - `category`: one of the five, for reasons that can be an incident; None for benign/recycling.
    - `app_feels`: what the application sees.
    - `setting`: the pgbouncer.ini setting behind it, when one is.
    """

    key: ReasonKey
    side: Side
    category: Category | None
    app_feels: str
    setting: str | None = None
    recycling: bool = False
    benign: bool = False
    patterns: tuple[str, ...] = ()

    @property
    def since(self) -> str | None:
        """The oldest release that prints one of this family's texts ("1.9.0": that or earlier, the
        oldest scanned); None when only texts PgBouncer passes on from the server match."""
        found = printed(self)
        return min((p.first for p in found), key=version_key) if found else None


def _r(
    key: ReasonKey,
    side: Side,
    category: Category | None,
    app_feels: str,
    *patterns: str,
    setting: str | None = None,
    recycling: bool = False,
    benign: bool = False,
) -> Reason:
    return Reason(key, side, category, app_feels, setting, recycling, benign, patterns)


_REFUSED = "its login is refused with this text as the error"
_NOTHING = "nothing: no client was using the server connection"

# Order matters: the first reason whose pattern matches wins (patterns are anchored regexes).
REASONS: Final[tuple[Reason, ...]] = (
    # -- pooler timeouts the application feels --------------------------------------------------
    _r("client_idle_timeout", "client", "timeout",
       "its idle pooled connection is closed by PgBouncer (FATAL client_idle_timeout); the next query on "
       "it fails", r"client_idle_timeout", setting="client_idle_timeout"),
    _r("idle_transaction_timeout", "server", "timeout",
       "its connection idle in transaction is closed (FATAL idle transaction timeout); the transaction is "
       "lost", r"idle transaction timeout", setting="idle_transaction_timeout"),
    _r("query_timeout", "either", "timeout",
       "a query running longer than query_timeout is cancelled and the connection closed",
       r"query_timeout", r"query timeout", setting="query_timeout"),
    _r("query_wait_timeout", "client", "pool_config",
       "a query that waited longer than query_wait_timeout for a server connection fails "
       "(ERROR query_wait_timeout) and the connection is closed", r"query_wait_timeout",
       setting="query_wait_timeout"),
    _r("transaction_timeout", "server", "timeout",
       "a transaction open longer than transaction_timeout is ended with its connection (1.25+)",
       r"transaction timeout", setting="transaction_timeout"),
    _r("client_login_timeout_server_down", "client", "server",
       "its login waits for a server connection that cannot be made and fails after client_login_timeout",
       r"client_login_timeout \(server down\)", setting="client_login_timeout"),
    _r("client_login_timeout", "client", "network",
       "a client that did not finish logging in within client_login_timeout is dropped",
       r"client_login_timeout", setting="client_login_timeout"),
    _r("cancel_wait_timeout", "either", "pool_config",
       "a cancel request that could not be forwarded in time is dropped: the query keeps running",
       r"cancel_wait_timeout", r"cancel request query_wait_timeout", r"cancel request query_timeout",
       setting="cancel_wait_timeout"),
    _r("suspend_timeout", "either", "server",
       "its connection is closed during an online restart (SUSPEND took too long)", r"suspend_timeout",
       setting="suspend_timeout"),
    # -- limits ----------------------------------------------------------------------------------
    _r("max_client_conn", "client", "pool_config",
       _REFUSED + ": 'no more connections allowed (max_client_conn)'",
       r"no more connections allowed \(max_client_conn\)", setting="max_client_conn"),
    _r("max_db_client_connections", "client", "pool_config", _REFUSED + " (1.24+)",
       r"client connections exceeded \(max_db_client_connections\)", setting="max_db_client_connections"),
    _r("max_user_client_connections", "client", "pool_config", _REFUSED + " (1.24+)",
       r"client connections exceeded \(max_user_client_connections\)",
       setting="max_user_client_connections"),
    _r("server_too_many_clients", "either", "pool_config",
       "PostgreSQL refused PgBouncer's login for lack of slots; waiting clients get the same error",
       r"(?:FATAL |ERROR )?sorry, too many clients already.*",
       r"(?:FATAL |ERROR )?remaining connection slots are reserved.*",
       r"(?:FATAL |ERROR )?too many connections for (?:role|database).*"),
    # -- the server side ends or refuses -------------------------------------------------------------
    _r("server_conn_crashed", "server", "server",
       "if a client was using it, that client's connection is closed with 'server conn crashed?'; an "
       "idle one is replaced unseen. PostgreSQL (or the path) closed it: a restart, a crash, "
       "pg_terminate_backend, idle_session_timeout, a reset", r"server conn crashed\?"),
    _r("server_connection_closed", "server", "server",
       "PgBouncer could not send to the server: the server side had gone", r"server connection closed"),
    _r("server_shutting_down", "either", "server",
       "PostgreSQL is shutting down, starting or in recovery: connections end, new logins are refused; "
       "exactly 'server shutting down' (1.23+) is PgBouncer's own shutdown closing its clients, which "
       "diagnose.pooler tells apart as an operator action",
       r"server shutting down", r"(?:FATAL |ERROR )?the database system is (?:shutting down|starting up|"
       r"in recovery mode|not yet accepting connections|not accepting connections).*",
       r"(?:FATAL |ERROR )?terminating connection due to administrator command.*"),
    _r("server_connect_failed", "server", "server",
       "a new server connection failed (refused, unreachable); waiting clients keep waiting or fail",
       r"connect failed", r"cannot connect", r"pgbouncer cannot connect to server"),
    _r("server_connect_timeout", "server", "network",
       "a new server connection did not complete within server_connect_timeout",
       r"connect timeout", setting="server_connect_timeout"),
    _r("server_dns_failed", "server", "network", "the server's host name did not resolve",
       r"server (?:DNS|dns) lookup failed"),
    _r("server_login_retry", "client", "server",
       "its login fails at once while logins to the server keep failing (server_login_retry)",
       r"server login has been failing, cached error: .* \(server_login_retry\)",
       r"server login has been failing, try again later \(server_login_retry\)",
       setting="server_login_retry"),
    _r("server_login_failed", "either", "pool_config",
       "PgBouncer cannot log in to PostgreSQL (credentials, auth method, pg_hba): clients get the "
       "server's error",
       r"login failed", r"server login failed: .*", r"auth failed",
       # the server's own FATAL, passed on verbatim (kill_pool_logins_server_error)
       r"(?:FATAL |ERROR )?\S+ authentication failed for user .*",
       r"(?:FATAL |ERROR )?no pg_hba\.conf entry .*", r"(?:FATAL |ERROR )?role .* does not exist",
       r"(?:FATAL |ERROR )?database .* does not exist",
       r"(?:FATAL |ERROR )?role .* is not permitted to log in",
       r"(?:FATAL |ERROR )?database .* is not currently accepting connections",
       r"(?:FATAL |ERROR )?permission denied for database .*"),
    _r("server_check_failed", "server", "server",
       "a server connection failed server_check_query; it is replaced (clients unaffected unless all fail)",
       r"test query failed", setting="server_check_query"),
    _r("server_reset_failed", "server", "server",
       "server_reset_query failed on release (session mode); the connection is dropped",
       r"reset query failed", setting="server_reset_query"),
    _r("exec_on_connect_failed", "server", "pool_config",
       "the database's connect_query failed on a new server connection", r"exec_on_connect query failed"),
    _r("server_protocol_error", "server", "server",
       "the server sent something PgBouncer could not handle; the connection is dropped",
       r"bad pkt header", r"unknown pkt from server", r"broken ParameterStatus packet",
       r"failed to store ParameterStatus", r"invalid server parameter", r"partial pkt in login phase",
       r"startup pkt failed", r"failed to answer authreq", r"bad sslreq answer", r"server refused SSL",
       r"sslreq processing failed", r"TLS startup failed", r"received unencrypted data after SSL response",
       r"var change failed", r"unknown address family: \d+", r"disko over"),
    _r("auth_query_failed", "server", "pool_config",
       "the auth_query used to look up passwords failed or answered wrongly: logins fail",
       r"error response from auth_query", r"unexpected response from auth_query",
       r"unexpected response from login query",
       r"expected 2 columns from (?:auth_query|login query), not \d+",
       r"auth_query response contained null user name", r"login query response contained null user name",
       r"unable to send (?:auth_query|login query)", r"unable to allocate new user for auth"),
    # -- transaction/statement mode incompatibilities ----------------------------------------------
    _r("prepared_statement_in_use", "client", "pool_config",
       "its protocol-level prepared statement collides with one already on the server connection "
       "(transaction mode, 1.21+ prepared statement tracking)", r"prepared statement name is already in use"),
    _r("prepared_statement_missing", "client", "pool_config",
       "it used a prepared statement PgBouncer does not know (prepared on another server connection)",
       r"prepared statement did not exist"),
    _r("statement_mode_transaction", "server", "pool_config",
       "statement pooling mode refuses multi-statement transactions",
       r"transaction blocks not allowed in statement pooling mode", r"long transactions not allowed"),
    # -- the client went away ------------------------------------------------------------------------
    _r("client_unexpected_eof", "client", "network",
       "nothing: the client vanished without a Terminate message (process killed, path reset, pool "
       "discarding without close)", r"client unexpected eof", r"unexpected eof"),
    _r("client_gone_mid_query", "server", "network",
       "nothing (the client had gone); the server connection it left dirty is closed",
       r"client disconnect while server was not ready", r"client disconnected with quer(?:y|ies) in progress",
       r"client disconnect before everything was sent to the server",
       r"client gave up on cancel request, so we also give up forwarding to server"),
    # -- ordinary ends ------------------------------------------------------------------------------
    _r("client_close_request", "client", None, "nothing: the client closed its connection",
       r"client close request", benign=True),
    _r("cancel_request_done", "either", None, "nothing: a cancel request's connection ends",
       r"successfully sent cancel request", r"sent cancel req", r"cancel request for (?:idle|console) client",
       r"not sending cancel request for client that is now idle", r"failed cancel request",
       r"failed to send cancel req(?:uest)?", r"bad cancel (?:key|request)", r"pause cancel request failed",
       r"could not find peer to forward request to",
       r"failed to forward cancel request because its TTL was exhausted",
       r"ignoring cancel request for server that is setting vars",
       r"peer server was not necessary anymore, because client cancel connection was already closed",
       benign=True),
    # -- PgBouncer's normal recycling of server connections (never an incident by itself) ----------
    _r("server_lifetime", "server", None, _NOTHING + " (closed when released after server_lifetime)",
       r"server lifetime over", r"server_lifetime", setting="server_lifetime", recycling=True),
    _r("server_idle_timeout", "server", None, _NOTHING,
       r"server idle timeout", setting="server_idle_timeout", recycling=True),
    _r("obsolete_connection", "server", None, _NOTHING + " (closed after RECONNECT or a config change)",
       r"obsolete connection", r"close_needed", r"database configuration changed", r"connect string changed",
       recycling=True),
    _r("evicted", "server", None,
       _NOTHING + " (closed so another pool may connect under max_db/user_connections)", r"evicted",
       recycling=True),
    _r("pool_shrunk", "server", None, _NOTHING + " (the pool is larger than its configured size)",
       r"too many servers in the pool", recycling=True),
    _r("server_dirty", "server", None,
       _NOTHING + " (an idle server connection left in an unknown state is replaced)",
       r"(?:SV_IDLE |SV_USED |idle )?server got dirty", r"unclean server", recycling=True),
    _r("replication_ended", "server", None, "nothing: its replication connection ended",
       r"replication client (?:disconnected|was closed)", benign=True),
    # -- the operator ---------------------------------------------------------------------------------
    _r("admin_action", "either", "server",
       "its connection is closed by an operator action (KILL, PAUSE, database removed or disabled, "
       "shutdown)",
       r"admin forced disconnect", r"database removed", r"peer removed", r"pause mode",
       r"pooler is shutting down", r"close unsafe file descriptors on suspend",
       r"database \".*\" is disabled", r"authentication database \".*\" is disabled",
       r"database does not allow connections: .*"),
    # -- the client's login is refused by PgBouncer's own configuration ------------------------------
    _r("client_auth_failed", "client", "pool_config",
       _REFUSED + " (authentication at PgBouncer: auth_file, auth_type, hba)",
       r"password authentication failed", r"SASL authentication failed", r"\"trust\" authentication failed",
       r"PAM authentication failed", r"LDAP authentication failed", r"certificate authentication failed",
       r"login rejected", r"unix socket login rejected", r"not allowed", r"no such user(?:: .*)?",
       r"no authentication method is found", r"empty password returned by client", r"password too long",
       r"username too long", r"no username supplied",
       r"client selected an invalid SASL authentication mechanism", r"auth_ldap_options is null",
       r"ldap is not supported by this build", r"SSL required", r"TLS connection required",
       r"TLS client certificate required", r"TLS certificate name mismatch"),
    _r("no_such_database", "client", "pool_config", _REFUSED + ": the database is not in [databases]",
       r"no such database: .*"),
    _r("unsupported_startup_parameter", "client", "pool_config",
       _REFUSED + ": a startup parameter PgBouncer does not pass on (ignore_startup_parameters)",
       r"unsupported startup parameter(?: in options)?: .*", r"unsupported options startup parameter: .*"),
    # -- broken clients and PgBouncer itself -----------------------------------------------------------
    _r("client_protocol_error", "client", "network",
       "its connection is dropped for a malformed or unexpected message",
       r"bad packet", r"bad pkt", r"bad packet header: '.*'", r"incomplete pkt", r"incomplete query",
       r"unknown pkt", r"client re-sent startup pkt", r"client password pkt before startup packet",
       r"client sent partial pkt in startup phase", r"old V2 protocol not supported", r"PQexec disallowed",
       r"SSL req inside SSL", r"failed to (?:ack|nak|accept) SSL", r"failed to nak GSS enc",
       r"received unencrypted data after (?:SSL|GSSAPI encryption) request", r"failed to parse packet",
       r"broken (?:Bind|Close|Describe|Parse) packet",
       r"invalid startup packet layout: expected terminator as last byte",
       r"unable to send protocol negotiation packet", r"failed to send auth req",
       r"failed to (?:send|prepare) welcome message", r"dead admin", r"close req", r"failure"),
    _r("pooler_internal", "either", "server",
       "its connection is dropped because PgBouncer ran out of memory or hit an internal error",
       r"out of memory", r"no memory for (?:authentication )?pool", r"bouncer resources exhaustion",
       r"bouncer config error", r"pause failed", r"BUG: unknown packet callback flag"),
)  # fmt: skip
UNKNOWN_REASON = Reason(
    "unknown", "either", None, "not known: a reason this playbook has not mapped (newer PgBouncer?)"
)
REASON_BY_KEY: Final[dict[str, Reason]] = {r.key: r for r in (*REASONS, UNKNOWN_REASON)}
_COMPILED: Final[tuple[tuple[re.Pattern[str], Reason], ...]] = tuple(
    (re.compile(rf"(?:{pattern})\Z", re.DOTALL), reason) for reason in REASONS for pattern in reason.patterns
)


def classify_reason(text: str) -> Reason:
    """The Reason of a close-reason text as PgBouncer printed it (UNKNOWN_REASON when none fits)."""
    text = text.strip()
    for pattern, reason in _COMPILED:
        if pattern.match(text):
            return reason
    return UNKNOWN_REASON


def format_matches(fmt: str) -> str:
    """A sample text of a printf format from the source ("no such database: %s" -> "…: x")."""
    return re.sub(r"%(?:h?u|d|s|lu|llu|hu)", lambda m: "7" if m.group(0) != "%s" else "x", fmt)


# -- other log lines that matter -------------------------------------------------------------------


@dataclass(frozen=True)
class LineEvent:
    """A log line that is not a close: a key, its category (None: context only) and a regex on the text."""

    key: EventKey
    category: Category | None
    pattern: re.Pattern[str]
    meaning: str


def _e(key: EventKey, category: Category | None, pattern: str, meaning: str) -> LineEvent:
    return LineEvent(key, category, re.compile(pattern), meaning)


EVENTS: Final[tuple[LineEvent, ...]] = (
    _e("reserve_pool_used", "pool_config", r"taking connection from reserve_pool",
       "a client waited reserve_pool_timeout: the pool is full"),
    _e("pooler_restart", "server", r"got SIG(?:TERM|INT|QUIT)|SHUTDOWN(?: WAIT_FOR_\w+)? command issued",
       "PgBouncer is shutting down: every connection through it ends"),
    _e("pooler_up", None, r"process up: PgBouncer", "PgBouncer started"),
    _e("reload", None, r"got SIGHUP, re-reading config|RELOAD command issued", "configuration reloaded"),
    _e("pause", "server", r"(?:PAUSE|SUSPEND|KILL|DISABLE)(?: '.*')? command issued|got SIGUSR1",
       "an operator paused, suspended, killed or disabled pools"),
    _e("resume", None, r"RESUME(?: '.*')? command issued|got SIGUSR2", "an operator resumed pools"),
    _e("auth_config", "pool_config",
       r"invalid SCRAM secret|SCRAM authentication failed|invalid SCRAM response|auth_type=any requires"
       r"|authentication database .* is not configured|cannot use the reserved",
       "authentication at PgBouncer is misconfigured"),
    _e("tls_error", "network", r"TLS (?:handshake|accept|connect) error", "a TLS handshake failed"),
    _e("connect_error", "server", r"sbuf_connect failed|connect\(\) failed|getaddrinfo",
       "PgBouncer could not open a connection to the server"),
    _e("fd_limit", None, r"kernel file descriptor limit", "file descriptor limit at start"),
    _e("unsupported_startup_parameter", "pool_config", r"unsupported startup parameter",
       "a client sent a startup parameter PgBouncer does not pass on"),
)  # fmt: skip


def classify_event(text: str) -> LineEvent | None:
    """The first EVENTS entry whose pattern occurs in a log message, None when none does."""
    for event in EVENTS:
        if event.pattern.search(text):
            return event
    return None


# -- where each text comes from ---------------------------------------------------------------------


@dataclass(frozen=True)
class Printed:
    """One reason format as PgBouncer's source prints it (catalogs/pgbouncer_reasons.json).

    `first`/`last`: the first and last release that prints it ("HEAD": master still does; "1.9.0":
    1.9.0 or earlier, the oldest release scanned); `files`: the src/*.c files that print it.
    """

    format: str
    side: Side
    first: str
    last: str
    files: tuple[str, ...]


def version_key(version: str) -> tuple[int, ...]:
    """A release name as a sortable tuple ("HEAD" after every release)."""
    if version == "HEAD":
        return (10**6,)
    return tuple(int(part) for part in version.split("."))


@cache
def catalog() -> dict[str, object]:
    """The extracted catalog: source, commit, releases scanned, and every reason format printed."""
    data: dict[str, object] = json.loads(CATALOG.read_text(encoding="utf-8"))
    return data


@cache
def printed_formats() -> tuple[Printed, ...]:
    """Every reason format PgBouncer's source prints, 1.9.0 to master, with the releases that print it."""
    entries = catalog()["reasons"]
    assert isinstance(entries, list)
    return tuple(Printed(e["format"], e["side"], e["first"], e["last"], tuple(e["files"])) for e in entries)


def printed(reason: Reason) -> tuple[Printed, ...]:
    """The formats of the source that a reason family covers (a sample of each classifies to it)."""
    return tuple(p for p in printed_formats() if classify_reason(format_matches(p.format)) is reason)


# -- families the diagnosis reads together --------------------------------------------------------------

# PgBouncer's own shutdown (1.23+: SIGINT or SHUTDOWN WAIT_FOR_SERVERS; janitor.c and objects.c
# pause_client) closes clients with exactly this text ("server" is PgBouncer, the server to its
# clients). It is filed under server_shutting_down with PostgreSQL's shutdown messages and told
# apart by its text: an operator action, not the server.
POOLER_SHUTDOWN_TEXT: Final = "server shutting down"
# Client logins refused by a client-count limit (max_client_conn; per database/user from 1.24).
CLIENT_LIMITS: Final[tuple[ReasonKey, ...]] = (
    "max_client_conn",
    "max_db_client_connections",
    "max_user_client_connections",
)
# What transaction and statement pooling do to session features.
POOLING_MODE_BREAKAGE: Final[tuple[ReasonKey, ...]] = (
    "prepared_statement_in_use",
    "prepared_statement_missing",
    "statement_mode_transaction",
)
# Server connections that PostgreSQL, or the path to it, ended, refused or broke.
SERVER_TROUBLE: Final[tuple[ReasonKey, ...]] = (
    "server_conn_crashed",
    "server_connection_closed",
    "server_shutting_down",
    "server_connect_failed",
    "server_connect_timeout",
    "server_dns_failed",
    "server_login_retry",
    "client_login_timeout_server_down",
    "server_check_failed",
    "server_reset_failed",
    "server_protocol_error",
)
# PgBouncer cannot log in to PostgreSQL.
SERVER_LOGIN_FAILURES: Final[tuple[ReasonKey, ...]] = (
    "server_login_failed",
    "auth_query_failed",
    "exec_on_connect_failed",
)
# An operator (or PgBouncer's own shutdown) closed connections: close reasons, and log events.
OPERATOR_CLOSES: Final[tuple[ReasonKey, ...]] = ("admin_action", "suspend_timeout", "server_shutting_down")
OPERATOR_EVENTS: Final[tuple[EventKey, ...]] = ("pooler_restart", "pause")
# Clients that went away without a Terminate message.
CLIENT_VANISHED: Final[tuple[ReasonKey, ...]] = ("client_unexpected_eof", "client_gone_mid_query")

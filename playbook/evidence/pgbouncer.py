"""PgBouncer's evidence: the frames of its admin console and its log, and why it closes connections.

PgBouncer keeps no per-reason counters: every closed connection is one log line,
`C-0x…: db/user@addr:port closing because: REASON (age=Ns)` (`S-0x…` for server connections),
built in objects.c from about 200 disconnect_client / disconnect_server calls across src/. This
module maps every REASON those calls can print, in every release from 1.9 to 1.25 and master, to
a key: which side it closes, whether it is PgBouncer's normal recycling of server connections
(never an incident by itself), what the application feels, and one of the five categories.
tests/data/pgbouncer/reasons.json lists the reasons extracted from the source, with the releases
that print them, and a test maps every one.

Names in the run's evidence (`Evidence.frame(name)`, `Evidence.snapshots[name]`):

frames, one per SHOW command sampled every tick, with `tick_ts` (UTC) the tick's time:
- `pgbouncer_pools`: one row per (database, user) pool per tick (SHOW POOLS)
- `pgbouncer_clients`: one row per client connection per tick (SHOW CLIENTS)
- `pgbouncer_servers`: one row per server connection per tick (SHOW SERVERS)
- `pgbouncer_stats`: one row per database per tick, counters since PgBouncer started (SHOW STATS)
- `pgbouncer_databases`: one row per configured database per tick (SHOW DATABASES)
- `pgbouncer_lists`: one row per internal list per tick (SHOW LISTS)
- `pgbouncer_ticks`: one row per tick: whether the console answered, and how fast
- `pgbouncer_log_events`: one row per log line that matters (collect/pgbouncer_log.py)
snapshots:
- `pgbouncer_config`: SHOW CONFIG and SHOW VERSION, read once: {"version", "settings": {key: value},
  "defaults": {key: default}}
- `pgbouncer_console`: how sampling went: {"dsn" (redacted), "interval_s", "ticks", "ticks_ok",
  "gaps": [...], "unsupported": [commands this version refused], "notes": [...]}
- `pgbouncer_log_summary`: what the log reader read: files, lines, events per kind, warnings.

Columns differ between versions: the collector keeps every column the console returned, casts
the ones listed here to their dtype, and adds the listed ones that are missing as empty, so
readers may rely on each listed column existing (and on NaN/None where a version lacks it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from playbook.evidence import frames
from playbook.evidence.vocab import Category

# -- frame schemas ---------------------------------------------------------------------------------


def FrameSchema(  # noqa: N802 (reads as the schema it builds)
    name: str, meaning: str, row: str, columns: dict[str, tuple[str, str]]
) -> frames.FrameSchema:
    """A pooler frame in the evidence contract (playbook.evidence.frames), registered there:
    columns given as name -> (pandas dtype, meaning)."""
    return frames.register(
        frames.FrameSchema(
            name,
            row,
            tuple(frames.Column(c, _kind(dtype), text, dtype) for c, (dtype, text) in columns.items()),
            meaning,
        )
    )


def _kind(dtype: str) -> frames.Kind:
    if dtype.startswith("datetime64"):
        return "time"
    kinds: dict[str, frames.Kind] = {"Int64": "int", "int64": "int", "float64": "float", "bool": "bool"}
    return kinds.get(dtype, "text")


TS = "datetime64[ns, UTC]"
_TICK = {"tick_ts": (TS, "when the playbook sampled (UTC, this machine's clock)")}
_CONN = {
    **_TICK,
    "type": ("string", "C for a client, S for a server connection"),
    "user": ("string", "the role the connection logged in as"),
    "database": ("string", "PgBouncer's database name (not necessarily the server's)"),
    "state": ("string", "active, waiting, idle, used, tested, new, active_cancel_req, …"),
    "addr": ("string", "the peer's address (the application for clients, PostgreSQL for servers)"),
    "port": ("Int64", "the peer's port"),
    "local_addr": ("string", "PgBouncer's address on this connection"),
    "local_port": ("Int64", "PgBouncer's port on this connection"),
    "connect_time": ("string", "when the connection was made, as PgBouncer prints it (local time)"),
    "request_time": ("string", "when the connection last did something, as PgBouncer prints it"),
    "connect_ts": (TS, "connect_time in UTC (NaT when its zone could not be read)"),
    "request_ts": (TS, "request_time in UTC (NaT when its zone could not be read)"),
    "wait_s": ("float64", "seconds this client has been waiting for a server (wait + wait_us)"),
    "close_needed": ("Int64", "1 when PgBouncer will close it at the next chance (after RECONNECT/reload)"),
    "ptr": ("string", "the connection's address in PgBouncer, as in the log's C-0x…/S-0x…"),
    "link": ("string", "ptr of the connection it is paired with (client <-> server)"),
    "remote_pid": ("Int64", "the backend's pid (servers); the client's pid over unix sockets"),
    "tls": ("string", "TLS version and cipher, empty without TLS"),
    "application_name": ("string", "the client's application_name (1.18+; empty before)"),
    "prepared_statements": ("Int64", "prepared statements PgBouncer tracks on it (1.21+)"),
}
SCHEMAS: Final[dict[str, frames.FrameSchema]] = {
    schema.name: schema
    for schema in [
        FrameSchema(
            "pgbouncer_pools",
            "client and server connections of each pool, and how long the oldest client has waited",
            "one (database, user) pool at one tick",
            {
                **_TICK,
                "database": ("string", "PgBouncer's database name"),
                "user": ("string", "the pool's role"),
                "cl_active": ("Int64", "clients linked to a server or idle with nothing to do"),
                "cl_waiting": ("Int64", "clients that sent a query and wait for a server connection"),
                "cl_active_cancel_req": ("Int64", "cancel requests forwarded (1.18+)"),
                "cl_waiting_cancel_req": ("Int64", "cancel requests not yet forwarded (1.18+)"),
                "sv_active": ("Int64", "server connections linked to a client"),
                "sv_idle": ("Int64", "server connections ready for a client"),
                "sv_used": ("Int64", "server connections idle longer than server_check_delay (to check)"),
                "sv_tested": ("Int64", "server connections running server_reset_query/check query"),
                "sv_login": ("Int64", "server connections logging in"),
                "maxwait_s": ("float64", "seconds the oldest waiting client has waited (maxwait+maxwait_us)"),
                "pool_mode": ("string", "session, transaction or statement"),
            },
        ),
        FrameSchema(
            "pgbouncer_clients",
            "every client connection (the application's side of PgBouncer)",
            "one client connection at one tick",
            _CONN,
        ),
        FrameSchema(
            "pgbouncer_servers",
            "every server connection (PgBouncer's connections to PostgreSQL)",
            "one server connection at one tick",
            _CONN,
        ),
        FrameSchema(
            "pgbouncer_stats",
            "traffic and waiting per database, cumulative since PgBouncer started",
            "one database at one tick",
            {
                **_TICK,
                "database": ("string", "PgBouncer's database name"),
                "total_xact_count": ("float64", "transactions pooled"),
                "total_query_count": ("float64", "queries pooled"),
                "total_received": ("float64", "bytes received from clients"),
                "total_sent": ("float64", "bytes sent to clients"),
                "total_xact_time": ("float64", "microseconds in transactions"),
                "total_query_time": ("float64", "microseconds in queries"),
                "total_wait_time": ("float64", "microseconds clients waited for a server"),
                "avg_wait_time": ("float64", "average wait per client in the last stats_period (us)"),
            },
        ),
        FrameSchema(
            "pgbouncer_databases",
            "each configured database: its pool size and server connection limits",
            "one database at one tick",
            {
                **_TICK,
                "name": ("string", "PgBouncer's database name"),
                "host": ("string", "the server it points at"),
                "port": ("Int64", "the server's port"),
                "database": ("string", "the server's database name"),
                "pool_size": ("Int64", "server connections per (database, user) pool"),
                "min_pool_size": ("Int64", "server connections kept open even when idle"),
                "reserve_pool": ("Int64", "extra connections after reserve_pool_timeout"),
                "pool_mode": ("string", "the database's own pool_mode (empty: the global one)"),
                "max_connections": ("Int64", "max_db_connections for it (0: unlimited)"),
                "current_connections": ("Int64", "server connections it has now"),
                "paused": ("Int64", "1 when PAUSEd"),
                "disabled": ("Int64", "1 when DISABLEd (new clients refused)"),
            },
        ),
        FrameSchema(
            "pgbouncer_lists",
            "PgBouncer's internal lists (clients, servers, pools, free slots)",
            "one list at one tick",
            {**_TICK, "list": ("string", "the list's name"), "items": ("Int64", "items in it")},
        ),
        FrameSchema(
            "pgbouncer_ticks",
            "one row per sampling tick: whether the console answered",
            "one tick",
            {
                "ts": (TS, "when the tick started (UTC)"),
                "ok": ("bool", "the console answered every SHOW of the tick"),
                "query_ms": ("float64", "milliseconds the tick's SHOW commands took"),
                "error": ("string", "why the tick failed (None when ok)"),
            },
        ),
        FrameSchema(
            "pgbouncer_log_events",
            "PgBouncer's log lines that matter: closed connections with their reason, pooler errors sent "
            "to clients, failed server logins, logins, life-cycle and reserve-pool warnings",
            "one log line",
            {
                "ts": (TS, "when PgBouncer logged it (UTC)"),
                "level": ("string", "LOG, WARNING, ERROR, FATAL"),
                "kind": ("string", "close, pooler_error, login, server_login, server_login_failed, event"),
                "side": ("string", "client (C-), server (S-), or None for lines about no connection"),
                "database": ("string", "PgBouncer's database name (None when not known)"),
                "user": ("string", "the role (None when not known)"),
                "addr": ("string", "the peer's address:port"),
                "reason_key": ("string", "the vocabulary key of the reason or event (REASONS / EVENTS)"),
                "reason": ("string", "the text PgBouncer printed"),
                "category": ("string", "the key's category (None for normal work)"),
                "recycling": ("bool", "normal recycling of an unused server connection: never an incident"),
                "age_s": ("float64", "the connection's age when it closed (age=…s)"),
                "pid": ("Int64", "PgBouncer's process id"),
                "file": ("string", "the log file"),
                "line_no": ("Int64", "line number in that file"),
            },
        ),
    ]
}
CONSOLE_COMMANDS: Final[dict[str, str]] = {
    "pgbouncer_pools": "SHOW POOLS",
    "pgbouncer_clients": "SHOW CLIENTS",
    "pgbouncer_servers": "SHOW SERVERS",
    "pgbouncer_stats": "SHOW STATS",
    "pgbouncer_databases": "SHOW DATABASES",
    "pgbouncer_lists": "SHOW LISTS",
}
CONFIG_SNAPSHOT: Final = "pgbouncer_config"
CONSOLE_SNAPSHOT: Final = "pgbouncer_console"
LOG_SUMMARY_SNAPSHOT: Final = "pgbouncer_log_summary"
LOG_EVENTS_FRAME: Final = "pgbouncer_log_events"
TICKS_FRAME: Final = "pgbouncer_ticks"

# Settings that end or delay connections, and their defaults (seconds, or counts), for readers that
# have the log but no console. pgbouncer.ini takes seconds for these (fractions allowed).
TIMEOUT_SETTINGS: Final[tuple[str, ...]] = (
    "client_idle_timeout",
    "idle_transaction_timeout",
    "query_timeout",
    "query_wait_timeout",
    "transaction_timeout",
    "client_login_timeout",
    "server_idle_timeout",
    "server_lifetime",
    "server_connect_timeout",
    "server_login_retry",
    "cancel_wait_timeout",
)
DEFAULTS: Final[dict[str, float]] = {
    "client_idle_timeout": 0,
    "idle_transaction_timeout": 0,
    "query_timeout": 0,
    "query_wait_timeout": 120,
    "transaction_timeout": 0,
    "client_login_timeout": 60,
    "server_idle_timeout": 600,
    "server_lifetime": 3600,
    "server_connect_timeout": 15,
    "server_login_retry": 15,
    "cancel_wait_timeout": 10,
    "default_pool_size": 20,
    "max_client_conn": 100,
    "max_db_connections": 0,
    "max_user_connections": 0,
    "reserve_pool_size": 0,
    "min_pool_size": 0,
}


# -- the close-reason vocabulary -------------------------------------------------------------------

Side = str  # "client", "server" or "either"


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

    key: str
    side: Side
    category: Category | None
    app_feels: str
    setting: str | None = None
    recycling: bool = False
    benign: bool = False
    patterns: tuple[str, ...] = ()


def _r(
    key: str,
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

    key: str
    category: Category | None
    pattern: re.Pattern[str]
    meaning: str


def _e(key: str, category: Category | None, pattern: str, meaning: str) -> LineEvent:
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
    for event in EVENTS:
        if event.pattern.search(text):
            return event
    return None

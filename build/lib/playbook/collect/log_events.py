"""The catalog of PostgreSQL server-log lines that explain why sessions ended.

Every entry maps a server wording (English `lc_messages`, checked against the PostgreSQL
sources of 9.6 to 18) and, where the server attaches one, its SQLSTATE to a stable event id
and one of the five root-cause categories. Informational lines (start-up, reloads, the
session lines written by `log_connections` / `log_disconnections`) have the category "".

Classification goes by wording first, because one SQLSTATE often covers several causes
(53300 is max_connections, the reserved slots and both per-role and per-database limits).
When the line carries a SQLSTATE (csvlog and jsonlog always, stderr with %e in the prefix)
it must agree with the wording; a line whose wording is unknown, as with translated
messages, falls back to the SQLSTATE alone where that is unambiguous enough.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CATEGORIES = ("leak", "timeout", "network", "pool_config", "server")


@dataclass(frozen=True)
class EventKind:
    """One kind of log line: a stable id, its category and what it means to a human."""

    id: str
    category: str  # one of CATEGORIES, or "" for informational lines
    meaning: str
    pattern: str  # regex matched at the start of the primary message; non-capturing groups only
    sqlstates: tuple[str, ...] = ()  # the codes the server attaches to this wording
    levels: tuple[str, ...] = ()  # restrict to these severities (empty: any)


# Session lines, parsed for the sessions frame (log_connections / log_disconnections).
SESSION_EVENTS: tuple[EventKind, ...] = (
    EventKind(
        "connection_received",
        "",
        "A client opened a TCP or socket connection (log_connections).",
        r"connection received: ",
    ),
    EventKind(
        "connection_authorized",
        "",
        "A client logged in: user, database and application are known from here on.",
        r"(?:replication )?connection authorized: ",
    ),
    EventKind(
        "disconnection",
        "",
        "A session ended; the line carries its duration (log_disconnections).",
        r"disconnection: session time: ",
    ),
)

EVENTS: tuple[EventKind, ...] = (
    # -- leak --------------------------------------------------------------------------------
    EventKind(
        "unexpected_eof_in_transaction",
        "leak",
        "The client went away with a transaction still open: a connection held across work "
        "and never returned, or a process killed mid-transaction.",
        r"unexpected EOF on client connection with an open transaction",
        ("08006", "08P01"),
    ),
    # -- timeout -----------------------------------------------------------------------------
    EventKind(
        "idle_in_transaction_timeout",
        "timeout",
        "idle_in_transaction_session_timeout ended a session left idle inside a transaction "
        "(the application kept a transaction open between uses).",
        r"terminating connection due to idle-in-transaction timeout",
        ("25P03",),
    ),
    EventKind(
        "idle_session_timeout",
        "timeout",
        "idle_session_timeout ended an idle pooled session while the pool still held it.",
        r"terminating connection due to idle-session timeout",
        ("57P05",),
    ),
    EventKind(
        "transaction_timeout",
        "timeout",
        "transaction_timeout (17+) ended a session whose transaction ran too long.",
        r"terminating connection due to transaction timeout",
        ("25P04",),
    ),
    EventKind(
        "statement_timeout",
        "timeout",
        "statement_timeout canceled a statement; the session survives.",
        r"canceling statement due to statement timeout",
        ("57014",),
    ),
    EventKind(
        "lock_timeout",
        "timeout",
        "lock_timeout canceled a statement waiting for a lock; the session survives.",
        r"canceling statement due to lock timeout",
        ("55P03",),
    ),
    EventKind(
        "user_cancel",
        "timeout",
        "A client canceled its statement (often a client-side query timeout).",
        r"canceling statement due to user request",
        ("57014",),
    ),
    EventKind(
        "authentication_timeout",
        "timeout",
        "A client did not finish logging in within authentication_timeout.",
        r"canceling authentication due to timeout",
        ("57014",),
    ),
    # -- network -----------------------------------------------------------------------------
    EventKind(
        "connection_reset",
        "network",
        "The client's side reset the TCP connection (RST): a proxy, NAT or firewall cut it, or "
        "the client process died.",
        r"could not receive data from client: Connection reset by peer",
        ("08006",),
    ),
    EventKind(
        "client_recv_timeout",
        "network",
        "The kernel gave up on a silent peer (TCP keepalives or tcp_user_timeout fired): the "
        "path dropped the connection without a reset.",
        r"could not receive data from client: Connection timed out",
        ("08006",),
    ),
    EventKind(
        "client_recv_error",
        "network",
        "Reading from the client failed for another socket error.",
        r"could not receive data from client: ",
        ("08006",),
    ),
    EventKind(
        "broken_pipe",
        "network",
        "The server could not send to a client that was already gone (Broken pipe).",
        r"could not send data to client: Broken pipe",
        ("08006",),
    ),
    EventKind(
        "client_send_error",
        "network",
        "Sending to the client failed for another socket error (reset, timeout).",
        r"could not send data to client: ",
        ("08006",),
    ),
    EventKind(
        "connection_to_client_lost",
        "network",
        "The server ended a session because its client connection was found dead.",
        r"connection to client lost",
        ("08006",),
    ),
    EventKind(
        "unexpected_eof",
        "network",
        "The client closed the socket without a Terminate message, outside a transaction "
        "(only logged at DEBUG1 by the server).",
        r"unexpected EOF on client connection$",
        ("08003", "08P01"),
    ),
    EventKind(
        "incomplete_startup_packet",
        "network",
        "A TCP connection closed before sending a startup packet: health checks, port scanners "
        "or half-open probes from a load balancer.",
        r"incomplete startup packet",
        ("08P01",),
    ),
    EventKind(
        "invalid_startup_packet",
        "network",
        "Something that is not a PostgreSQL client connected (bad startup packet length).",
        r"invalid length of startup packet",
        ("08P01",),
    ),
    EventKind(
        "incomplete_message",
        "network",
        "The connection broke in the middle of a protocol message.",
        r"(?:incomplete message from client|unexpected EOF within message length word)",
        ("08P01",),
    ),
    EventKind(
        "protocol_sync_lost",
        "network",
        "The server lost protocol sync with the client and ended the session.",
        r"terminating connection because protocol synchronization was lost",
        ("08P01",),
    ),
    EventKind(
        "ssl_error",
        "network",
        "TLS failed on an established or new connection.",
        r"(?:SSL error: |could not accept SSL connection: )",
        ("08P01",),
    ),
    EventKind(
        "walsender_timeout",
        "network",
        "A replication connection went silent longer than wal_sender_timeout.",
        r"terminating walsender process due to replication timeout",
    ),
    # -- pool_config -------------------------------------------------------------------------
    EventKind(
        "too_many_clients",
        "pool_config",
        "max_connections is exhausted: the pools together want more sessions than the server has.",
        r"sorry, too many clients already",
        ("53300",),
    ),
    EventKind(
        "reserved_slots",
        "pool_config",
        "Only reserved slots were left (superuser_reserved_connections / reserved_connections): "
        "the usable limit is max_connections minus those.",
        r"remaining connection slots are reserved for ",
        ("53300",),
    ),
    EventKind(
        "role_conn_limit",
        "pool_config",
        "The role's CONNECTION LIMIT (rolconnlimit) refused a login.",
        r'too many connections for role "',
        ("53300",),
    ),
    EventKind(
        "database_conn_limit",
        "pool_config",
        "The database's CONNECTION LIMIT (datconnlimit) refused a login.",
        r'too many connections for database "',
        ("53300",),
    ),
    EventKind(
        "database_not_accepting",
        "pool_config",
        "The database does not allow connections (datallowconn is false).",
        r'database "[^"]*" is not currently accepting connections',
        ("55000",),
    ),
    EventKind(
        "auth_failed",
        "pool_config",
        "A login failed authentication: the pool's credentials are wrong or expired.",
        r'(?:\w+|"trust") authentication failed for user "|authentication failed for user "',
        ("28P01", "28000"),
    ),
    EventKind(
        "no_hba_entry",
        "pool_config",
        "pg_hba.conf has no line for this host, user and database.",
        r"(?:no pg_hba\.conf entry for |pg_hba\.conf rejects )",
        ("28000",),
    ),
    EventKind(
        "unknown_database",
        "pool_config",
        "A login asked for a database that does not exist.",
        r'database "[^"]*" does not exist',
        ("3D000",),
        ("FATAL",),
    ),
    EventKind(
        "unknown_role",
        "pool_config",
        "A login used a role that does not exist.",
        r'role "[^"]*" does not exist',
        ("28000",),
        ("FATAL",),
    ),
    EventKind(
        "role_cannot_login",
        "pool_config",
        "A login used a role without the LOGIN attribute.",
        r'role "[^"]*" is not permitted to log in',
        ("28000",),
    ),
    # -- server ------------------------------------------------------------------------------
    EventKind(
        "admin_terminate",
        "server",
        "pg_terminate_backend() or a fast shutdown ended the session (a reaper job, a DBA, a failover).",
        r"terminating connection due to administrator command",
        ("57P01",),
    ),
    EventKind(
        "crash_terminate_sibling",
        "server",
        "Another server process crashed and the postmaster ended every session "
        "(sent to clients only since 14).",
        r"terminating connection because of crash of another server process",
        ("57P02",),
    ),
    EventKind(
        "immediate_shutdown_terminate",
        "server",
        "An immediate shutdown ended the session (sent to clients only since 14).",
        r"terminating connection (?:due to immediate shutdown command|because of unexpected SIGQUIT signal)",
        ("57P01",),
    ),
    EventKind(
        "postmaster_death",
        "server",
        "The postmaster died and the session ended with it.",
        r"terminating connection due to unexpected postmaster exit",
        ("57P01",),
    ),
    EventKind(
        "recovery_conflict",
        "server",
        "A hot standby canceled a statement or ended a session to replay WAL.",
        r"(?:terminating connection|canceling statement) due to conflict with recovery",
        ("40001", "57P04", "40P01"),
    ),
    EventKind(
        "backend_crash",
        "server",
        "A server process died abnormally; the postmaster then ends every session and reinitializes.",
        r"[^\n(]* \(PID \d+\) (?:was terminated by (?:signal|exception)"
        r"|exited with (?:exit code (?:[2-9]|\d\d+)|unrecognized status))",
    ),
    EventKind(
        "terminating_other_processes",
        "server",
        "After a crash the postmaster is ending every other server process.",
        r"terminating any other active server processes",
    ),
    EventKind(
        "crash_reinitializing",
        "server",
        "All server processes were ended after a crash; shared memory is being reinitialized.",
        r"all server processes terminated; reinitializing",
    ),
    EventKind(
        "crash_recovery",
        "server",
        "The server did not shut down cleanly and is replaying WAL (after a crash or kill -9).",
        r"database system was (?:not properly shut down; automatic recovery in progress|interrupted)",
    ),
    EventKind(
        "no_restart_after_crash",
        "server",
        "restart_after_crash is off: the server stayed down after a crash.",
        r'shutting down because "?restart_after_crash"? is off',
    ),
    EventKind(
        "shutdown_requested",
        "server",
        "The server was asked to stop (smart, fast or immediate): a restart, an upgrade or a failover.",
        r"received (?:smart|fast|immediate) shutdown request",
    ),
    EventKind(
        "shut_down",
        "server",
        "The server finished shutting down.",
        r"database system is shut down",
    ),
    EventKind(
        "starting_up",
        "server",
        "A login arrived while the server was starting: it refused the session.",
        r"the database system is starting up",
        ("57P03",),
    ),
    EventKind(
        "shutting_down",
        "server",
        "A login arrived while the server was shutting down: it refused the session.",
        r"the database system is shutting down",
        ("57P03",),
    ),
    EventKind(
        "in_recovery",
        "server",
        "A login arrived during crash recovery: the server refused the session.",
        r"the database system is (?:in recovery mode|not yet accepting connections"
        r"|not accepting connections)",
        ("57P03",),
    ),
    EventKind(
        "fork_failed",
        "server",
        "The postmaster could not start a process for a new connection (out of memory or process limit).",
        r"(?:could not fork new process for connection|could not accept new connection)",
    ),
    EventKind(
        "out_of_memory",
        "server",
        "A server process ran out of memory.",
        r"out of memory",
        ("53200",),
        ("FATAL", "ERROR", "PANIC"),
    ),
    EventKind(
        "panic",
        "server",
        "A PANIC: the whole server restarts.",
        r"",
        (),
        ("PANIC",),
    ),
    EventKind(
        "ready_to_accept",
        "",
        "The server accepts connections again (after a start, a restart or crash recovery).",
        r"database system is ready to accept (?:read-only )?connections",
    ),
    EventKind(
        "server_start",
        "",
        "The postmaster started.",
        r"starting PostgreSQL ",
    ),
    EventKind(
        "config_reload",
        "",
        "The configuration was reloaded (SIGHUP); settings that end sessions may have changed.",
        r"received SIGHUP, reloading configuration files",
    ),
    EventKind(
        "parameter_changed",
        "",
        "A setting changed on reload.",
        r'parameter "[^"]*" changed to ',
    ),
)

# When the wording is unknown (translated lc_messages) the SQLSTATE alone still says a lot.
SQLSTATE_FALLBACK: dict[str, EventKind] = {}
_FALLBACK_IDS = {
    "57P01": "admin_terminate",
    "57P02": "crash_terminate_sibling",
    "57P05": "idle_session_timeout",
    "25P03": "idle_in_transaction_timeout",
    "25P04": "transaction_timeout",
    "28P01": "auth_failed",
}
# Codes shared by several causes get a generic id of their own.
GENERIC_EVENTS: tuple[EventKind, ...] = (
    EventKind(
        "connection_limit",
        "pool_config",
        "A connection limit refused a login (53300; the wording was not recognised).",
        r"",
        ("53300",),
    ),
    EventKind(
        "cannot_connect_now",
        "server",
        "The server refused a login while starting, stopping or recovering (57P03).",
        r"",
        ("57P03",),
    ),
    EventKind(
        "connection_failure",
        "network",
        "The client connection failed (08006; the wording was not recognised).",
        r"",
        ("08006",),
    ),
    EventKind(
        "query_canceled",
        "timeout",
        "A statement was canceled by a timeout or a cancel request (57014).",
        r"",
        ("57014",),
    ),
)

CATALOG: dict[str, EventKind] = {kind.id: kind for kind in (*SESSION_EVENTS, *EVENTS, *GENERIC_EVENTS)}
for _code, _id in _FALLBACK_IDS.items():
    SQLSTATE_FALLBACK[_code] = CATALOG[_id]
for _kind in GENERIC_EVENTS:
    SQLSTATE_FALLBACK[_kind.sqlstates[0]] = _kind

# One alternation, each entry in a named group, tried at the start of a message: `lastgroup`
# names the entry that matched. Order matters: specific wordings before general ones.
_WORDING_KINDS = [kind for kind in EVENTS if kind.pattern]
_WORDING_RE = re.compile("|".join(f"(?P<e{i}>{kind.pattern})" for i, kind in enumerate(_WORDING_KINDS)))
_BY_GROUP = {f"e{i}": kind for i, kind in enumerate(_WORDING_KINDS)}
_BY_LEVEL_ONLY = {level: kind for kind in EVENTS if not kind.pattern for level in kind.levels}

# Only these severities can carry a session-ending event; LOG covers COMMERROR lines.
INTERESTING_LEVELS = frozenset({"LOG", "WARNING", "ERROR", "FATAL", "PANIC"})


def classify(message: str, level: str, sqlstate: str | None = None) -> EventKind | None:
    """The catalog entry for one log entry's primary message, or None if it explains nothing.

    `sqlstate` is the code from the line (None or "" when the format has none). A wording
    whose known codes disagree with the line's code is not trusted: a user's RAISE with the
    same text has P0001, not 57P01.
    """
    kind: EventKind | None = None
    match = _WORDING_RE.match(message)
    if match is not None and match.lastgroup is not None:
        kind = _BY_GROUP[match.lastgroup]
        wrong_level = bool(kind.levels) and level not in kind.levels
        wrong_code = bool(
            sqlstate and sqlstate != "00000" and kind.sqlstates and sqlstate not in kind.sqlstates
        )
        if wrong_level or wrong_code:
            kind = None
    if kind is None and level in _BY_LEVEL_ONLY:
        return _BY_LEVEL_ONLY[level]
    if kind is None and sqlstate and level in ("FATAL", "ERROR", "PANIC"):
        kind = SQLSTATE_FALLBACK.get(sqlstate)
    return kind


def session_kind(message: str) -> EventKind | None:
    """connection_received / connection_authorized / disconnection, or None."""
    if message.startswith("disconnection: session time: "):
        return CATALOG["disconnection"]
    if message.startswith("connection received: "):
        return CATALOG["connection_received"]
    if message.startswith(("connection authorized: ", "replication connection authorized: ")):
        return CATALOG["connection_authorized"]
    return None


_SESSION_TIME_RE = re.compile(r"disconnection: session time: (\d+):(\d+):(\d+(?:\.\d+)?)")


def session_seconds(message: str) -> float | None:
    """The session time of a disconnection line, in seconds ('1:02:03.456' -> 3723.456)."""
    match = _SESSION_TIME_RE.match(message)
    if match is None:
        return None
    return round(int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3)), 3)


def meaning(event_id: str) -> str:
    kind = CATALOG.get(event_id)
    return kind.meaning if kind else ""


def category(event_id: str) -> str:
    kind = CATALOG.get(event_id)
    return kind.category if kind else ""

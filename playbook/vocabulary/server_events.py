"""PostgreSQL's server-log events that explain why sessions ended: id, category, wording, SQLSTATE.

Each entry maps a server wording (English lc_messages) and, where the server attaches one, its
SQLSTATE to a stable event id and one of the five root-cause categories. Informational lines
(start-up, reloads, the session lines of log_connections / log_disconnections) have category "".
Sources: the ereport() calls of PostgreSQL 9.6-18 (src/backend/tcop/postgres.c, libpq/pqcomm.c,
libpq/be-secure.c, postmaster/postmaster.c, utils/init/postinit.c, storage/ipc/procarray.c,
libpq/auth.c, access/transam/xlog.c); the SQLSTATEs from src/backend/utils/errcodes.txt.

`TEMPLATES` names, per event, the exact msgids (PostgreSQL's English format strings) its
wording comes from: tools/build_catalogs.py takes their translations from PostgreSQL's own
message catalogs, and a translated line is rendered back through them into the English wording
the patterns below read (tests/test_vocabulary_server.py checks every template against its
pattern). `STRERRORS` are glibc's errno texts a %m expands to, translated by glibc's catalog.
"""

from __future__ import annotations

from dataclasses import dataclass


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

# The msgids each wording comes from (PostgreSQL 15-18; a msgid absent from a major's catalog is
# simply not translated there). %m is the errno text, translated by glibc (STRERRORS).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "connection_received": ("connection received: host=%s port=%s", "connection received: host=%s"),
    "connection_authorized": (
        "connection authorized: user=%s",
        "replication connection authorized: user=%s",
        # postinit.c appends these to the line above, each translated on its own
        " database=%s",
        " application_name=%s",
    ),
    "disconnection": ("disconnection: session time: %d:%02d:%02d.%03d user=%s database=%s host=%s%s%s",),
    "unexpected_eof_in_transaction": ("unexpected EOF on client connection with an open transaction",),
    "idle_in_transaction_timeout": ("terminating connection due to idle-in-transaction timeout",),
    "idle_session_timeout": ("terminating connection due to idle-session timeout",),
    "transaction_timeout": ("terminating connection due to transaction timeout",),
    "statement_timeout": ("canceling statement due to statement timeout",),
    "lock_timeout": ("canceling statement due to lock timeout",),
    "user_cancel": ("canceling statement due to user request",),
    "authentication_timeout": ("canceling authentication due to timeout",),
    "connection_reset": ("could not receive data from client: %m",),
    "client_recv_timeout": ("could not receive data from client: %m",),
    "client_recv_error": ("could not receive data from client: %m",),
    "broken_pipe": ("could not send data to client: %m",),
    "client_send_error": ("could not send data to client: %m",),
    "connection_to_client_lost": ("connection to client lost",),
    "unexpected_eof": ("unexpected EOF on client connection",),
    "incomplete_startup_packet": ("incomplete startup packet",),
    "invalid_startup_packet": ("invalid length of startup packet",),
    "incomplete_message": ("incomplete message from client", "unexpected EOF within message length word"),
    "protocol_sync_lost": ("terminating connection because protocol synchronization was lost",),
    "ssl_error": (
        "SSL error: %s",
        "could not accept SSL connection: %m",
        "could not accept SSL connection: %s",
    ),
    "walsender_timeout": ("terminating walsender process due to replication timeout",),
    "too_many_clients": ("sorry, too many clients already",),
    "reserved_slots": (
        "remaining connection slots are reserved for non-replication superuser connections",
        "remaining connection slots are reserved for roles with the %s attribute",
        'remaining connection slots are reserved for roles with privileges of the "%s" role',
    ),
    "role_conn_limit": ('too many connections for role "%s"',),
    "database_conn_limit": ('too many connections for database "%s"',),
    "database_not_accepting": ('database "%s" is not currently accepting connections',),
    "auth_failed": (
        'password authentication failed for user "%s"',
        '"trust" authentication failed for user "%s"',
        'Ident authentication failed for user "%s"',
        'Peer authentication failed for user "%s"',
        'PAM authentication failed for user "%s"',
        'LDAP authentication failed for user "%s"',
        'GSSAPI authentication failed for user "%s"',
        'SSPI authentication failed for user "%s"',
        'RADIUS authentication failed for user "%s"',
        'certificate authentication failed for user "%s"',
        'BSD authentication failed for user "%s"',
    ),
    "no_hba_entry": (
        'no pg_hba.conf entry for host "%s", user "%s", database "%s", %s',
        'no pg_hba.conf entry for replication connection from host "%s", user "%s", %s',
        'pg_hba.conf rejects connection for host "%s", user "%s", database "%s", %s',
        'pg_hba.conf rejects replication connection for host "%s", user "%s", %s',
    ),
    "unknown_database": ('database "%s" does not exist',),
    "unknown_role": ('role "%s" does not exist',),
    "role_cannot_login": ('role "%s" is not permitted to log in',),
    "admin_terminate": ("terminating connection due to administrator command",),
    "crash_terminate_sibling": ("terminating connection because of crash of another server process",),
    "immediate_shutdown_terminate": (
        "terminating connection due to immediate shutdown command",
        "terminating connection because of unexpected SIGQUIT signal",
    ),
    "postmaster_death": ("terminating connection due to unexpected postmaster exit",),
    "recovery_conflict": (
        "terminating connection due to conflict with recovery",
        "canceling statement due to conflict with recovery",
    ),
    "backend_crash": (
        "%s (PID %d) was terminated by signal %d: %s",
        "%s (PID %d) was terminated by exception 0x%X",
        "%s (PID %d) exited with exit code %d",
        "%s (PID %d) exited with unrecognized status %d",
    ),
    "terminating_other_processes": ("terminating any other active server processes",),
    "crash_reinitializing": ("all server processes terminated; reinitializing",),
    "crash_recovery": (
        "database system was not properly shut down; automatic recovery in progress",
        "database system was interrupted; last known up at %s",
        "database system was interrupted while in recovery at %s",
        "database system was interrupted while in recovery at log time %s",
    ),
    "no_restart_after_crash": (
        "shutting down because restart_after_crash is off",
        'shutting down because "restart_after_crash" is off',
    ),
    "shutdown_requested": (
        "received smart shutdown request",
        "received fast shutdown request",
        "received immediate shutdown request",
    ),
    "shut_down": ("database system is shut down",),
    "starting_up": ("the database system is starting up",),
    "shutting_down": ("the database system is shutting down",),
    "in_recovery": (
        "the database system is in recovery mode",
        "the database system is not yet accepting connections",
        "the database system is not accepting connections",
    ),
    "fork_failed": ("could not fork new process for connection: %m", "could not accept new connection: %m"),
    "out_of_memory": ("out of memory",),
    "ready_to_accept": (
        "database system is ready to accept connections",
        "database system is ready to accept read-only connections",
    ),
    "server_start": ("starting %s",),
    "config_reload": ("received SIGHUP, reloading configuration files",),
    "parameter_changed": ('parameter "%s" changed to "%s"',),
}
# The process names a crash line's first %s is (postmaster.c; "server process" up to 14).
PROCESS_NAMES: tuple[str, ...] = ("server process",)

# glibc's errno texts that decide an event where a wording ends in %m (strerror, translated by
# glibc's own catalog libc.mo with the server's LC_MESSAGES).
STRERRORS: tuple[str, ...] = (
    "Connection reset by peer",
    "Connection timed out",
    "Broken pipe",
    "Cannot allocate memory",
    "Resource temporarily unavailable",
)

# LOG wordings that explain nothing and fill busy logs: the stderr reader skips them unread. Their
# translated heads are rewritten to these English ones so that it still can (msgids starting so).
HARMLESS_LOG_HEADS: tuple[str, ...] = (
    "duration: ",
    "statement: ",
    "checkpoint starting: ",
    "checkpoint complete: ",
    "automatic vacuum of table ",
    "automatic analyze of table ",
    "temporary file: ",
    "execute ",
    "parse ",
    "bind ",
    "restartpoint starting: ",
    "restartpoint complete: ",
    "listening on ",
)

"""PgBouncer's evidence: the frames of its admin console and its log.

PgBouncer keeps no per-reason counters: every closed connection is one log line,
`C-0x…: db/user@addr:port closing because: REASON (age=Ns)`. What each REASON means (side,
recycling, what the application feels, category), the other log lines that matter and the level
names live in playbook.vocabulary.pgbouncer_reasons, with the releases that print each text; they are
re-exported here for older importers.

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

from typing import Final

from playbook.evidence import frames
from playbook.vocabulary.pgbouncer_reasons import (
    EVENTS,
    LEVELS,
    LOG_KINDS,
    REASON_BY_KEY,
    REASONS,
    UNKNOWN_REASON,
    LineEvent,
    Reason,
    Side,
    classify_event,
    classify_reason,
    format_matches,
)

__all__ = [
    "CONFIG_SNAPSHOT",
    "CONSOLE_COMMANDS",
    "CONSOLE_SNAPSHOT",
    "DEFAULTS",
    "EVENTS",
    "LOG_EVENTS_FRAME",
    "LOG_SUMMARY_SNAPSHOT",
    "REASONS",
    "REASON_BY_KEY",
    "SCHEMAS",
    "TICKS_FRAME",
    "TIMEOUT_SETTINGS",
    "UNKNOWN_REASON",
    "LineEvent",
    "Reason",
    "Side",
    "classify_event",
    "classify_reason",
    "format_matches",
]

# -- frame schemas ---------------------------------------------------------------------------------


def FrameSchema(  # noqa: N802 (reads as the schema it builds)
    name: str, meaning: str, row: str, columns: dict[str, tuple[str, str]]
) -> frames.FrameSchema:
    """A pooler frame of the evidence contract (listed with the others in evidence.contract):
    columns given as name -> (pandas dtype, meaning)."""
    return frames.FrameSchema(
        name,
        row,
        tuple(frames.Column(c, _kind(dtype), text, dtype) for c, (dtype, text) in columns.items()),
        meaning,
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
                "level": ("string", "PgBouncer's level name: " + ", ".join(LEVELS)),
                "kind": ("string", ", ".join(LOG_KINDS)),
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

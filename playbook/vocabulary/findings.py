"""Every finding the diagnosis can emit: id, category, what it finds, what it explains, what it follows.

The ids are the playbook's own contract (README.md's findings tables; alerts route on them), so
their source is this file. A spec says:
- `category`: one of the five (the id's prefix is the category's, or BNC for PgBouncer);
- `title`: what it finds, as README.md's table says it;
- `module`: the module of playbook.diagnose that emits it;
- `server_events`: the server-log event kinds it reads (collect/log_events.py, the server-event
  vocabulary);
- `app_kinds`: the application-log kinds its cause produces (collect/applog.py KINDS): once a
  warning or critical finding with this id exists, those errors are explained, and NET-006 leaves
  them out (diagnose/unexplained.py);
- `reasons` / `pooler_events`: the PgBouncer close reasons and log events it reads
  (vocabulary/pgbouncer_reasons.py);
- `consequence_of`: the findings it may follow from, most specific first (diagnose/consequences.py
  links it to the first one present: it is then ranked below that cause, never a root cause);
- `dropped_while`: findings whose presence withdraws it (sizing advice while a pool leaks).

RETIRED maps ids no longer emitted to the id that reports their sessions now.
tests/test_vocabulary.py fails when an id appears in the package or README.md that is not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from playbook.vocabulary.categories import ID_PREFIX, POOLER_ID_PREFIX, Category
from playbook.vocabulary.pgbouncer_reasons import (
    CLIENT_LIMITS,
    CLIENT_VANISHED,
    OPERATOR_CLOSES,
    OPERATOR_EVENTS,
    POOLING_MODE_BREAKAGE,
    SERVER_LOGIN_FAILURES,
    SERVER_TROUBLE,
    EventKey,
    ReasonKey,
)


@dataclass(frozen=True)
class FindingSpec:
    """One finding id and what it stands for (see the module's docstring for each field)."""

    id: str
    category: Category
    title: str
    module: str
    server_events: tuple[str, ...] = ()
    app_kinds: frozenset[str] = frozenset()
    reasons: tuple[ReasonKey, ...] = ()
    pooler_events: tuple[EventKey, ...] = ()
    consequence_of: tuple[str, ...] = ()
    dropped_while: tuple[str, ...] = ()

    @property
    def pooler(self) -> bool:
        """Whether it is about PgBouncer (BNC-…) rather than the server, the path or the application."""
        return self.id.startswith(POOLER_ID_PREFIX + "-")


# -- application-log kinds, grouped as the findings explain them ---------------------------------------
# (the kinds themselves are defined by the application-log reader, collect/applog.py)
POOL_WAITS: Final = frozenset({"pool_timeout", "pool_queue_full"})
CONNECT_FAILURES: Final = frozenset(
    {"connect_failed", "connect_refused", "connect_timeout", "cannot_connect_now"}
)
STATEMENT_CANCELS: Final = frozenset({"statement_timeout", "lock_timeout", "client_query_timeout"})
# What the application logs when a session it held is gone, whatever ended it (evidence.views
# APP_SESSION_LOST), and the pool's own "returned in a transaction".
SESSION_LOST: Final = frozenset(
    {
        "server_closed_unexpectedly",
        "connection_lost",
        "connection_closed",
        "ssl_eof",
        "connection_reset",
        "broken_pipe",
        "network_timeout",
        "client_query_timeout",
        "validation_failed",
        "pool_discarded_broken",
    }
)
ENDS_SESSIONS: Final = SESSION_LOST | {"returned_in_transaction"}
POOLER_KINDS: Final = frozenset(
    {
        "pgbouncer_server_crashed",
        "pgbouncer_query_wait_timeout",
        "pgbouncer_query_timeout",
        "pgbouncer_client_idle_timeout",
        "pgbouncer_idle_transaction_timeout",
        "pgbouncer_client_login_timeout",
        "pgbouncer_max_client_conn",
        "pgbouncer_server_login_failed",
        "pgbouncer_cannot_connect",
        "pgbouncer_client_unexpected_eof",
        "prepared_statement_error",  # what transaction pooling does to session-level statements
    }
)
# A pooler finding explains whatever its close reasons do to the application.
POOLER_EXPLAINS: Final = ENDS_SESSIONS | POOL_WAITS | POOLER_KINDS | CONNECT_FAILURES | STATEMENT_CANCELS

# -- server-log event kinds, grouped as the findings read them ------------------------------------------
RESET_EVENTS: Final = (
    "connection_reset",
    "broken_pipe",
    "client_send_error",
    "client_recv_error",
    "connection_to_client_lost",
    "client_recv_timeout",
    "incomplete_message",
)
CRASH_EVENTS: Final = (
    "backend_crash",
    "crash_terminate_sibling",
    "terminating_other_processes",
    "crash_reinitializing",
    "crash_recovery",
    "panic",
    "postmaster_death",
)
NETWORK_LOSSES: Final = ("NET-002", "NET-001")
LEAKS: Final = ("LEAK-005", "LEAK-004", "LEAK-002", "LEAK-001")
SERVER_ENDINGS: Final = ("SRV-001", "SRV-002", "SRV-003")


SPECS: Final[tuple[FindingSpec, ...]] = (
    # -- leak ------------------------------------------------------------------------------------------
    FindingSpec(
        "LEAK-001",
        "leak",
        "sessions idle in transaction beyond 10 s (critical beyond 5 min)",
        "leak",
        app_kinds=frozenset({"returned_in_transaction", "leak_detected"}) | POOL_WAITS,
    ),
    FindingSpec(
        "LEAK-002",
        "leak",
        "an application's connection count that only grows, or a pool exhausted at its own cap by "
        "connections it does not give back",
        "leak",
        app_kinds=frozenset({"leak_detected"}) | POOL_WAITS,
        consequence_of=NETWORK_LOSSES,
    ),
    FindingSpec(
        "LEAK-003",
        "leak",
        "clients gone with a transaction open (unexpected EOF)",
        "leak",
        server_events=("unexpected_eof_in_transaction",),
    ),
    FindingSpec(
        "LEAK-004",
        "leak",
        "pool timeouts while the server saw that application's connections idle or idle in "
        "transaction (held, not used)",
        "leak",
        app_kinds=POOL_WAITS | {"leak_detected", "returned_in_transaction"},
        consequence_of=("LEAK-005", "LEAK-001"),
    ),
    FindingSpec(
        "LEAK-005",
        "leak",
        "sessions the server ended because the application held a transaction open doing nothing "
        "(idle_in_transaction_session_timeout, or transaction_timeout of an idle transaction)",
        "leak",
        server_events=("idle_in_transaction_timeout", "transaction_timeout"),
        app_kinds=ENDS_SESSIONS | {"idle_in_transaction_timeout", "transaction_timeout"} | POOL_WAITS,
    ),
    # -- timeout ---------------------------------------------------------------------------------------
    FindingSpec(
        "TMO-001",
        "timeout",
        "sessions ended by idle_session_timeout while running work",
        "timeout",
        server_events=("idle_session_timeout",),
        app_kinds=ENDS_SESSIONS | {"idle_session_timeout"},
    ),
    FindingSpec(
        "TMO-003",
        "timeout",
        "sessions ended by transaction_timeout while running work",
        "timeout",
        server_events=("transaction_timeout",),
        app_kinds=ENDS_SESSIONS | {"transaction_timeout"},
    ),
    FindingSpec(
        "TMO-004",
        "timeout",
        "statements canceled by statement_timeout or lock_timeout (the session survives)",
        "timeout",
        server_events=("statement_timeout", "lock_timeout"),
        app_kinds=STATEMENT_CANCELS,
    ),
    FindingSpec(
        "TMO-005",
        "timeout",
        "idle_session_timeout shorter than pooled connections stay idle",
        "timeout",
        app_kinds=ENDS_SESSIONS | {"idle_session_timeout"},
    ),
    # -- network ---------------------------------------------------------------------------------------
    FindingSpec(
        "NET-001",
        "network",
        "resets and broken pipes in the server log",
        "network",
        server_events=(*RESET_EVENTS, "unexpected_eof_in_transaction"),
        app_kinds=ENDS_SESSIONS | CONNECT_FAILURES,
    ),
    FindingSpec(
        "NET-002",
        "network",
        "sessions the application lost that the server did not end",
        "network",
        app_kinds=ENDS_SESSIONS,
        consequence_of=SERVER_ENDINGS,
    ),
    FindingSpec(
        "NET-003", "network", "keepalives at the OS default, far above common path idle limits", "network"
    ),
    FindingSpec(
        "NET-004", "network", "slow or failing connects from this host", "network", app_kinds=CONNECT_FAILURES
    ),
    FindingSpec(
        "NET-005",
        "network",
        "the playbook's own session lost with no server-side reason",
        "network",
        consequence_of=SERVER_ENDINGS,
    ),
    FindingSpec(
        "NET-006",
        "network",
        "application errors in the window that no cause in the evidence explains",
        "unexplained",
    ),
    FindingSpec(
        "NET-007", "network", "idle connections cut on the path, measured by `playbook probe path`", "network"
    ),
    # -- pool_config -----------------------------------------------------------------------------------
    FindingSpec(
        "POOL-001",
        "pool_config",
        "peak usage near max_connections minus reserved slots",
        "pool_config",
        app_kinds=POOL_WAITS | {"too_many_clients"},
        consequence_of=("LEAK-002",),
    ),
    FindingSpec(
        "POOL-002",
        "pool_config",
        "53300 refusals (no connection slot left)",
        "pool_config",
        server_events=("too_many_clients", "reserved_slots"),
        app_kinds=frozenset({"too_many_clients"}) | CONNECT_FAILURES | POOL_WAITS,
        consequence_of=("LEAK-002",),
    ),
    FindingSpec(
        "POOL-003",
        "pool_config",
        "role or database CONNECTION LIMIT refusals",
        "pool_config",
        server_events=("role_conn_limit", "database_conn_limit"),
        app_kinds=frozenset({"too_many_clients"}) | CONNECT_FAILURES | POOL_WAITS,
    ),
    FindingSpec(
        "POOL-004",
        "pool_config",
        "oversized idle pools, with a pool size from observed concurrency (Little's law)",
        "pool_config",
        dropped_while=(*LEAKS, "POOL-005", "POOL-002"),
    ),
    FindingSpec(
        "POOL-005",
        "pool_config",
        "pool waits while the connections were busy (the pool is too small or its queries too slow)",
        "pool_config",
        app_kinds=POOL_WAITS,
        consequence_of=(*LEAKS, "NET-004", "NET-006"),
    ),
    # -- server ----------------------------------------------------------------------------------------
    FindingSpec(
        "SRV-001",
        "server",
        "restarts in the window, or a shutdown the server is not back from",
        "server",
        server_events=("shutdown_requested", "shut_down", "ready_to_accept", "admin_terminate"),
        app_kinds=ENDS_SESSIONS | CONNECT_FAILURES | {"admin_shutdown"},
        consequence_of=("SRV-002",),
    ),
    FindingSpec(
        "SRV-002",
        "server",
        "crashes (a backend killed, the postmaster reinitializing)",
        "server",
        server_events=CRASH_EVENTS,
        app_kinds=ENDS_SESSIONS | CONNECT_FAILURES | {"crash_shutdown", "admin_shutdown"},
    ),
    FindingSpec(
        "SRV-003",
        "server",
        "administrator or reaper terminations (pg_terminate_backend)",
        "server",
        server_events=("admin_terminate", "shutdown_requested"),
        app_kinds=ENDS_SESSIONS | {"admin_shutdown"},
    ),
    FindingSpec(
        "SRV-004",
        "server",
        "the server started shortly before the window (info)",
        "server",
        server_events=("shutdown_requested",),
    ),
    # -- PgBouncer (BNC) ---------------------------------------------------------------------------------
    FindingSpec(
        "BNC-001",
        "timeout",
        "client_idle_timeout closed pooled connections the application still held",
        "pgbouncer_findings",
        reasons=("client_idle_timeout",),
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-002",
        "leak",
        "idle_transaction_timeout: the application held a transaction open with nothing running",
        "pgbouncer_findings",
        reasons=("idle_transaction_timeout",),
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-003",
        "timeout",
        "query_timeout ended client connections with their query",
        "pgbouncer_findings",
        reasons=("query_timeout",),
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-004",
        "pool_config",
        "query_wait_timeout: clients waited for a server connection and were disconnected",
        "pgbouncer_findings",
        reasons=("query_wait_timeout",),
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-005",
        "timeout",
        "transaction_timeout (PgBouncer 1.25+)",
        "pgbouncer_findings",
        reasons=("transaction_timeout",),
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-006",
        "network",
        "client_login_timeout: clients that never finished logging in",
        "pgbouncer_findings",
        reasons=("client_login_timeout",),
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-010",
        "pool_config",
        "clients queued (cl_waiting, maxwait over time)",
        "pgbouncer_findings",
        reasons=("query_wait_timeout",),
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-011",
        "pool_config",
        "max_client_conn or a per-database/user client limit reached",
        "pgbouncer_findings",
        reasons=CLIENT_LIMITS,
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-012",
        "pool_config",
        "max_db_connections / max_user_connections reached while clients wait",
        "pgbouncer_findings",
        reasons=("evicted",),
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-013",
        "pool_config",
        "pools larger than the server allows, or the server refusing PgBouncer's logins (53300)",
        "pgbouncer_findings",
        reasons=("server_too_many_clients",),
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-020",
        "pool_config",
        "transaction/statement pooling broke prepared statements, session state or transactions",
        "pgbouncer_findings",
        reasons=POOLING_MODE_BREAKAGE,
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-030",
        "server",
        "server connections crashed, refused, or failed their check or reset query",
        "pgbouncer_findings",
        reasons=SERVER_TROUBLE,
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-031",
        "pool_config",
        "PgBouncer cannot log in to PostgreSQL",
        "pgbouncer_findings",
        reasons=SERVER_LOGIN_FAILURES,
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-032",
        "server",
        "PgBouncer restarted, paused, or an operator closed connections",
        "pgbouncer_findings",
        reasons=OPERATOR_CLOSES,
        pooler_events=OPERATOR_EVENTS,
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-040",
        "network",
        "clients vanished without a goodbye",
        "pgbouncer_findings",
        reasons=CLIENT_VANISHED,
        app_kinds=POOLER_EXPLAINS,
    ),
    FindingSpec(
        "BNC-090",
        "pool_config",
        "info: PgBouncer's normal recycling, and any close reason not yet mapped",
        "pgbouncer_findings",
        reasons=(
            "server_lifetime",
            "server_idle_timeout",
            "obsolete_connection",
            "evicted",
            "pool_shrunk",
            "server_dirty",
            "unknown",
        ),
        app_kinds=POOLER_EXPLAINS,
    ),
)
FINDINGS: Final[dict[str, FindingSpec]] = {spec.id: spec for spec in SPECS}
# Ids no longer emitted, and the id that reports their sessions now (README.md says why).
RETIRED: Final[dict[str, str]] = {"TMO-002": "LEAK-005"}
# What a finding id looks like: a category's prefix or BNC, a dash, three digits.
ID_PATTERN: Final = r"\b(?:" + "|".join((*ID_PREFIX.values(), POOLER_ID_PREFIX)) + r")-\d{3}\b"


def spec(finding_id: str) -> FindingSpec:
    """The spec of a finding id; a KeyError names the id when the vocabulary does not define it."""
    try:
        return FINDINGS[finding_id]
    except KeyError:
        raise KeyError(f"finding id {finding_id!r} is not defined in playbook.vocabulary.findings") from None


def explains(finding_id: str) -> frozenset[str]:
    """The application-log kinds a warning or critical finding with this id accounts for."""
    found = FINDINGS.get(finding_id)
    return found.app_kinds if found else frozenset()

"""Nothing unexplained is "OK": application errors that no finding accounts for are said out loud.

Each finding id names the application-log kinds its cause produces (EXPLAINS). After every rule
has run, the failures in the application log whose kind no warning or critical finding explains
become NET-006: how many, which kinds, first and last time, and what to collect next. It is a
network finding because an error at the connection level that neither the server, the pooler nor
the pool recorded most often comes from the path, and its low confidence ranks it below any
cause the evidence does show.
"""

from __future__ import annotations

from playbook.diagnose.findings import Finding, Severity
from playbook.evidence import Evidence
from playbook.evidence.views import APP_SESSION_LOST, app_events, first_last, server_log_read, top_values

POOL_WAITS = frozenset({"pool_timeout", "pool_queue_full"})
CONNECT_FAILURES = frozenset({"connect_failed", "connect_refused", "connect_timeout", "cannot_connect_now"})
STATEMENT_CANCELS = frozenset({"statement_timeout", "lock_timeout", "client_query_timeout"})
POOLER_KINDS = frozenset(
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
# Whatever ends a pooled session shows in the application as a lost session as well as by name.
_ENDS_SESSIONS = APP_SESSION_LOST | {"returned_in_transaction"}

EXPLAINS: dict[str, frozenset[str] | set[str]] = {
    "LEAK-001": frozenset({"returned_in_transaction", "leak_detected"}) | POOL_WAITS,
    "LEAK-002": frozenset({"leak_detected"}) | POOL_WAITS,
    "LEAK-003": frozenset(),
    "LEAK-004": POOL_WAITS | {"leak_detected", "returned_in_transaction"},
    "LEAK-005": _ENDS_SESSIONS | {"idle_in_transaction_timeout", "transaction_timeout"} | POOL_WAITS,
    "TMO-001": _ENDS_SESSIONS | {"idle_session_timeout"},
    "TMO-003": _ENDS_SESSIONS | {"transaction_timeout"},
    "TMO-004": STATEMENT_CANCELS,
    "TMO-005": _ENDS_SESSIONS | {"idle_session_timeout"},
    "NET-001": _ENDS_SESSIONS | CONNECT_FAILURES,
    "NET-002": _ENDS_SESSIONS,
    "NET-004": CONNECT_FAILURES,
    "POOL-001": POOL_WAITS | {"too_many_clients"},
    "POOL-002": {"too_many_clients"} | CONNECT_FAILURES | POOL_WAITS,
    "POOL-003": {"too_many_clients"} | CONNECT_FAILURES | POOL_WAITS,
    "POOL-005": POOL_WAITS,
    "SRV-001": _ENDS_SESSIONS | CONNECT_FAILURES | {"admin_shutdown"},
    "SRV-002": _ENDS_SESSIONS | CONNECT_FAILURES | {"crash_shutdown", "admin_shutdown"},
    "SRV-003": _ENDS_SESSIONS | {"admin_shutdown"},
}
# Pooler findings explain what their close reasons do to the application.
POOLER_EXPLAINS = _ENDS_SESSIONS | POOL_WAITS | POOLER_KINDS | CONNECT_FAILURES | STATEMENT_CANCELS
CONFIDENCE_UNEXPLAINED = 0.3


def explained_kinds(findings: list[Finding]) -> set[str]:
    """The application-log kinds the warning and critical findings account for."""
    kinds: set[str] = set()
    for finding in findings:
        if finding.severity is Severity.INFO:
            continue
        kinds |= POOLER_EXPLAINS if finding.id.startswith("BNC-") else EXPLAINS.get(finding.id, frozenset())
    return kinds


def find_unexplained_errors(evidence: Evidence, findings: list[Finding]) -> list[Finding]:
    """NET-006 (warning): application errors in the window that no warning or critical finding
    explains, with what to collect next."""
    errors = app_events(evidence)
    if errors.empty:
        return []
    left = errors[~errors["kind"].isin(explained_kinds(findings))]
    if left.empty:
        return []
    missing = []
    if not server_log_read(evidence):
        missing.append("the server log (--server-log) with log_connections and log_disconnections on")
    if not evidence.collected("pgbouncer_log") and any(str(k).startswith("pgbouncer") for k in left["kind"]):
        missing.append("PgBouncer's log (--pgbouncer-log)")
    missing.append("a window (--since/--until) that covers the first error")
    missing.append("the pool's own statistics or debug log for the stack named below")
    kinds = top_values(left, "kind", 10)
    return [
        Finding(
            id="NET-006",
            category="network",
            severity=Severity.WARNING,
            confidence=CONFIDENCE_UNEXPLAINED,
            title=(
                f"{len(left)} application error(s) that no cause in this evidence explains "
                f"({', '.join(kinds)})"
            ),
            evidence={
                "app_errors": len(left),
                "kinds": kinds,
                "stacks": top_values(left, "stack"),
                "examples": [str(t)[:200] for t in left["text"].head(3)],
                **first_last(left),
            },
            recommendation=(
                "These failures are real and this run cannot say why: do not read the rest of the report "
                "as the whole story. Collect next: " + "; ".join(missing) + "."
            ),
        )
    ]

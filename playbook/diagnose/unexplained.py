"""Nothing unexplained is "OK": application errors that no finding accounts for are said out loud.

Each finding's spec (playbook.vocabulary.findings) names the application-log kinds its cause
produces. After every rule has run, the failures in the application log whose kind no warning or
critical finding explains become NET-006: how many, which kinds, first and last time, and what
to collect next. It is a network finding because an error at the connection level that neither
the server, the pooler nor the pool recorded most often comes from the path, and its low
confidence ranks it below any cause the evidence does show.
"""

from __future__ import annotations

from playbook.diagnose.findings import Finding, Severity
from playbook.evidence import Evidence
from playbook.evidence.views import app_events, first_last, server_log_read, top_values
from playbook.vocabulary.findings import explains

CONFIDENCE_UNEXPLAINED = 0.3


def explained_kinds(findings: list[Finding]) -> set[str]:
    """The application-log kinds the warning and critical findings account for."""
    kinds: set[str] = set()
    for finding in findings:
        if finding.severity is Severity.INFO:
            continue
        kinds |= explains(finding.id)
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

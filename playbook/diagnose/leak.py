"""Connection leaks: the application does not give its connections back."""

from __future__ import annotations

import pandas as pd

from playbook.diagnose.findings import Finding, Severity
from playbook.evidence import Evidence

IDLE_IN_TRANSACTION_WARNING_S = 10.0
IDLE_IN_TRANSACTION_CRITICAL_S = 300.0


def idle_in_transaction_sessions(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per backend seen idle in transaction: its longest observed age and who it belongs to."""
    if samples.empty:
        return pd.DataFrame(
            columns=["pid", "application_name", "usename", "datname", "client_addr", "max_age_s"]
        )
    idle = samples[samples["state"].isin(["idle in transaction", "idle in transaction (aborted)"])]
    keys = ["pid", "backend_start", "application_name", "usename", "datname", "client_addr"]
    grouped = idle.groupby(keys, dropna=False)["xact_age_s"].max().rename("max_age_s").reset_index()
    return grouped.drop(columns="backend_start").sort_values("max_age_s", ascending=False, ignore_index=True)


def find_idle_in_transaction(
    evidence: Evidence, *, warning_s: float = IDLE_IN_TRANSACTION_WARNING_S
) -> list[Finding]:
    sessions = idle_in_transaction_sessions(evidence.frame("activity_samples"))
    stuck = sessions[sessions["max_age_s"] >= warning_s]
    if stuck.empty:
        return []
    oldest = float(stuck["max_age_s"].iloc[0])
    apps = sorted({str(a) or "(no application_name)" for a in stuck["application_name"]})
    severity = Severity.CRITICAL if oldest >= IDLE_IN_TRANSACTION_CRITICAL_S else Severity.WARNING
    timeout_s = max(30, int(min(oldest, 600) // 2))
    return [
        Finding(
            id="LEAK-001",
            category="leak",
            severity=severity,
            confidence=0.8,
            title=(
                f"{len(stuck)} session(s) idle in transaction for up to {oldest:.0f} s "
                f"(application: {', '.join(apps)})"
            ),
            evidence={
                "sessions": stuck.head(20).astype({"max_age_s": "float"}).round(1).to_dict("records"),
                "threshold_s": warning_s,
            },
            recommendation=(
                "Find the code path that opens a transaction and does not commit or roll back before "
                "returning the connection (psycopg: use `with pool.connection() as conn:` which commits or "
                "rolls back on exit). As a guard rail, make the server end such sessions: "
                f"`ALTER ROLE <app_role> SET idle_in_transaction_session_timeout = '{timeout_s}s';`"
            ),
        )
    ]


def diagnose(evidence: Evidence) -> list[Finding]:
    return find_idle_in_transaction(evidence)

"""Connection leaks: the application does not give its connections back."""

from __future__ import annotations

import numpy as np
import pandas as pd

from playbook.diagnose.findings import Finding, Severity
from playbook.evidence.views import (
    app_events,
    app_samples,
    counts_over_time,
    first_last,
    idle_in_transaction_sessions,
    server_events,
    top_values,
    usable_connections,
)
from playbook.evidence import Evidence

IDLE_IN_TRANSACTION_WARNING_S = 10.0
IDLE_IN_TRANSACTION_CRITICAL_S = 300.0


def find_idle_in_transaction(
    evidence: Evidence, *, warning_s: float = IDLE_IN_TRANSACTION_WARNING_S
) -> list[Finding]:
    sessions = idle_in_transaction_sessions(app_samples(evidence))
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


GROWTH_MIN_CONNECTIONS = 3
GROWTH_MIN_TICKS = 5


def connection_trends(evidence: Evidence) -> pd.DataFrame:
    """Per application: connections at the start and end of the window, slope (per minute), monotony."""
    counts = counts_over_time(app_samples(evidence), evidence.activity_ticks, ["application_name"])
    rows = []
    if len(counts) < GROWTH_MIN_TICKS:
        return pd.DataFrame(columns=["application_name", "start", "end", "slope_per_min", "non_decreasing"])
    seconds = (counts.index - counts.index[0]).total_seconds().to_numpy()
    for app in counts.columns:
        series = counts[app].to_numpy(dtype=float)
        head, tail = series[:3].mean(), series[-3:].mean()
        diffs = series[1:] - series[:-1]
        slope = float(np.polyfit(seconds, series, 1)[0]) * 60 if seconds[-1] > 0 else 0.0
        rows.append(
            {
                "application_name": str(app) or "(no application_name)",
                "start": round(head, 1),
                "end": round(tail, 1),
                "slope_per_min": round(slope, 2),
                "non_decreasing": float((diffs >= 0).mean()) if len(diffs) else 1.0,
            }
        )
    return pd.DataFrame(rows)


def find_growing_applications(evidence: Evidence) -> list[Finding]:
    trends = connection_trends(evidence)
    if trends.empty:
        return []
    growing = trends[
        (trends["end"] - trends["start"] >= GROWTH_MIN_CONNECTIONS)
        & (trends["slope_per_min"] > 0)
        & (trends["non_decreasing"] >= 0.9)
    ]
    findings = []
    usable = usable_connections(evidence.settings)
    for row in growing.to_dict("records"):
        app, start, end = str(row["application_name"]), float(row["start"]), float(row["end"])
        slope, steady = float(row["slope_per_min"]), float(row["non_decreasing"])
        minutes_left = max(0.0, (usable - end) / slope) if usable and slope > 0 else None
        severity = Severity.CRITICAL if minutes_left is not None and minutes_left < 60 else Severity.WARNING
        findings.append(
            Finding(
                id="LEAK-002",
                category="leak",
                severity=severity,
                confidence=0.75,
                title=(
                    f"connections of {app} only grow: {start:g} → {end:g} ({slope:+.1f}/min)"
                    + (
                        f", the server's limit is reached in about {minutes_left:.0f} min"
                        if minutes_left
                        else ""
                    )
                ),
                evidence={
                    "application_name": app,
                    "start": start,
                    "end": end,
                    "slope_per_min": slope,
                    "non_decreasing": round(steady, 2),
                    "minutes_to_limit": None if minutes_left is None else round(minutes_left, 1),
                },
                recommendation=(
                    "A pool that is bounded cannot grow without end: the application opens connections "
                    "outside "
                    "the pool or never returns them. Borrow connections only in a context manager "
                    "(`with pool.connection() as conn:`), bound the pool (max_size), and turn on leak "
                    "detection where the stack has it (HikariCP leakDetectionThreshold=30000; psycopg_pool "
                    "logs 'rolling back returned connection' for connections given back mid-transaction)."
                ),
            )
        )
    return findings


def find_client_vanished_in_transaction(evidence: Evidence) -> list[Finding]:
    eofs = server_events(evidence, "unexpected_eof_in_transaction")
    if eofs.empty:
        return []
    return [
        Finding(
            id="LEAK-003",
            category="leak",
            severity=Severity.WARNING if len(eofs) < 3 else Severity.CRITICAL,
            confidence=0.7,
            title=f"{len(eofs)} client(s) went away with a transaction still open (unexpected EOF)",
            evidence={
                "users": top_values(eofs, "user"),
                "applications": top_values(eofs, "application"),
                **first_last(eofs),
            },
            recommendation=(
                "Processes die or drop connections in the middle of a transaction: a worker killed while "
                "holding "
                "a checked-out connection, or a pool that closes connections it never rolled back. Commit or "
                "roll back before returning a connection and close pools on shutdown (`pool.close()`)."
            ),
        )
    ]


def find_pool_starved_by_idle_holders(evidence: Evidence) -> list[Finding]:
    """Pool timeouts while the server sees the app's connections idle: they are checked out, not used."""
    timeouts = app_events(
        evidence, "pool_timeout", "pool_queue_full", "leak_detected", "returned_in_transaction"
    )
    samples = app_samples(evidence)
    if timeouts.empty or samples.empty:
        return []
    last_tick = samples[samples["tick_ts"] == samples["tick_ts"].max()]
    holding = last_tick[
        last_tick["state"].isin(["idle", "idle in transaction", "idle in transaction (aborted)"])
    ]
    busy = last_tick[last_tick["state"] == "active"]
    if len(holding) <= len(busy):
        return []
    return [
        Finding(
            id="LEAK-004",
            category="leak",
            severity=Severity.CRITICAL,
            confidence=0.8,
            title=(
                f"{len(timeouts)} pool timeout(s) in the application while the server saw {len(holding)} "
                "of its "
                f"connections idle and {len(busy)} busy: connections are held, not used"
            ),
            evidence={
                "app_errors": int(len(timeouts)),
                "idle_at_end": int(len(holding)),
                "active_at_end": int(len(busy)),
                **first_last(timeouts),
            },
            recommendation=(
                "The pool is empty because borrowed connections are not given back, not because it is too "
                "small: "
                "raising max_size only delays the outage. Return every connection in a finally/with block; "
                "turn on leak detection (HikariCP leakDetectionThreshold, SQLAlchemy pool logging)."
            ),
        )
    ]


def diagnose(evidence: Evidence) -> list[Finding]:
    return (
        find_idle_in_transaction(evidence)
        + find_growing_applications(evidence)
        + find_client_vanished_in_transaction(evidence)
        + find_pool_starved_by_idle_holders(evidence)
    )

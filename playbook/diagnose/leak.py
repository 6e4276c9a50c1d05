"""Connection leaks: the application does not give its connections back."""

from __future__ import annotations

import numpy as np
import pandas as pd

from playbook.diagnose.findings import Finding, Severity
from playbook.diagnose.fix_text import joined, sql, sql_name
from playbook.diagnose.pool_snippets import transaction_fix
from playbook.evidence import Evidence
from playbook.evidence.views import (
    IDLE_IN_TRANSACTION_STATES,
    app_events,
    app_samples,
    app_stack,
    counts_over_time,
    first_last,
    idle_in_transaction_sessions,
    limit_in_force,
    samples_before,
    server_events,
    top_values,
    usable_connections,
)

# A transaction left open this long holds locks and a connection for nothing (warning), and at
# five minutes it is an outage in the making: vacuum is held back and the pool is drained (critical).
IDLE_IN_TRANSACTION_WARNING_S = 10.0
IDLE_IN_TRANSACTION_CRITICAL_S = 300.0
# The guard-rail timeout suggested: half the oldest seen (capped at 10 min), never under 30 s.
GUARD_RAIL_MIN_S = 30
GUARD_RAIL_MAX_S = 600
CONFIDENCE_IDLE_IN_TRANSACTION = 0.8
# Growth: at least this many more connections at the end than at the start, over at least this
# many ticks, rising in at least this share of steps, is an application that does not give back.
GROWTH_MIN_CONNECTIONS = 3
GROWTH_MIN_TICKS = 5
GROWTH_MIN_NON_DECREASING = 0.9
GROWTH_CRITICAL_MINUTES_TO_LIMIT = 60
# A count that ends flat below this share of the usable connections stopped at the pool's own cap.
USAGE_NEAR_LIMIT = 0.9
POOL_WAIT_KINDS = ("pool_timeout", "pool_queue_full")
CONFIDENCE_GROWTH = 0.75
# Clients gone mid-transaction: a couple is a crash; three or more is a pattern.
VANISHED_CRITICAL_COUNT = 3
CONFIDENCE_VANISHED = 0.7
CONFIDENCE_HELD_NOT_USED = 0.8


def find_idle_in_transaction(
    evidence: Evidence, *, warning_s: float = IDLE_IN_TRANSACTION_WARNING_S
) -> list[Finding]:
    """LEAK-001 from the activity samples: backends idle in transaction for `warning_s` or more.

    Severity follows the oldest transaction seen (IDLE_IN_TRANSACTION_*). The fix names the code
    path first and a role-level idle_in_transaction_session_timeout as the guard rail.
    """
    sessions = idle_in_transaction_sessions(app_samples(evidence))
    stuck = sessions[sessions["max_age_s"] >= warning_s]
    if stuck.empty:
        return []
    oldest = float(stuck["max_age_s"].iloc[0])
    apps = sorted({str(a) or "(no application_name)" for a in stuck["application_name"]})
    severity = Severity.CRITICAL if oldest >= IDLE_IN_TRANSACTION_CRITICAL_S else Severity.WARNING
    timeout_s = max(GUARD_RAIL_MIN_S, int(min(oldest, GUARD_RAIL_MAX_S) // 2))
    roles = [str(r) for r in stuck["usename"].dropna().unique() if str(r)]
    role = sql_name(roles[0] if len(roles) == 1 else None, "<app_role>")
    return [
        Finding(
            id="LEAK-001",
            category="leak",
            severity=severity,
            confidence=CONFIDENCE_IDLE_IN_TRANSACTION,
            title=(
                f"{len(stuck)} session(s) idle in transaction for up to {oldest:.0f} s "
                f"(application: {', '.join(apps)})"
            ),
            evidence={
                "sessions": stuck.head(20).astype({"max_age_s": "float"}).round(1).to_dict("records"),
                "threshold_s": warning_s,
            },
            recommendation=joined(
                "Find the code path that opens a transaction and does not commit or roll back before "
                "returning the connection; every transaction must end before the connection goes back:\n\n",
                transaction_fix(app_stack(evidence)),
                "\n\nAs a guard rail, make the server end such sessions:",
                sql(f"ALTER ROLE {role} SET idle_in_transaction_session_timeout = '{timeout_s}s'"),
            ),
        )
    ]


def connection_trends(evidence: Evidence) -> pd.DataFrame:
    """Per application: connections at the start and end of the window (medians of the first and
    last ticks, whole connections), slope per minute, the share of steps that did not go down, the
    state most of the added connections are in, and whether the count ended flat for the last
    third of the window (a pool that reached its own cap)."""
    samples = app_samples(evidence)
    counts = counts_over_time(samples, evidence.activity_ticks, ["application_name"])
    columns = [
        "application_name",
        "start",
        "end",
        "slope_per_min",
        "non_decreasing",
        "plateau",
        "growth_state",
    ]
    if len(counts) < GROWTH_MIN_TICKS:
        return pd.DataFrame(columns=columns)
    seconds = (counts.index - counts.index[0]).total_seconds().to_numpy()
    rows = []
    for app in counts.columns:
        series = counts[app].to_numpy(dtype=float)
        head, tail = float(np.median(series[:3])), float(np.median(series[-3:]))
        diffs = series[1:] - series[:-1]
        slope = float(np.polyfit(seconds, series, 1)[0]) * 60 if seconds[-1] > 0 else 0.0
        third = max(GROWTH_MIN_TICKS // 2, len(series) // 3)
        plateau = bool(len(series) >= 2 * third and np.ptp(series[-third:]) == 0 and series[-1] > series[0])
        rows.append(
            {
                "application_name": str(app) or "(no application_name)",
                "start": int(head),
                "end": int(tail),
                "slope_per_min": round(slope, 2),
                "non_decreasing": float((diffs >= 0).mean()) if len(diffs) else 1.0,
                "plateau": plateau,
                "growth_state": _growth_state(samples, str(app)),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _growth_state(samples: pd.DataFrame, app: str) -> str:
    """The state whose count grew most between the first and the last tick for this application."""
    ours = samples[samples["application_name"].fillna("") == app]
    if ours.empty:
        return ""
    first, last = ours["tick_ts"].min(), ours["tick_ts"].max()
    before = ours[ours["tick_ts"] == first]["state"].value_counts()
    after = ours[ours["tick_ts"] == last]["state"].value_counts()
    growth = after.sub(before, fill_value=0)
    return str(growth.idxmax()) if not growth.empty and growth.max() > 0 else ""


def find_growing_applications(evidence: Evidence) -> list[Finding]:
    """LEAK-002 from the activity samples: an application's connection count that only grows.

    Thresholds GROWTH_*: a pool that is bounded and used normally goes up and down; a count that
    rises steadily is connections taken and not returned. Critical when, at the fitted slope, the
    server's usable connections are reached within GROWTH_CRITICAL_MINUTES_TO_LIMIT.
    """
    trends = connection_trends(evidence)
    if trends.empty:
        return []
    growing = trends[
        (trends["end"] - trends["start"] >= GROWTH_MIN_CONNECTIONS)
        & (trends["slope_per_min"] > 0)
        & (trends["non_decreasing"] >= GROWTH_MIN_NON_DECREASING)
    ]
    findings = []
    usable = usable_connections(evidence.settings)
    waits = app_events(evidence, *POOL_WAIT_KINDS)
    for row in growing.to_dict("records"):
        app, start, end = str(row["application_name"]), int(row["start"]), int(row["end"])
        slope, steady = float(row["slope_per_min"]), float(row["non_decreasing"])
        at_cap = bool(row["plateau"]) and (not usable or end < usable * USAGE_NEAR_LIMIT)
        if at_cap:
            # The count stopped at a value the server would still allow: the pool's own cap. Its
            # connections are all held; what hurts is requests waiting for one, not the server limit.
            minutes_left = None
            severity = Severity.CRITICAL if not waits.empty else Severity.WARNING
            title = (
                f"{app}'s pool is exhausted by connections it does not give back: {start} → {end}, "
                f"then flat at {end} (its own cap)"
                + (f"; {len(waits)} request(s) timed out waiting for a connection" if not waits.empty else "")
            )
        else:
            minutes_left = max(0.0, (usable - end) / slope) if usable and slope > 0 else None
            soon = minutes_left is not None and minutes_left < GROWTH_CRITICAL_MINUTES_TO_LIMIT
            severity = Severity.CRITICAL if soon else Severity.WARNING
            title = f"connections of {app} only grow: {start} → {end} ({slope:+.1f}/min)" + (
                f", the server's limit is reached in about {minutes_left:.0f} min" if minutes_left else ""
            )
        findings.append(
            Finding(
                id="LEAK-002",
                category="leak",
                severity=severity,
                confidence=CONFIDENCE_GROWTH,
                title=title,
                evidence={
                    "application_name": app,
                    "start": start,
                    "end": end,
                    "slope_per_min": slope,
                    "non_decreasing": round(steady, 2),
                    "at_pool_cap": at_cap,
                    "growth_state": str(row["growth_state"]),
                    "pool_wait_errors": int(len(waits)),
                    "usable_connections": usable,
                    "minutes_to_limit": None if minutes_left is None else round(minutes_left, 1),
                },
                recommendation=(
                    "A pool that is bounded cannot grow without end: the application opens connections "
                    "outside the pool or never returns them. Borrow connections only in a context manager "
                    "(`with pool.connection() as conn:`), bound the pool (max_size), and turn on leak "
                    "detection where the stack has it (HikariCP leakDetectionThreshold=30000; psycopg_pool "
                    "logs 'rolling back returned connection' for connections given back mid-transaction). "
                    "Do not enlarge the pool: it only delays the outage."
                ),
            )
        )
    return findings


def find_client_vanished_in_transaction(evidence: Evidence) -> list[Finding]:
    """LEAK-003 from the server log: "unexpected EOF on client connection with an open transaction".

    The client process died or dropped its socket while holding a transaction; warning for one or
    two, critical from VANISHED_CRITICAL_COUNT.
    """
    eofs = server_events(evidence, "unexpected_eof_in_transaction")
    if eofs.empty:
        return []
    return [
        Finding(
            id="LEAK-003",
            category="leak",
            severity=Severity.WARNING if len(eofs) < VANISHED_CRITICAL_COUNT else Severity.CRITICAL,
            confidence=CONFIDENCE_VANISHED,
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


CONFIDENCE_KILLED_LOGGED = 0.9
CONFIDENCE_KILLED_APP_ONLY = 0.8


def find_transactions_killed(evidence: Evidence) -> list[Finding]:
    """LEAK-005: sessions the server ended because the application held a transaction open and ran
    nothing in it: idle_in_transaction_session_timeout kills (25P03), and transaction_timeout kills
    (25P04) of sessions last seen idle in their transaction. The timeout is the mechanism; the cause
    is the code path that leaves the transaction open, so the fix goes there first; the limit is
    named as it applied to the killed sessions' role (limit_in_force) and kept as the guard rail,
    never raised in the same advice.

    Critical: each kill is a request that failed on a connection the pool believed open.
    """
    idle_kills = server_events(evidence, "idle_in_transaction_timeout")
    xact_kills = server_events(evidence, "transaction_timeout")
    xact_kills = xact_kills[xact_kills["last_state"].isin(IDLE_IN_TRANSACTION_STATES)]
    server = pd.concat([idle_kills, xact_kills]) if not xact_kills.empty else idle_kills
    app = app_events(evidence, "idle_in_transaction_timeout")
    if server.empty and app.empty:
        return []
    count = max(len(server), len(app))
    mechanisms = {
        "idle_in_transaction_session_timeout": len(idle_kills),
        "transaction_timeout": len(xact_kills),
    }
    # The limits that applied to the killed sessions' role (ALTER ROLE … SET is how a guard rail is
    # usually set), not only the server-wide values, which are often 0.
    limits = {
        "idle_in_transaction_session_timeout": limit_in_force(
            evidence, "idle_in_transaction_session_timeout", idle_kills if not idle_kills.empty else app
        ),
        "transaction_timeout": limit_in_force(evidence, "transaction_timeout", xact_kills)
        if not xact_kills.empty
        else None,
    }
    named = [f"{name} = {limit.text}" for name, limit in limits.items() if limit]
    apps = [a for a in top_values(server, "application") if a != "(none)"]
    if named:
        guard_rail = (
            f"\n\nKeep the timeout ({'; '.join(named)}) as the guard rail it is: it ends what the code "
            "path leaves open, and raising it only lets the held transactions block vacuum and locks for "
            "longer."
        )
    else:
        # A kill proves a limit is set somewhere the evidence does not show (the session's own SET,
        # the connection string): no value is suggested, since it could be a raise.
        guard_rail = (
            "\n\nThe timeout that ended them is not in the evidence (not server-wide nor ALTER ROLE / "
            "DATABASE: a SET in the session or the connection string's options); keep it as the guard "
            "rail, and read its value as the application's role: `SHOW idle_in_transaction_session_timeout;`"
        )
    return [
        Finding(
            id="LEAK-005",
            category="leak",
            severity=Severity.CRITICAL,
            confidence=CONFIDENCE_KILLED_LOGGED if not server.empty else CONFIDENCE_KILLED_APP_ONLY,
            title=(
                f"{count} session(s) ended by the server because the application held a transaction open "
                "doing nothing"
                + (f" (application: {', '.join(apps)})" if apps else "")
                + (f"; {'; '.join(named)}" if named else "")
            ),
            evidence={
                "server_log_events": len(server),
                "app_log_errors": len(app),
                "mechanism": {k: v for k, v in mechanisms.items() if v} or {"app_log": len(app)},
                **{f"{name}_s": limit.seconds if limit else None for name, limit in limits.items()},
                **{f"{name}_scope": limit.scope if limit else None for name, limit in limits.items()},
                "users": top_values(server, "user"),
                "applications": top_values(server, "application"),
                **first_last(server if not server.empty else app),
            },
            recommendation=joined(
                "The timeout is doing its job: a code path opens a transaction and then waits (a slow "
                "external call, an exception path that never rolls back) before committing. Fix that path "
                "so every transaction ends before the connection goes back to the pool:\n\n",
                transaction_fix(app_stack(evidence)),
                guard_rail,
            ),
        )
    ]


def held_and_busy_before(evidence: Evidence, waits: pd.DataFrame) -> tuple[float, float, int]:
    """The application's connections idle (or idle in transaction) and active per tick, on average
    over the ticks just before these pool waits (views.samples_before), and how many ticks that is.

    The application is the one in focus (`--app`) when known, else every sampled one: the
    application log does not say which application's pool timed out.
    """
    near = samples_before(app_samples(evidence), waits["ts"], evidence.manifest.get("interval_s"))
    ticks = int(near["tick_ts"].nunique())
    if not ticks:
        return 0.0, 0.0, 0
    held = int(near["state"].isin(["idle", *IDLE_IN_TRANSACTION_STATES]).sum())
    busy = int((near["state"] == "active").sum())
    return round(held / ticks, 1), round(busy / ticks, 1), ticks


def find_pool_starved_by_idle_holders(evidence: Evidence) -> list[Finding]:
    """LEAK-004: pool timeouts in the application log while, in the seconds before them, the server
    saw more of the application's connections idle (or idle in transaction) than active: they are
    checked out, not used. A pool whose connections were busy then is too small or its queries
    too slow (POOL-005), whatever they did after the load passed.
    """
    timeouts = app_events(evidence, *POOL_WAIT_KINDS, "leak_detected", "returned_in_transaction")
    if timeouts.empty:
        return []
    held, busy, ticks = held_and_busy_before(evidence, timeouts)
    if not ticks or held <= busy:
        return []
    return [
        Finding(
            id="LEAK-004",
            category="leak",
            severity=Severity.CRITICAL,
            confidence=CONFIDENCE_HELD_NOT_USED,
            title=(
                f"{len(timeouts)} pool timeout(s) in the application while, just before them, the server "
                f"saw {held:g} of its connections idle and {busy:g} busy: connections are held, not used"
            ),
            evidence={
                "app_errors": int(len(timeouts)),
                "idle_before_timeouts": held,
                "active_before_timeouts": busy,
                "ticks_before_timeouts": ticks,
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
    """Every leak finding (LEAK-001..005) of this evidence."""
    return (
        find_idle_in_transaction(evidence)
        + find_growing_applications(evidence)
        + find_client_vanished_in_transaction(evidence)
        + find_transactions_killed(evidence)
        + find_pool_starved_by_idle_holders(evidence)
    )

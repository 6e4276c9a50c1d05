"""Pool configuration: the pools and the server's limits do not fit together."""

from __future__ import annotations

import numpy as np
import pandas as pd

from playbook.diagnose.findings import Finding, Severity
from playbook.diagnose.fix_text import NO_NAME, ini, joined, sql, sql_name
from playbook.diagnose.leak import held_and_busy_before
from playbook.evidence import Evidence
from playbook.evidence.frames import ACTIVITY_SAMPLES
from playbook.evidence.views import (
    app_events,
    app_samples,
    counts_over_time,
    first_last,
    refusal,
    server_events,
    top_values,
    usable_connections,
)

# Share of the usable connections (max_connections minus both reserved bands) at the peak tick.
USAGE_WARNING = 0.8
USAGE_CRITICAL = 0.95
CONFIDENCE_USAGE = 0.7
CONFIDENCE_REFUSALS_LOGGED = 0.95
CONFIDENCE_REFUSALS_APP_ONLY = 0.8
CONFIDENCE_LIMIT_REFUSALS = 0.95
# Oversized: at least this many connections, this share of them idle, and a smaller suggestion.
OVERSIZED_MIN_CONNECTIONS = 10
OVERSIZED_IDLE_SHARE = 0.8
CONFIDENCE_OVERSIZED = 0.4
# Little's law sizing: the 95th percentile of active connections, 25 % headroom, plus one.
SIZING_QUANTILE = 0.95
SIZING_HEADROOM = 1.25
SIZING_MIN = 2
CONFIDENCE_POOL_WAITS = 0.6
# PgBouncer's max_client_conn offered with POOL-002: the application connections seen at once,
# doubled (restarts, deploys), never below PgBouncer's own default.
CLIENT_CONN_HEADROOM = 2
MIN_CLIENT_CONN = 100


def peak_usage(evidence: Evidence) -> tuple[int, int | None]:
    """The most client backends seen in one tick (the playbook's own included: they use slots too)."""
    ticks = evidence.activity_ticks
    sampled = ticks.loc[ticks["ok"].astype(bool), "backends"] if not ticks.empty else ticks.get("backends")
    # a window whose every tick was lost (the path gone) saw no backend: no peak, not a crash
    peak = int(sampled.max()) if sampled is not None and not sampled.empty else 0
    return peak + 1, usable_connections(evidence.settings)  # +1: the sampler's own slot


def find_usage_near_limit(evidence: Evidence) -> list[Finding]:
    """POOL-001: the peak tick's connections against the usable ones (USAGE_WARNING/CRITICAL)."""
    peak, usable = peak_usage(evidence)
    if not usable:
        return []
    ratio = peak / usable
    if ratio < USAGE_WARNING:
        return []
    severity = Severity.CRITICAL if ratio >= USAGE_CRITICAL else Severity.WARNING
    return [
        Finding(
            id="POOL-001",
            category="pool_config",
            severity=severity,
            confidence=CONFIDENCE_USAGE,
            title=f"peak {peak} connections of {usable} usable ({ratio:.0%}): near the limit",
            evidence={"peak_connections": peak, "usable_connections": usable, "ratio": round(ratio, 3)},
            recommendation=(
                "Make the sum of every pool's max_size fit below max_connections minus the reserved slots, "
                "with room for admin and migrations; put PgBouncer (pool_mode = transaction) in front when "
                "many processes each keep their own pool."
            ),
        )
    ]


def find_rejections(evidence: Evidence) -> list[Finding]:
    """POOL-002: logins refused for want of a slot (53300, server log or app log); POOL-003: logins
    refused by a role's or database's CONNECTION LIMIT. Both critical: a login refused is an outage
    for that request."""
    slots = server_events(evidence, "too_many_clients", "reserved_slots")
    limits = server_events(evidence, "role_conn_limit", "database_conn_limit")
    # The playbook's own login refused for want of a slot is one refusal more, seen first hand.
    own_slots, own_limit = refusal(evidence, "slots"), refusal(evidence, "role_limit")
    app = app_events(evidence, "too_many_clients")
    if slots.empty and not limits.empty:
        # The application's wording does not tell the two apart; the server log does: these
        # refusals were the role's or database's limit, not the server's slots.
        app = app.iloc[0:0]
    findings = []
    if not slots.empty or not app.empty or own_slots:
        _, usable = peak_usage(evidence)
        findings.append(
            Finding(
                id="POOL-002",
                category="pool_config",
                severity=Severity.CRITICAL,
                confidence=CONFIDENCE_REFUSALS_LOGGED if not slots.empty else CONFIDENCE_REFUSALS_APP_ONLY,
                title=(
                    f"{max(len(slots), len(app)) + bool(own_slots)} login(s) refused: no free connection "
                    "slot (SQLSTATE 53300)" + (", the playbook's own included" if own_slots else "")
                ),
                evidence={
                    "server_log_events": top_values(slots, "event"),
                    "app_errors": len(app),
                    "playbook_refused": own_slots["reason"] if own_slots else None,
                    "users": top_values(slots, "user"),
                    "usable_connections": usable,
                    **first_last(slots if not slots.empty else app),
                },
                recommendation=_pooler_advice(evidence, slots, usable),
            )
        )
    if not limits.empty or own_limit:
        findings.append(
            Finding(
                id="POOL-003",
                category="pool_config",
                severity=Severity.CRITICAL,
                confidence=CONFIDENCE_LIMIT_REFUSALS,
                title=(
                    f"{len(limits) + bool(own_limit)} login(s) refused by a role or database CONNECTION LIMIT"
                ),
                evidence={
                    "events": top_values(limits, "event"),
                    "users": top_values(limits, "user"),
                    "databases": top_values(limits, "database"),
                    "role_limits": [
                        r for r in evidence.settings.get("role_limits") or [] if r.get("conn_limit", -1) != -1
                    ],
                    **first_last(limits),
                },
                recommendation=joined(
                    "Raise the limit to the sum of the pools of that role or database, or shrink the pools:",
                    sql(*_limit_statements(evidence, limits)),
                ),
            )
        )
    return findings


def pooler_sizes(evidence: Evidence, refused: pd.DataFrame) -> tuple[int | None, int, int]:
    """(default_pool_size, the sessions that are not the application's, max_client_conn) for a
    PgBouncer in front: the usable slots (max_connections minus both reserved bands) minus, at the
    sampled tick where they were most, the sessions of roles other than those whose logins were
    refused (monitoring, admin, other applications: the pooler does not take their slots). None
    when the evidence has no max_connections. max_client_conn covers the clients: every
    application connection seen at once, never below MIN_CLIENT_CONN."""
    usable = usable_connections(evidence.settings)
    samples = evidence.frame(ACTIVITY_SAMPLES)
    apps = set(refused["user"].dropna().astype(str)) if "user" in refused else set()
    others, clients = 0, 0
    if not samples.empty and "tick_ts" in samples:
        per_tick = samples.groupby("tick_ts").size()
        clients = int(per_tick.max()) if not per_tick.empty else 0
        if apps and "usename" in samples:
            other = samples[~samples["usename"].astype(str).isin(apps)]
            others = int(other.groupby("tick_ts").size().max()) if not other.empty else 0
    if not usable:
        return None, others, max(MIN_CLIENT_CONN, clients * CLIENT_CONN_HEADROOM)
    return max(1, usable - others), others, max(MIN_CLIENT_CONN, clients * CLIENT_CONN_HEADROOM)


def _pooler_advice(evidence: Evidence, refused: pd.DataFrame, usable: int | None) -> str:
    size, others, clients = pooler_sizes(evidence, refused)
    lead = (
        f"The pools together ask for more than the {usable or 'usable'} slots left after the "
        "reserved ones. Add up max_size over every process and keep the sum below that (with "
        "headroom for admin, migrations and monitoring), or put PgBouncer in transaction mode "
        "in front. A pooler multiplexes many client connections onto fewer server connections: "
        "the application's pools can stay as large as they are (max_client_conn takes them), "
        "while the server sees at most default_pool_size"
    )
    if size is None:
        return joined(
            lead + ": set default_pool_size below max_connections minus the reserved slots and the "
            "sessions of other clients (max_connections was not read here).",
            ini("pool_mode = transaction", f"max_client_conn = {clients}"),
        )
    sized = (
        f" (here {size}: {usable} usable slots"
        + (f" minus {others} session(s) of other roles seen at once" if others else "")
        + "; default_pool_size is per database and user pair, max_db_connections holds the sum "
        "for a database: with several databases, split the slots between them). It adds no "
        "capacity: work that needs more connections at once than that waits in PgBouncer's queue "
        "instead of being refused:"
    )
    return joined(
        lead + sized,
        ini(
            "pool_mode = transaction",
            f"default_pool_size = {size}",
            f"max_db_connections = {size}",
            f"max_client_conn = {clients}",
        ),
    )


def _limit_statements(evidence: Evidence, limits: pd.DataFrame) -> list[str]:
    """ALTER … CONNECTION LIMIT for the roles and databases the refusals name, with the real names
    quoted as quote_ident writes them."""
    statements = []
    for role in top_values(limits[limits["event"] == "role_conn_limit"], "user"):
        if role not in NO_NAME:
            statements.append(f"ALTER ROLE {sql_name(role, '<role>')} CONNECTION LIMIT <n>")
    for database in top_values(limits[limits["event"] == "database_conn_limit"], "database"):
        if database not in NO_NAME:
            statements.append(f"ALTER DATABASE {sql_name(database, '<db>')} CONNECTION LIMIT <n>")
    return statements or [
        "ALTER ROLE <role> CONNECTION LIMIT <n>",
        "ALTER DATABASE <db> CONNECTION LIMIT <n>",
    ]


def little_law_sizes(evidence: Evidence) -> list[dict[str, object]]:
    """Per application: idle and active counts over the window and a pool size from observed concurrency.

    Little's law: connections in use = arrival rate x time held, which the sampler observes directly as
    the number of active backends; size the pool for its 95th percentile plus headroom.
    """
    samples, ticks = app_samples(evidence), evidence.activity_ticks
    sizes: list[dict[str, object]] = []
    for app, ours in samples.groupby("application_name") if not samples.empty else []:
        per_state = counts_over_time(ours, ticks, ["state"])
        total = per_state.sum(axis=1)
        active = per_state.get("active", total * 0)
        idle = per_state.get("idle", total * 0)
        p95_active = float(active.quantile(SIZING_QUANTILE))
        sizes.append(
            {
                "application_name": str(app) or "(none)",
                "median_total": float(total.median()),
                "median_idle": float(idle.median()),
                "p95_active": p95_active,
                "suggested_max_size": max(SIZING_MIN, int(np.ceil(p95_active * SIZING_HEADROOM)) + 1),
            }
        )
    return sizes


def find_oversized_idle_pools(evidence: Evidence) -> list[Finding]:
    """POOL-004 (info): an application keeping OVERSIZED_MIN_CONNECTIONS or more, mostly idle, where
    observed concurrency asks for fewer (Little's law)."""
    findings = []
    for size in little_law_sizes(evidence):
        total, idle = float(str(size["median_total"])), float(str(size["median_idle"]))
        oversized = total >= OVERSIZED_MIN_CONNECTIONS and idle / total >= OVERSIZED_IDLE_SHARE
        if not oversized or int(str(size["suggested_max_size"])) >= total:
            continue
        findings.append(
            Finding(
                id="POOL-004",
                category="pool_config",
                severity=Severity.INFO,
                confidence=CONFIDENCE_OVERSIZED,
                title=(
                    f"{size['application_name']} keeps {total:.0f} connections of which {idle:.0f} idle; "
                    "observed "
                    f"concurrency suggests max_size ≈ {size['suggested_max_size']}"
                ),
                evidence=size,
                recommendation=(
                    "Idle pooled connections cost server memory and slots and are the first victims of idle "
                    "timeouts and NAT cut-offs. Size the pool from concurrency: "
                    f"max_size={size['suggested_max_size']} "
                    "and a small min_size (psycopg_pool: `ConnectionPool(min_size=2, max_size=…)`)."
                ),
            )
        )
    return findings


def find_pool_waits(evidence: Evidence) -> list[Finding]:
    """POOL-005: pool-wait timeouts in the application log while, in the seconds before them, its
    connections were mostly active (when mostly idle then, they are held, not used: LEAK-004). The
    rest of the window does not count: a saturated pool goes idle once the load has passed.
    """
    waits = app_events(evidence, "pool_timeout", "pool_queue_full")
    if waits.empty:
        return []
    idle, active, ticks = held_and_busy_before(evidence, waits)
    if idle > active:
        return []  # connections were held idle when requests waited: the leak diagnosis (LEAK-004)
    return [
        Finding(
            id="POOL-005",
            category="pool_config",
            severity=Severity.WARNING,
            confidence=CONFIDENCE_POOL_WAITS,
            title=(
                f"{len(waits)} request(s) timed out waiting for a pooled connection while the pool was busy"
            ),
            evidence={
                "app_errors": len(waits),
                "active_before_waits": active,
                "idle_before_waits": idle,
                "ticks_before_waits": ticks,
                **first_last(waits),
            },
            recommendation=(
                "Every connection was busy running queries: the pool is too small for the load or the "
                "queries "
                "are too slow. Size the pool from concurrency (see POOL-004's Little's-law figure) within "
                "the "
                "server's free slots, and look at the slow statements first."
            ),
        )
    ]


def diagnose(evidence: Evidence) -> list[Finding]:
    """Every pool-configuration finding (POOL-001..005) of this evidence."""
    return (
        find_usage_near_limit(evidence)
        + find_rejections(evidence)
        + find_oversized_idle_pools(evidence)
        + find_pool_waits(evidence)
    )

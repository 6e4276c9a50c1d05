"""Pool configuration: the pools and the server's limits do not fit together."""

from __future__ import annotations

from playbook.collect.settings import usable_connections
from playbook.diagnose.findings import Finding, Severity
from playbook.evidence import Evidence

USAGE_WARNING = 0.8
USAGE_CRITICAL = 0.95


def peak_usage(evidence: Evidence) -> tuple[int, int | None]:
    """The most client backends seen in one tick (the playbook's own included: they use slots too)."""
    ticks = evidence.frame("activity_ticks")
    peak = int(ticks.loc[ticks["ok"].astype(bool), "backends"].max()) if not ticks.empty else 0
    return peak + 1, usable_connections(evidence.settings)  # +1: the sampler's own slot


def find_usage_near_limit(evidence: Evidence) -> list[Finding]:
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
            confidence=0.7,
            title=f"peak {peak} connections of {usable} usable ({ratio:.0%}): near the limit",
            evidence={"peak_connections": peak, "usable_connections": usable, "ratio": round(ratio, 3)},
            recommendation=(
                "Make the sum of every pool's max_size fit below max_connections minus the reserved slots, "
                "with room for admin and migrations; put PgBouncer (pool_mode = transaction) in front when "
                "many processes each keep their own pool."
            ),
        )
    ]


def diagnose(evidence: Evidence) -> list[Finding]:
    return find_usage_near_limit(evidence)

"""Causes and their consequences: a side effect of one cause is never a second root cause.

A network cut leaves sessions on the server that the application already lost (they look like a
growing "leak"); a leak drains the pool and the slots (they look like pool waits and refusals); a
restart or a crash ends the playbook's own session too. Each rule below names the finding that
follows and the causes it may follow from, most specific first. A linked finding carries
`consequence_of` (the cause's id), is capped at warning, is ranked right below its cause and is
left out of root_causes. Sizing advice (POOL-004) is dropped outright while the pool is leaking
or exhausted: shrinking such a pool makes the outage worse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from playbook.diagnose.findings import Finding, Severity
from playbook.vocabulary.findings import FINDINGS, LEAKS, NETWORK_LOSSES, SERVER_ENDINGS

__all__ = ["DROPPED_WHILE", "LEAKS", "LINKS", "NETWORK_LOSSES", "SERVER_ENDINGS", "Link", "link_consequences"]


def _not_growing_in_a_transaction(finding: Finding) -> bool:
    # Growth in "idle in transaction" is the application's own leak, whatever the path did.
    return not str(finding.evidence.get("growth_state", "")).startswith("idle in transaction")


def _growing_leak(finding: Finding) -> bool:
    return finding.id != "LEAK-002" or finding.consequence_of is None


@dataclass(frozen=True)
class Link:
    consequence: str
    causes: tuple[str, ...]
    why: str
    applies: Callable[[Finding], bool] = lambda _: True


LINKS = (
    Link(
        "LEAK-002",
        NETWORK_LOSSES,
        "sessions the server still holds after the application lost them on the path",
        _not_growing_in_a_transaction,
    ),
    Link("LEAK-004", ("LEAK-005", "LEAK-001"), "the held transactions are what holds the connections"),
    Link("POOL-005", LEAKS, "requests wait because connections are held, not because the pool is small"),
    Link(
        "POOL-005",
        ("NET-004", "NET-006"),
        "new connections fail, so the pool cannot replace the ones it loses",
    ),
    Link("POOL-002", ("LEAK-002",), "the growing connections fill the server's slots"),
    Link("POOL-001", ("LEAK-002",), "the growing connections fill the server's slots"),
    Link("SRV-001", ("SRV-002",), "the crash made the postmaster reinitialize"),
    Link("NET-005", SERVER_ENDINGS, "the server ended the playbook's own session too"),
    Link("NET-002", SERVER_ENDINGS, "the server ended those sessions itself"),
)
# Which findings withdraw which (sizing advice while the pool leaks): the specs say.
DROPPED_WHILE = {spec.id: spec.dropped_while for spec in FINDINGS.values() if spec.dropped_while}


def link_consequences(findings: list[Finding]) -> list[Finding]:
    """The findings with consequences linked to their causes (see the module's rules)."""
    harmful = {f.id: f for f in findings if f.severity is not Severity.INFO}
    linked: list[Finding] = []
    for finding in findings:
        if finding.id in DROPPED_WHILE and any(c in harmful for c in DROPPED_WHILE[finding.id]):
            continue
        linked.append(_linked(finding, harmful))
    return linked


def _linked(finding: Finding, harmful: dict[str, Finding]) -> Finding:
    for link in LINKS:
        if link.consequence != finding.id or not link.applies(finding):
            continue
        cause = next(
            (
                harmful[c]
                for c in link.causes
                if c in harmful and c != finding.id and _growing_leak(harmful[c])
            ),
            None,
        )
        if cause is None or cause.consequence_of is not None:
            continue
        capped = Severity.WARNING if finding.severity is Severity.CRITICAL else finding.severity
        return replace(
            finding,
            severity=capped,
            consequence_of=cause.id,
            title=f"{finding.title} (follows from {cause.id}: {link.why})",
            evidence={**finding.evidence, "consequence_of": cause.id},
        )
    return finding

"""Pure functions from collected evidence to findings: no connection, no I/O."""

from __future__ import annotations

from playbook.diagnose import leak, network, pgbouncer_findings, pool_config, server, timeout
from playbook.diagnose.consequences import link_consequences
from playbook.diagnose.findings import CATEGORIES, Finding, Severity
from playbook.diagnose.unexplained import find_unexplained_errors
from playbook.evidence import Evidence

DIAGNOSES = (
    leak.diagnose,
    timeout.diagnose,
    network.diagnose,
    pool_config.diagnose,
    server.diagnose,
    pgbouncer_findings.diagnose,
)


def diagnose_all(evidence: Evidence) -> list[Finding]:
    """Every finding, worst first, each consequence right below its cause; ids are stable so
    alerts can route on them."""
    findings = [finding for diagnose in DIAGNOSES for finding in diagnose(evidence)]
    findings = link_consequences(findings + find_unexplained_errors(evidence, findings))
    by_id = {f.id: f for f in findings}

    def rank(finding: Finding) -> tuple[int, float, str, int, str]:
        root = by_id.get(finding.consequence_of or "", finding)
        return (
            -root.severity.rank,
            -root.confidence,
            root.id,
            finding.consequence_of is not None,
            finding.id,
        )

    return sorted(findings, key=rank)


def rank_root_causes(findings: list[Finding]) -> list[dict[str, object]]:
    """One entry per category with a warning or critical finding that is not a consequence of
    another, most likely first."""
    ranked: list[tuple[int, float, str, Finding]] = []
    for category in CATEGORIES:
        ours = [
            f
            for f in findings
            if f.category == category and f.severity is not Severity.INFO and f.consequence_of is None
        ]
        if ours:
            top = max(ours, key=lambda f: (f.severity.rank, f.confidence))
            ranked.append((-top.severity.rank, -top.confidence, category, top))
    return [
        {
            "category": category,
            "severity": top.severity.value,
            "confidence": round(top.confidence, 2),
            "summary": top.title,
            "layer": top.layer,
            "finding": top.id,
        }
        for _, _, category, top in sorted(ranked, key=lambda r: r[:3])
    ]

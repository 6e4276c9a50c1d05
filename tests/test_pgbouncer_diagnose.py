"""The pooler diagnosis from raw materials recorded on real lab runs (PgBouncer 1.18, psycopg_pool):
the logs go through the real readers, the console frames are the sampler's own parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from playbook.collect.applog import read_app_logs
from playbook.collect.pgbouncer_log import read_pgbouncer_logs
from playbook.diagnose import pooler
from playbook.diagnose.findings import Finding, Severity
from playbook.evidence import Evidence

RECORDED = Path(__file__).parent / "data" / "pgbouncer"
EXPECTED = {
    "pgbouncer_idle_timeout": ("BNC-001", "timeout"),
    "pgbouncer_saturation": ("BNC-004", "pool_config"),
}


def recorded(name: str) -> Evidence:
    folder = RECORDED / name
    evidence = Evidence(
        manifest={},
        frames={p.stem: pd.read_parquet(p) for p in folder.glob("*.parquet")},
        snapshots={p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")},
    )
    evidence.frames["pgbouncer_log_events"] = read_pgbouncer_logs([folder / "pgbouncer.log"]).events
    app_log = read_app_logs([folder / "app.log"])
    evidence.frames["app_log_events"] = app_log.events
    evidence.snapshots["app_log_summary"] = {"primary_stack": app_log.primary_stack}
    return evidence


def worst(findings: list[Finding]) -> Finding:
    return max(findings, key=lambda f: (f.severity.rank, f.confidence))


@pytest.mark.parametrize(("scenario", "expected"), sorted(EXPECTED.items()))
def test_each_recorded_incident_is_named_by_its_finding(scenario: str, expected: tuple[str, str]) -> None:
    findings = pooler.diagnose(recorded(scenario))
    fid, category = expected
    top = worst(findings)
    assert top.id == fid and top.category == category and top.severity is Severity.CRITICAL, findings
    for finding in findings:
        assert finding.id.startswith("BNC-") and finding.recommendation.strip() and finding.evidence


def test_the_timeout_finding_names_the_setting_and_the_client_fix() -> None:
    (finding,) = [f for f in pooler.diagnose(recorded("pgbouncer_idle_timeout")) if f.id == "BNC-001"]
    assert finding.evidence["client_idle_timeout"] == 2
    assert finding.evidence["setting_source"] == "SHOW CONFIG"
    assert finding.evidence["app_errors"] > 0
    assert "max_idle" in finding.recommendation and "client_idle_timeout = 0" in finding.recommendation


def test_saturation_is_seen_in_the_console_too() -> None:
    findings = {f.id: f for f in pooler.diagnose(recorded("pgbouncer_saturation"))}
    assert findings["BNC-010"].evidence["peak_cl_waiting"] > 0
    assert "default_pool_size" in findings["BNC-004"].recommendation


RECYCLING_ONLY = """\
2024-05-01 12:00:00.000 UTC [9] LOG S-0x1: app/app@10.0.1.5:5432 closing because: server idle timeout (age=601s)
2024-05-01 12:10:00.000 UTC [9] LOG S-0x2: app/app@10.0.1.5:5432 closing because: server lifetime over (age=3601s)
2024-05-01 12:20:00.000 UTC [9] LOG S-0x3: app/app@10.0.1.5:5432 closing because: obsolete connection (age=30s)
2024-05-01 12:30:00.000 UTC [9] LOG S-0x4: app/app@10.0.1.5:5432 closing because: evicted (age=12s)
2024-05-01 12:31:00.000 UTC [9] LOG C-0x5: app/app@10.0.3.7:5555 closing because: client close request (age=900s)
"""  # noqa: E501


def test_recycling_alone_is_never_an_incident(tmp_path: Path) -> None:
    path = tmp_path / "pgbouncer.log"
    path.write_text(RECYCLING_ONLY * 20)
    evidence = Evidence(frames={"pgbouncer_log_events": read_pgbouncer_logs([path]).events})
    findings = pooler.diagnose(evidence)
    assert [f.id for f in findings] == ["BNC-090"]
    assert findings[0].severity is Severity.INFO


def test_no_pooler_evidence_no_finding() -> None:
    assert pooler.diagnose(Evidence()) == []


def test_server_trouble_absorbed_by_the_pooler_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "pgbouncer.log"
    path.write_text(
        "2024-05-01 12:00:00.000 UTC [9] LOG S-0x1: app/app@10.0.1.5:5432 closing because: server conn "
        "crashed? (age=61s)\n"
    )
    evidence = Evidence(
        frames={"pgbouncer_log_events": read_pgbouncer_logs([path]).events},
        snapshots={"settings": {"settings": {"idle_session_timeout": {"setting": "60000", "unit": "ms"}}}},
    )
    (finding,) = pooler.diagnose(evidence)
    assert finding.id == "BNC-030" and finding.severity is Severity.WARNING and finding.category == "server"
    assert "server_idle_timeout = 30" in finding.recommendation

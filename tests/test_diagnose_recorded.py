"""Every finding id of the README asserted from evidence recorded on real lab incidents.

The folders named here were recorded by tests/data/evidence/record.py (one lab server per
incident, real psycopg_pool clients, the chaos proxy where the path matters, the playbook's own
collection); the demo's folders are read too for the id coverage. No server is needed.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from playbook.diagnose import diagnose_all, rank_root_causes
from playbook.diagnose.findings import Finding, Severity
from playbook.evidence import Evidence

RECORDED = Path(__file__).parent / "data" / "evidence"
README = Path(__file__).parents[1] / "README.md"

# folder -> (the finding the incident was made for, its category, the severity it should carry)
INCIDENTS = {
    # three or more clients gone mid-transaction is critical
    "client_gone_in_transaction": ("LEAK-003", "leak", Severity.CRITICAL),
    # requests fail now because held connections emptied the pool
    "pool_held_not_used": ("LEAK-004", "leak", Severity.CRITICAL),
    # sessions are being killed
    "transaction_timeout": ("TMO-003", "timeout", Severity.CRITICAL),
    # statements fail, sessions survive
    "statement_lock_timeout": ("TMO-004", "timeout", Severity.WARNING),
    # no kill yet in the window, but the pool idles its sessions past the limit
    "idle_session_timeout_role": ("TMO-005", "timeout", Severity.WARNING),
    # slow, but every connect succeeded
    "slow_connects": ("NET-004", "network", Severity.WARNING),
    "own_session_reset": ("NET-005", "network", Severity.WARNING),
    # an application-level hop cuts idle flows at 3 s and keepalives do not help: critical
    "path_probed": ("NET-007", "network", Severity.CRITICAL),
    # logins refused
    "role_connection_limit": ("POOL-003", "pool_config", Severity.CRITICAL),
    # a cost, not an outage
    "oversized_idle_pool": ("POOL-004", "pool_config", Severity.INFO),
    # logins fail with a rotated password: none of the five causes, and the report must say so
    "password_rotated": ("NET-006", "network", Severity.WARNING),
}
MAX_FOLDER_BYTES = 200 * 1024


@cache
def findings_of(folder: str) -> tuple[Finding, ...]:
    return tuple(diagnose_all(Evidence.load(RECORDED / folder)))


def the(folder: str, finding_id: str) -> Finding:
    found = [f for f in findings_of(folder) if f.id == finding_id]
    assert found, f"{finding_id} not in {[f.id for f in findings_of(folder)]}"
    return found[0]


def recorded_folders() -> list[str]:
    return sorted(p.name for p in RECORDED.iterdir() if (p / "manifest.json").exists())


def readme_finding_ids() -> list[str]:
    """Every id of the README's findings table, shorthand like `TMO-001/002/003` expanded."""
    text = README.read_text()
    section = text.split("### Findings (stable ids)", 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append(line)
    ids: list[str] = []
    for row in rows[1:]:  # the header row names no id
        for prefix, first, more in re.findall(r"\b([A-Z]+)-(\d{3})((?:/\d{3})*)", row):
            ids += [f"{prefix}-{n}" for n in [first, *more.split("/")[1:]]]
    return sorted(set(ids))


def test_the_readme_table_is_read_whole() -> None:
    ids = readme_finding_ids()
    for expected in ("LEAK-001", "LEAK-004", "TMO-003", "NET-005", "POOL-003", "SRV-002", "SRV-004"):
        assert expected in ids
    assert len(ids) >= 23


@pytest.mark.parametrize("finding_id", readme_finding_ids())
def test_every_readme_finding_has_recorded_evidence(finding_id: str) -> None:
    assert any(finding_id in {f.id for f in findings_of(folder)} for folder in recorded_folders()), (
        f"no folder in {RECORDED} makes the diagnosis find {finding_id}: record an incident for it "
        "(tests/data/evidence/record.py)"
    )


@pytest.mark.parametrize(("folder", "expected"), sorted(INCIDENTS.items()))
def test_each_recorded_incident_is_named_by_its_finding(
    folder: str, expected: tuple[str, str, Severity]
) -> None:
    finding_id, category, severity = expected
    finding = the(folder, finding_id)
    assert finding.category == category
    assert finding.severity is severity, (finding.severity, finding.title)
    assert finding.recommendation.strip() and finding.evidence
    if severity is not Severity.INFO:
        causes = rank_root_causes(list(findings_of(folder)))
        assert category in [c["category"] for c in causes], causes


@pytest.mark.parametrize("folder", sorted(INCIDENTS))
def test_the_folders_come_from_a_real_collection_and_stay_small(folder: str) -> None:
    path = RECORDED / folder
    manifest = Evidence.load(path).manifest
    assert {"settings", "probes", "activity", "server_log", "app_log"} <= set(manifest["collected"])
    assert 10 <= manifest["window"]["duration_s"] <= 25
    assert sum(p.stat().st_size for p in path.iterdir()) <= MAX_FOLDER_BYTES


def test_clients_killed_mid_transaction_are_counted_from_the_server_log() -> None:
    finding = the("client_gone_in_transaction", "LEAK-003")
    assert sum(finding.evidence["users"].values()) >= 3
    assert finding.evidence["first_seen"] < finding.evidence["last_seen"]


def test_held_connections_outnumber_busy_ones_when_the_pool_times_out() -> None:
    finding = the("pool_held_not_used", "LEAK-004")
    assert finding.evidence["app_errors"] > 0
    assert finding.evidence["idle_before_timeouts"] > finding.evidence["active_before_timeouts"]
    assert "POOL-005" not in {f.id for f in findings_of("pool_held_not_used")}  # not "the pool is too small"


def test_transaction_timeout_kills_are_seen_on_both_sides() -> None:
    finding = the("transaction_timeout", "TMO-003")
    assert finding.evidence["server_log_events"] > 0 and finding.evidence["app_log_errors"] > 0
    assert finding.evidence["overrides"] and finding.evidence["overrides"][0]["value"] == "1s"
    assert "NET-002" not in {f.id for f in findings_of("transaction_timeout")}  # the server said why


def test_statement_and_lock_timeouts_are_both_counted() -> None:
    finding = the("statement_lock_timeout", "TMO-004")
    assert set(finding.evidence["server_log_events"]) == {"statement_timeout", "lock_timeout"}
    assert finding.evidence["app_log_errors"] > 0
    assert not {"TMO-001", "TMO-002", "TMO-003"} & {f.id for f in findings_of("statement_lock_timeout")}


def test_the_role_timeout_is_shorter_than_what_the_pool_really_idles() -> None:
    finding = the("idle_session_timeout_role", "TMO-005")
    assert finding.evidence["timeout_s"] == 3
    assert finding.evidence["scope"].startswith("role lab_app")
    assert finding.evidence["observed_idle_s"] > finding.evidence["timeout_s"]  # past the limit, observed
    assert "TMO-001" not in {f.id for f in findings_of("idle_session_timeout_role")}


def test_slow_connects_are_measured_from_this_host() -> None:
    probe = the("slow_connects", "NET-004").evidence["connect_probe"]
    assert probe["failures"] == 0 and probe["p95_ms"] >= 500


def test_the_playbooks_own_lost_session_is_a_gap_with_no_server_reason() -> None:
    finding = the("own_session_reset", "NET-005")
    gaps = finding.evidence["gaps"]
    assert len(gaps) == 2 and all(g["end"] for g in gaps)  # lost twice, reconnected twice
    assert not any((g["sqlstate"] or "").startswith("57") for g in gaps)


def test_the_probed_cut_off_is_the_hops_idle_timeout() -> None:
    """The proxy reset flows idle 3 s counting payload only: the probe (rungs 1, 2, 4, 8 s) measured
    that cut, saw it reset, and saw keepalives not help."""
    path = the("path_probed", "NET-007").evidence["path"]
    assert 2.9 <= path["idle_cutoff_s"] <= 3.5
    assert path["how"] == "reset" and path["keepalives_help"] is False
    assert path["survived_up_to_s"] == 2.0 and path["failed_from_s"] == 4.0


def test_role_limit_refusals_name_the_role_and_its_limit() -> None:
    finding = the("role_connection_limit", "POOL-003")
    assert finding.evidence["events"] == {"role_conn_limit": finding.evidence["events"]["role_conn_limit"]}
    assert "lab_app" in finding.evidence["users"]
    assert {"role": "lab_app", "conn_limit": 3} in [
        {k: r[k] for k in ("role", "conn_limit")} for r in finding.evidence["role_limits"]
    ]


def test_an_oversized_pool_is_sized_from_observed_concurrency() -> None:
    finding = the("oversized_idle_pool", "POOL-004")
    assert finding.evidence["application_name"] == "catalog"
    assert finding.evidence["median_total"] >= 20
    assert finding.evidence["suggested_max_size"] < 10


def test_role_limit_refusals_are_not_also_blamed_on_max_connections() -> None:
    """The application's 'too many connections for role' is the same wording family as 53300 slots:
    with the server log naming the role limit, they are POOL-003's, not POOL-002's."""
    assert "POOL-002" not in {f.id for f in findings_of("role_connection_limit")}

"""playbook demo end to end on two scenarios: a real incident found, a healthy service left alone."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli


def test_demo_scores_real_scenarios_and_writes_its_scorecard(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    scenarios = "healthy,admin_terminate,idle_session_timeout"
    result = run_cli("demo", "--out", str(out), "--duration", "6", "--scenarios", scenarios)
    assert result.returncode == 0, result.stdout + result.stderr
    scores = {s["scenario"]: s for s in json.loads((out / "scorecard.json").read_text())}
    assert scores["admin_terminate"]["top_cause"] == "server" and scores["admin_terminate"]["passed"]
    assert scores["healthy"]["top_cause"] is None and scores["healthy"]["passed"]
    page = (out / "index.html").read_text()
    assert "3 of\n3 scenarios" in page or "3 of 3" in page.replace("\n", " ")
    assert 'href="admin_terminate/index.html"' in page
    summary = json.loads((out / "admin_terminate" / "summary.json").read_text())
    assert any(f["id"] == "SRV-003" for f in summary["findings"])
    assert "3/3 passed" in result.stdout
    # fix and prove: the idle-session timeout's top finding's fix applied, the scenario rerun
    proof = json.loads((out / "fix_and_prove.json").read_text())
    assert proof["scenario"] == "idle_session_timeout" and proof["finding"] == "TMO-001", proof
    assert proof["before_errors"] == scores["idle_session_timeout"]["app_errors"] > 0
    assert proof["after_errors"] == 0 and proof["cured"], proof
    said = f"before: {proof['before_errors']} errors in"
    assert said in result.stdout and "after: 0 errors in" in result.stdout
    assert f"before: {proof['before_errors']} errors</strong>" in page and "after: 0 errors</strong>" in page


def test_demo_rejects_an_unknown_scenario(tmp_path: Path) -> None:
    result = run_cli("demo", "--out", str(tmp_path), "--scenarios", "healthy,meteor")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unknown scenario 'meteor'" in result.stderr

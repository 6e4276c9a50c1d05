"""playbook demo end to end on two scenarios: a real incident found, a healthy service left alone."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli


def test_demo_scores_real_scenarios_and_writes_its_scorecard(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--duration", "6", "--scenarios", "healthy,admin_terminate")
    assert result.returncode == 0, result.stdout + result.stderr
    scores = {s["scenario"]: s for s in json.loads((out / "scorecard.json").read_text())}
    assert scores["admin_terminate"]["top_cause"] == "server" and scores["admin_terminate"]["passed"]
    assert scores["healthy"]["top_cause"] is None and scores["healthy"]["passed"]
    page = (out / "index.html").read_text()
    assert "2 of\n2 scenarios" in page or "2 of 2" in page.replace("\n", " ")
    assert 'href="admin_terminate/index.html"' in page
    summary = json.loads((out / "admin_terminate" / "summary.json").read_text())
    assert any(f["id"] == "SRV-003" for f in summary["findings"])
    assert "2/2 passed" in result.stdout


def test_demo_rejects_an_unknown_scenario(tmp_path: Path) -> None:
    result = run_cli("demo", "--out", str(tmp_path), "--scenarios", "healthy,meteor")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unknown scenario 'meteor'" in result.stderr

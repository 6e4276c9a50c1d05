"""The history of scheduled runs: records, counter deltas, retention, the trend page, --since last."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import refused_port, run_cli
from playbook.cli import main
from playbook.report.history import apply_retention, counter_deltas, last_stop, load_records, record_run

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=timezone.utc)


def stats(killed: int, reset: str = "2026-10-01") -> list[dict[str, Any]]:
    return [
        {
            "database": "app",
            "sessions": 100 + killed,
            "sessions_abandoned": 2,
            "sessions_fatal": 1,
            "sessions_killed": killed,
            "stats_reset": reset,
        }
    ]


def record(history: Path, hours: float, status: str, killed: int, report: Path | None = None) -> Path:
    finished = T0 + timedelta(hours=hours)
    summary = {
        "status": status,
        "target": {"dsn": "host=db"},
        "window": {},
        "root_causes": [],
        "findings": [{"id": "LEAK-001", "severity": status, "category": "leak", "title": "t"}]
        if status != "ok"
        else [],
    }
    aggregated = {
        "peak_connections": 10 + int(hours),
        "usable_connections": 97,
        "events": {"leak": int(hours)},
        "gaps": 0,
        "database_stats": stats(killed),
    }
    return record_run(
        history,
        summary=summary,
        aggregated=aggregated,
        report=report,
        started_at=finished - timedelta(minutes=1),
        finished_at=finished,
        logs_until=finished,
    )


def test_counter_deltas_and_resets() -> None:
    previous = {"finished_at": T0.isoformat(), "database_stats": stats(3)}
    delta = counter_deltas(previous, stats(5), T0 + timedelta(hours=1))
    assert delta is not None and delta["seconds"] == 3600 and delta["reset"] == []
    assert delta["databases"][0] | {} == {
        "database": "app",
        "sessions": 2,
        "sessions_abandoned": 0,
        "sessions_fatal": 0,
        "sessions_killed": 2,
    }
    after_reset = counter_deltas(previous, stats(1, reset="2026-11-01"), T0 + timedelta(hours=1))
    assert after_reset is not None and after_reset["reset"] == ["app"]
    assert after_reset["databases"][0]["sessions_killed"] == 1
    assert counter_deltas(None, stats(1), T0) is None


def test_retention_and_the_trend_page(tmp_path: Path) -> None:
    history = tmp_path / "history"
    report = tmp_path / "report.html"
    report.write_text("<p>the report</p>")
    for hours, status in enumerate(["ok", "warning", "critical", "warning"]):
        record(history, hours * 24, status, killed=hours, report=report)
    assert last_stop(history) == T0 + timedelta(hours=72)
    oldest = load_records(history)[0]["folder"]
    assert apply_retention(history, keep=3, now=T0 + timedelta(hours=72)) == [oldest]
    assert len(apply_retention(history, keep_days=1.5, now=T0 + timedelta(hours=72))) == 1
    result = run_cli("history", str(history), "--keep", "5")
    assert result.returncode == 0, result.stderr
    assert "2 run(s) kept, 0 removed" in result.stdout
    page = (history / "index.html").read_text()
    assert page.count('href="runs/') == 2 and 'class="status critical">critical<' in page
    for folder in (history / "runs").iterdir():
        assert (
            json.loads((folder / "record.json").read_text())["schema"]
            == "pg-session-playbook/history-record/v1"
        )
        assert (folder / "report.html").read_text() == "<p>the report</p>"


def test_history_and_since_last_refuse_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", str(tmp_path / "none")]) == 3
    assert "is not a history folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["history", str(tmp_path), "--keep", "0"])
    assert exit_info.value.code == 3
    assert main(["run", "--offline", "--server-log", "x.log", "--since", "last"]) == 3
    assert "--since last needs --history DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--notify", "hooks.slack.com/x"])
    assert exit_info.value.code == 3 and "is not an http(s) URL" in capsys.readouterr().err


def test_a_run_that_cannot_connect_is_recorded_and_leaves_no_blind_spot(tmp_path: Path) -> None:
    """A scheduled run refused by the server is a row in the history (status error, its reason),
    and `--since last` still starts where the last run that read logs stopped."""
    history = tmp_path / "history"
    record(history, 0, "ok", killed=1)
    port = refused_port()
    dsn = f"host=127.0.0.1 port={port} user=nobody dbname=nothing connect_timeout=5"
    out = tmp_path / "out"
    out.mkdir()  # the previous run's report: not this failed run's, which published none
    (out / "summary.json").write_text("{}")
    (out / "report.html").write_text("<p>the previous run's report</p>")
    result = run_cli("run", "--dsn", dsn, "--history", str(history), "--out", str(out))
    assert result.returncode == 3, result.stderr
    records = load_records(history)
    assert [r["status"] for r in records] == ["ok", "error"]
    failed = records[-1]
    assert failed["logs_until"] is None and failed["report"] is None
    assert f"port {port}" in failed["error"] or str(port) in failed["error"], failed["error"]
    assert last_stop(history) == T0  # the failed run moved nothing: its time is read next time
    page = (history / "index.html").read_text()
    assert 'class="status error">error<' in page and "no diagnosis: " in page
    assert not (history / "runs" / failed["folder"] / "report.html").exists()
    assert (out / "report.html").read_text() == "<p>the previous run's report</p>"  # left intact

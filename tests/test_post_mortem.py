"""Diagnosis without a live connection: a server that locks the playbook out, and a post-mortem
from a bundle of logs (`--offline`), each on a real incident of a real server."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from conftest import run_cli
from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.wait import wait_until
from playbook.report.summary import validate

# The application's host runs in local time: its log's naive times are read in --app-tz.
APP_TZ = "America/Sao_Paulo"


def app_logger(path: Path, name: str) -> logging.Logger:
    """A logger the way applications configure one: Python's default asctime (naive local time)."""
    logger = logging.getLogger(f"post-mortem-{name}-{id(path)}")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    return logger


@pytest.fixture
def sao_paulo_clock() -> Iterator[None]:
    """The test process's local zone is the application's: its log lines carry that naive time."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = APP_TZ
    import time

    time.tzset()
    yield
    if previous is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = previous
    time.tzset()


def summary_of(out: Path) -> dict[str, object]:
    summary: dict[str, object] = json.loads((out / "summary.json").read_text())
    validate(summary)
    return summary


def test_a_server_with_no_free_slot_is_diagnosed_from_its_logs(
    private_lab: LabServer, tmp_path: Path
) -> None:
    """Every slot is taken: the playbook is refused (53300) and says so, and the logs it was given
    name the cause. The refusal itself is evidence of the same cause."""
    private_lab.alter_system({"max_connections": 8})
    private_lab.restart()
    started = datetime.now(timezone.utc)
    app_log = tmp_path / "app.log"
    logger = app_logger(app_log, "slots")
    held: list[psycopg.Connection] = []
    try:
        while True:  # the application's pool grows until the server refuses it
            try:
                held.append(psycopg.connect(private_lab.dsn(APP_ROLE), application_name="billing"))
            except psycopg.OperationalError:
                logger.exception("could not get a database connection")
                break
            if len(held) > 20:
                pytest.fail("the server never ran out of slots")
        wait_until(
            lambda: "remaining connection slots are reserved" in private_lab.stderr_log.read_text(),
            timeout=30,
            what="the refusal in the server log",
        )
        out = tmp_path / "report"
        result = run_cli(
            "run", "--dsn", private_lab.dsn(), "--duration", "1", "--notebooks", "triage",
            "--server-log", str(private_lab.stderr_log), "--app-log", str(app_log),
            "--since", (started - timedelta(seconds=1)).isoformat(), "--out", str(out),
        )  # fmt: skip
    finally:
        for conn in held:
            conn.close()
    assert "diagnosing from the logs alone" in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    summary = summary_of(out)
    target = summary["target"]
    assert isinstance(target, dict) and target["live"] is False
    assert "no free connection slot" in str(target["not_live_reason"])
    causes = summary["root_causes"]
    assert isinstance(causes, list) and causes[0]["category"] == "pool_config"
    findings = {f["id"]: f for f in summary["findings"]}  # type: ignore[union-attr]
    assert findings["POOL-002"]["evidence"]["playbook_refused"]
    assert all(nb["status"] == "ok" for nb in summary["notebooks"])  # type: ignore[union-attr]
    index = (out / "index.html").read_text()
    assert "No live evidence" in index


def test_an_offline_post_mortem_reads_the_bundle_in_its_zones(
    private_lab: LabServer, tmp_path: Path, sao_paulo_clock: None
) -> None:
    """Yesterday's incident from its logs alone: no DSN, no PG* variables, the server gone. The
    server logs in its own zone (Asia/Kolkata, +05:30), the application in naive local time."""
    private_lab.alter_system({"log_timezone": "Asia/Kolkata", "idle_session_timeout": "1s"})
    private_lab.restart()
    started = datetime.now(timezone.utc)
    app_log = tmp_path / "app.log"
    logger = app_logger(app_log, "offline")
    for _ in range(3):
        conn = psycopg.connect(private_lab.dsn(APP_ROLE), application_name="search")
        pid = conn.info.backend_pid
        wait_until(
            lambda pid=pid: any(
                f"[{pid}]" in line and "idle-session timeout" in line
                for line in private_lab.stderr_log.read_text().splitlines()
            ),
            timeout=30,
            what="this session's idle-session kill in the server log",
        )
        try:
            conn.execute("SELECT 1")
        except psycopg.OperationalError:
            logger.exception("request failed")
        conn.close()
    ended = datetime.now(timezone.utc)
    private_lab.down()
    env = {k: "" for k in os.environ if k.startswith("PG")} | {"PLAYBOOK_DSN": ""}
    out = tmp_path / "report"
    result = run_cli(
        "run", "--offline", "--server-log", str(private_lab.stderr_log), "--app-log", str(app_log),
        "--app-tz", APP_TZ, "--log-tz", "Asia/Kolkata", "--notebooks", "triage,timeouts",
        "--since", started.isoformat(), "--until", (ended + timedelta(seconds=5)).isoformat(),
        "--out", str(out),
        env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    summary = summary_of(out)
    target = summary["target"]
    assert (
        isinstance(target, dict) and target["live"] is False and "offline" in str(target["not_live_reason"])
    )
    kill = next(f for f in summary["findings"] if f["id"] == "TMO-001")  # type: ignore[union-attr]
    assert kill["evidence"]["server_log_events"] == 3
    assert kill["evidence"]["applications"] == {"search": 3}
    # Both clocks read right: the application's errors and the server's kills fall in the window.
    first, last = datetime.fromisoformat(kill["evidence"]["first_seen"]), kill["evidence"]["last_seen"]
    assert started - timedelta(seconds=1) <= first <= ended
    assert datetime.fromisoformat(last) <= ended + timedelta(seconds=1)
    zones = summary["zones"]
    assert isinstance(zones, dict) and APP_TZ in zones["app_log"] and "Asia/Kolkata" in zones["server_log"]
    assert not [f for f in summary["findings"] if f["id"] == "NET-006"]  # type: ignore[union-attr]
    assert all(nb["status"] == "ok" for nb in summary["notebooks"])  # type: ignore[union-attr]


def test_offline_without_a_log_is_one_sentence(tmp_path: Path) -> None:
    result = run_cli("run", "--offline", "--out", str(tmp_path / "r"))
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "--offline diagnoses from logs" in result.stderr
    both = run_cli("run", "--offline", "--dsn", "host=localhost", "--out", str(tmp_path / "r"))
    assert both.returncode == 3 and "drop --dsn" in both.stderr
    zone = run_cli("run", "--offline", "--log-tz", "Mars/Olympus", "--out", str(tmp_path / "r"))
    assert zone.returncode == 3 and "unknown time zone" in zone.stderr


def test_relevant_notebooks_are_triage_and_the_pages_of_what_was_found(tmp_path: Path) -> None:
    """--notebooks relevant executes triage and the page of every warning or critical finding,
    chosen after the diagnosis; the summary lists exactly those."""
    logs = Path(__file__).parent / "data" / "logs"
    out = tmp_path / "report"
    result = run_cli(
        "run", "--offline", "--server-log", str(logs / "pg18_incident.log"), "--notebooks", "relevant",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    pages = [nb["name"] for nb in summary["notebooks"]]
    found = {f["notebook"] for f in summary["findings"] if f["severity"] in ("warning", "critical")}
    assert pages[0] == "triage" and set(pages) == found | {"triage"}, (pages, found)
    assert "network" not in pages  # nothing found there: its page is not executed
    assert sorted(p.name for p in out.glob("*.html")) == sorted(
        [f"{name}.html" for name in pages] + ["index.html", "report.html"]
    )


NOT_A_SERVER_LOG = "# /etc/services\ntcpmux\t\t1/tcp\necho\t\t7/tcp\nssh\t\t22/tcp\n"


def test_offline_with_no_log_read_is_one_sentence_never_ok(tmp_path: Path) -> None:
    services = tmp_path / "services"
    services.write_text(NOT_A_SERVER_LOG)
    result = run_cli("run", "--offline", "--server-log", str(services), "--out", str(tmp_path / "r"))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no log could be read" in result.stderr and "log_line_prefix" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()


def test_a_log_that_could_not_be_read_is_said_beside_the_verdict(tmp_path: Path) -> None:
    """One source read, another not: the verdict says so, on stderr, in summary.json and on the
    pages; it is never a plain "OK"."""
    services = tmp_path / "services"
    services.write_text(NOT_A_SERVER_LOG)
    app = tmp_path / "app.log"
    app.write_text("2026-11-20 10:00:00,000 INFO app: request served\n")
    out = tmp_path / "r"
    result = run_cli(
        "run", "--offline", "--server-log", str(services), "--app-log", str(app), "--notebooks", "relevant",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "but 1 source(s) could not be read" in result.stdout
    assert "playbook: warning: server log not read: " in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    validate(summary)
    assert summary["evidence_warnings"][0].startswith("server log not read: ")
    for page in ("index.html", "triage.html", "report.html"):
        assert "Evidence warnings:" in (out / page).read_text(), page


def test_a_common_prefix_is_found_and_an_ambiguous_zone_is_said(tmp_path: Path) -> None:
    """'%m [%p] user=%u,db=%d,app=%a,client=%h ' is found without --prefix; IST (India, Ireland or
    Israel) without --log-tz is read as UTC, and the report says so."""
    prefix = "%m [%p] user=%u,db=%d,app=%a,client=%h "
    lines = [
        f"2026-11-20 10:00:0{i}.000 IST [{100 + i}] user=app,db=orders,app=api,client=10.0.0.{i} FATAL:  "
        "terminating connection due to idle-session timeout"
        for i in range(3)
    ]
    log = tmp_path / "postgresql.log"
    log.write_text("\n".join(lines) + "\n")
    for extra in ([], ["--prefix", prefix]):
        out = tmp_path / f"r{len(extra)}"
        result = run_cli("run", "--offline", "--server-log", str(log), "--notebooks", "relevant",
                         "--out", str(out), *extra)  # fmt: skip
        assert result.returncode in (1, 2), result.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert any(f["id"] == "TMO-001" for f in summary["findings"]), summary["findings"]
        assert any("IST" in w and "UTC" in w for w in summary["evidence_warnings"]), summary
        assert "IST" in result.stderr

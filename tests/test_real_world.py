"""Servers and clients set up the way users run them, not the lab's defaults: Debian's default
log_line_prefix (no %a), a busy service whose pool recycles its connections, and a timeout set
per role. The verdicts must hold there too."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import run_cli
from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.wait import wait_until
from playbook.lab.workloads import Service, wait_for_requests
from playbook.report.summary import validate

DEBIAN_PREFIX = "%m [%p] %q%u@%d "  # Debian's default: no application name in the log lines


def run_playbook(lab: LabServer, out: Path, app_log: Path, since: datetime, seconds: str = "4") -> dict:
    result = run_cli(
        "run", "--dsn", lab.dsn(), "--duration", seconds, "--interval", "0.5", "--notebooks", "triage",
        "--server-log", str(lab.stderr_log), "--app-log", str(app_log), "--since", since.isoformat(),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode in (0, 1, 2), result.stderr
    summary: dict = json.loads((out / "summary.json").read_text())
    validate(summary)
    summary["exit_code"] = result.returncode
    return summary


@pytest.fixture
def debian_prefix_lab(private_lab: LabServer) -> LabServer:
    private_lab.alter_system({"log_line_prefix": DEBIAN_PREFIX})
    private_lab.restart()
    return private_lab


def test_kills_are_named_after_the_sampled_application_without_percent_a(
    debian_prefix_lab: LabServer, tmp_path: Path
) -> None:
    """The log lines name no application; the sampler saw every killed pid as `checkout`."""
    lab = debian_prefix_lab
    with lab.admin("lab") as admin:
        admin.execute(f"ALTER ROLE {APP_ROLE} SET idle_session_timeout = '1s'")
    since = datetime.now(timezone.utc)
    app_log = tmp_path / "app.log"
    with Service(
        lab.dsn(APP_ROLE), "checkout", workers=2, min_size=2, max_size=3, app_log=app_log,
        burst_seconds=0.5, idle_gap=1.6,
    ):  # fmt: skip
        wait_until(
            lambda: "idle-session timeout" in lab.stderr_log.read_text(), timeout=30, what="a first kill"
        )
        summary = run_playbook(lab, tmp_path / "report", app_log, since)
    kill = next(f for f in summary["findings"] if f["id"] == "TMO-001")
    applications = kill["evidence"]["applications"]
    assert "checkout" in applications, applications
    assert "(none)" not in applications
    assert "lab_app" in kill["recommendation"]  # the real role, not <app_role>
    assert summary["root_causes"][0]["category"] == "timeout"


def test_a_busy_healthy_service_that_recycles_its_pool_is_ok(private_lab: LabServer, tmp_path: Path) -> None:
    """idle_session_timeout below psycopg_pool's default idle limit, but the pool is busy and
    recycles its connections every few seconds: no connection ever sits idle near the limit and
    no kill is logged, so nothing may page anyone."""
    lab = private_lab
    with lab.admin("lab") as admin:
        admin.execute(f"ALTER ROLE {APP_ROLE} SET idle_session_timeout = '60s'")
    since = datetime.now(timezone.utc)
    app_log = tmp_path / "app.log"
    with Service(
        lab.dsn(APP_ROLE), "catalog", workers=3, min_size=2, max_size=4, app_log=app_log,
        request_interval=0.05, pool_kwargs={"max_lifetime": 3.0},
    ) as service:  # fmt: skip
        wait_for_requests(service, 20)
        summary = run_playbook(lab, tmp_path / "report", app_log, since)
        assert service.requests_failed == 0
    assert summary["status"] == "ok", [(f["id"], f["severity"], f["title"]) for f in summary["findings"]]
    assert summary["exit_code"] == 0
    risk = [f for f in summary["findings"] if f["id"] == "TMO-005"]
    assert all(f["severity"] == "info" for f in risk)

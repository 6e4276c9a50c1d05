"""The lab's real PgBouncer (Debian's package): it starts unprivileged with its own files, the scenarios
with PgBouncer show their signature within a deadline, the console sampler sees clients queue, and a lost
console is a recorded gap. No skips: without pgbouncer these tests fail and say how to install it."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from playbook.collect.pgbouncer_console import PgBouncerSampler
from playbook.collect.pgbouncer_log import read_pgbouncer_logs
from playbook.errors import PlaybookError
from playbook.lab.pgbouncer_process import PgBouncer, find_pgbouncer
from playbook.lab.scenarios import RunningScenario, start_scenario
from playbook.lab.server import SERVER_USER, LabServer
from playbook.lab.wait import wait_until


@pytest.fixture(scope="module", autouse=True)
def pgbouncer_installed() -> None:
    if find_pgbouncer() is None:
        pytest.fail(
            "pgbouncer is not installed: `make install` run as root on Debian/Ubuntu installs it "
            "(apt-get install pgbouncer); elsewhere install it or set PLAYBOOK_PGBOUNCER"
        )


@pytest.fixture
def bouncer(lab: LabServer, tmp_path: Path) -> Iterator[PgBouncer]:
    with PgBouncer(tmp_path / "bnc", lab, {"default_pool_size": 3}) as running:
        yield running


def test_pgbouncer_runs_unprivileged_with_its_own_files_and_reloads(bouncer: PgBouncer) -> None:
    pid = bouncer.pid()
    assert pid is not None
    owner = psutil.Process(pid).username()
    assert owner == (SERVER_USER if os.geteuid() == 0 else psutil.Process().username())
    for path in (bouncer.ini, bouncer.auth_file, bouncer.log_file, bouncer.pid_file):
        assert path.parent == bouncer.base_dir and path.exists()
    with psycopg.connect(bouncer.dsn(), autocommit=True, prepare_threshold=None) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("lab_app",)

    def query_wait_timeout() -> str | None:
        with psycopg.connect(bouncer.console_dsn(), autocommit=True, prepare_threshold=None) as conn:
            rows = psycopg.ClientCursor(conn).execute("SHOW CONFIG").fetchall()
        value = {str(r[0]): str(r[1]) for r in rows}["query_wait_timeout"]
        return value if value == "7" else None

    bouncer.reload({"query_wait_timeout": 7})
    wait_until(query_wait_timeout, timeout=10, what="query_wait_timeout=7 after a reload")
    bouncer.stop()
    wait_until(lambda: psutil.pid_exists(pid) is False or None, timeout=10, what="pgbouncer to exit")


def test_a_missing_binary_is_one_sentence_naming_make_install(
    lab: LabServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLAYBOOK_PGBOUNCER", str(tmp_path / "nowhere" / "pgbouncer"))
    with pytest.raises(PlaybookError, match=r"make install"):
        PgBouncer(tmp_path / "bnc", lab)


def test_a_lost_console_is_a_recorded_gap_not_a_crash(bouncer: PgBouncer) -> None:
    sampler = PgBouncerSampler(bouncer.console_dsn(), 0.2)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(sampler.run(30)))
    thread.start()
    try:
        wait_until(lambda: len(sampler._ticks) >= 3 or None, timeout=10, what="three console ticks")
        bouncer.stop()
        wait_until(lambda: sampler._open_gap is not None or None, timeout=10, what="the gap to open")
        bouncer.start()
        wait_until(lambda: sampler.gaps or None, timeout=20, what="the gap to close")
    finally:
        sampler.stop()
        thread.join(timeout=20)
    evidence = result[0]
    assert isinstance(evidence, type(sampler.evidence()))
    ticks = evidence.frame("pgbouncer_ticks")
    assert (~ticks["ok"]).any() and ticks["ok"].iloc[-1]
    gap = evidence.snapshots["pgbouncer_console"]["gaps"][0]
    assert gap["start"] and gap["end"] and gap["error"]
    assert re.fullmatch(r"1\.\d+\.\d+", evidence.snapshots["pgbouncer_config"]["version"])
    assert not evidence.frame("pgbouncer_pools").empty


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest, private_lab: LabServer, tmp_path: Path
) -> Iterator[RunningScenario]:
    running = start_scenario(request.param, private_lab, tmp_path / "work")
    try:
        yield running
    finally:
        running.stop()
    assert running.pgbouncer is not None and not running.pgbouncer.is_running()


@pytest.mark.parametrize("scenario", ["pgbouncer_idle_timeout"], indirect=True)
def test_pooler_idle_timeout_closes_the_pools_connections(scenario: RunningScenario) -> None:
    wait_until(scenario.signature_seen, timeout=30, what="client_idle_timeout closes and app errors")
    assert "client_idle_timeout" in scenario.app_log_text()
    assert scenario.pgbouncer is not None
    events = read_pgbouncer_logs([scenario.pgbouncer.log_file]).events
    closes = events[events["kind"] == "close"]
    assert (closes["reason_key"] == "client_idle_timeout").any()
    assert (closes["reason_key"] != "unknown").all()
    idle = closes[closes["reason_key"] == "client_idle_timeout"]
    assert (idle["side"] == "client").all() and (idle["age_s"] >= 2).all()


@pytest.mark.parametrize("scenario", ["pgbouncer_saturation"], indirect=True)
def test_saturation_queues_clients_and_times_them_out(scenario: RunningScenario) -> None:
    assert scenario.pgbouncer is not None
    sampler = PgBouncerSampler(scenario.pgbouncer.console_dsn(), 0.25)
    evidence = sampler.run(3)
    pools = evidence.frame("pgbouncer_pools")
    lab_pools = pools[pools["database"] == "lab"]
    assert lab_pools["cl_waiting"].max() > 0
    assert lab_pools["sv_active"].max() <= 2  # default_pool_size
    assert lab_pools["maxwait_s"].max() > 0.2
    assert evidence.snapshots["pgbouncer_config"]["settings"]["pool_mode"] == "transaction"
    assert (evidence.frame("pgbouncer_clients")["state"] == "waiting").any()
    wait_until(scenario.signature_seen, timeout=30, what="query_wait_timeout closes and app errors")
    assert "query_wait_timeout" in scenario.app_log_text()

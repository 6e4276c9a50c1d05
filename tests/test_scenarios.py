"""Every lab scenario, run short on a server of its own: its signature shows up in the server log,
the application log and the pool counters, within a deadline; the healthy ones show none of it.
Also the guard (no fault injection outside the lab) and `playbook lab scenario`."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from playbook.errors import PlaybookError
from playbook.lab import scenario_cli
from playbook.lab.scenarios import SCENARIOS, RunningScenario, start_scenario
from playbook.lab.server import MONITOR_ROLE, LabServer
from playbook.lab.wait import DeadlineExceeded, wait_until

REPO = Path(__file__).resolve().parents[1]
TERMINATING = re.compile(r"FATAL:\s+terminating connection")


@pytest.fixture
def threads_before() -> set[threading.Thread]:
    return set(threading.enumerate())


def assert_nothing_left(before: set[threading.Thread]) -> None:
    """Every thread the scenario started has ended (pool workers, services, proxy, injectors)."""
    wait_until(
        lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()] or None,
        timeout=15,
        what="the scenario's threads to end",
    )


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest,
    private_lab: LabServer,
    tmp_path: Path,
    threads_before: set[threading.Thread],
) -> Iterator[RunningScenario]:
    """The scenario named by the test's parameter, on a server of its own; stopped afterwards."""
    running = start_scenario(request.param, private_lab, tmp_path / "work")
    try:
        yield running
    finally:
        running.stop()
        running.stop()  # idempotent
    assert_nothing_left(threads_before)


def show(server: LabServer, name: str) -> str:
    with server.admin() as conn:
        row = conn.execute(psycopg.sql.SQL("SHOW {}").format(psycopg.sql.Identifier(name))).fetchone()
    assert row is not None
    return str(row[0])


def wait_signature(running: RunningScenario, timeout: float) -> None:
    try:
        wait_until(running.signature_seen, timeout=timeout, what=f"the signature of {running.spec.name}")
    except DeadlineExceeded as exc:  # say what was there instead
        server_tail = "\n".join(running.server_log_text().splitlines()[-15:])
        app_tail = "\n".join(running.app_log_text().splitlines()[-15:])
        raise AssertionError(
            f"{exc}\nstats: {running.stats()}\nserver log:\n{server_tail}\napp log:\n{app_tail}"
        ) from None


def test_every_scenario_has_a_spec_with_a_known_category() -> None:
    assert set(SCENARIOS) == {
        "healthy", "leak", "idle_session_timeout", "idle_in_transaction_timeout", "too_many_connections",
        "reset_path", "nat_drop", "nat_drop_keepalive", "admin_terminate", "server_restart", "backend_crash",
        "pgbouncer_idle_timeout", "pgbouncer_saturation", "prisma_forgotten_flow", "prisma_pool_exhausted",
    }  # fmt: skip
    for spec in SCENARIOS.values():
        assert spec.expected_category in {None, "leak", "timeout", "network", "pool_config", "server"}
        assert spec.summary and "\n" not in spec.summary
    assert SCENARIOS["healthy"].expected_category is None
    assert SCENARIOS["nat_drop_keepalive"].expected_category is None


# -- the incidents -------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["leak"], indirect=True)
def test_leak_grows_one_applications_held_connections(scenario: RunningScenario) -> None:
    def held_by_billing() -> tuple[int, int]:
        with scenario.server.admin() as conn:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE state = 'idle in transaction') "
                "FROM pg_stat_activity WHERE application_name = 'billing'"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    first, _ = held_by_billing()
    wait_signature(scenario, 15)
    wait_until(lambda: held_by_billing()[0] >= first + 3, timeout=15, what="billing's sessions to grow by 3")
    total, in_transaction = held_by_billing()
    assert in_transaction >= 2
    stats = scenario.stats()["services"]["billing"]
    assert stats["leaked"] >= 3 and stats["pool_size"] - stats["pool_available"] >= 3


@pytest.mark.parametrize("scenario", ["idle_session_timeout"], indirect=True)
def test_idle_session_timeout_keeps_killing_pooled_sessions(scenario: RunningScenario) -> None:
    assert show(scenario.server, "idle_session_timeout") == "2s"
    wait_signature(scenario, 20)
    assert "FATAL:  terminating connection due to idle-session timeout" in scenario.server_log_text()
    assert "psycopg.errors.IdleSessionTimeout: terminating connection due to idle-session timeout" in (
        scenario.app_log_text()
    )
    assert scenario.stats()["services"]["search"]["returns_bad"] > 0
    scenario.stop()
    assert show(scenario.server, "idle_session_timeout") == "0"  # restored


@pytest.mark.parametrize("scenario", ["idle_in_transaction_timeout"], indirect=True)
def test_idle_in_transaction_timeout_kills_slow_transactions(scenario: RunningScenario) -> None:
    wait_signature(scenario, 20)
    assert "FATAL:  terminating connection due to idle-in-transaction timeout" in scenario.server_log_text()
    assert "IdleInTransactionSessionTimeout: terminating connection due to idle-in-transaction timeout" in (
        scenario.app_log_text()
    )
    scenario.stop()
    assert show(scenario.server, "idle_in_transaction_session_timeout") == "0"


def test_settings_are_restored_to_what_they_were(private_lab: LabServer, tmp_path: Path) -> None:
    private_lab.alter_system({"idle_in_transaction_session_timeout": "7s"})
    with start_scenario("idle_in_transaction_timeout", private_lab, tmp_path / "work"):
        assert show(private_lab, "idle_in_transaction_session_timeout") == "1s"
    assert show(private_lab, "idle_in_transaction_session_timeout") == "7s"


@pytest.mark.parametrize("scenario", ["too_many_connections"], indirect=True)
def test_too_many_connections_refuses_and_times_pools_out(scenario: RunningScenario) -> None:
    server = scenario.server
    assert show(server, "max_connections") == "20"
    wait_signature(scenario, 20)
    assert re.search(r"FATAL:  remaining connection slots are reserved", scenario.server_log_text())
    app = scenario.app_log_text()
    assert "psycopg_pool.PoolTimeout: couldn't get a connection after 1.00 sec" in app
    # The pool's own warning comes from its worker thread, after the server logged the refusal.
    wait_until(
        lambda: "WARNING psycopg.pool: error connecting in '" in scenario.app_log_text(),
        timeout=20,
        what="the pool's warning about the refused connection",
    )
    assert any(s.get("requests_errors", 0) > 0 for s in scenario.stats()["services"].values())
    # The reserved band lets the monitor in while the applications hold every other slot.
    with psycopg.connect(scenario.dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    scenario.stop()
    assert show(server, "max_connections") == "100"
    with server.admin() as conn:
        row = conn.execute(
            "SELECT pg_has_role(%s, 'pg_use_reserved_connections', 'MEMBER')", [MONITOR_ROLE]
        ).fetchone()
    assert row == (False,)


@pytest.mark.parametrize("scenario", ["reset_path"], indirect=True)
def test_reset_path_resets_idle_pooled_flows(scenario: RunningScenario) -> None:
    assert scenario.proxy is not None and f"port={scenario.proxy.port}" in scenario.dsn
    wait_signature(scenario, 20)
    assert scenario.stats()["proxy"]["idle_resets"] > 0
    assert "could not receive data from client: Connection reset by peer" in scenario.server_log_text()
    assert "server closed the connection unexpectedly" in scenario.app_log_text()


@pytest.mark.parametrize("scenario", ["nat_drop"], indirect=True)
def test_nat_drop_hangs_requests_until_the_apps_deadline(scenario: RunningScenario) -> None:
    wait_signature(scenario, 20)
    stats = scenario.stats()
    assert stats["proxy"]["drops"] > 0 and stats["services"]["ledger"]["deadline_aborts"] > 0
    app = scenario.app_log_text()
    assert "abandoning its connection" in app and "server closed the connection unexpectedly" in app
    assert not TERMINATING.search(scenario.server_log_text())  # silent: the server saw nothing


@pytest.mark.parametrize("scenario", ["admin_terminate"], indirect=True)
def test_admin_terminate_reaps_idle_pooled_sessions(scenario: RunningScenario) -> None:
    wait_signature(scenario, 20)
    assert "FATAL:  terminating connection due to administrator command" in scenario.server_log_text()
    # The signature counts a failed request; the record naming its class is written by the
    # application's logger after it, and a pool may discard a reaped connection unseen first:
    # wait for the record (the reaper keeps reaping) instead of expecting it at that instant.
    wait_until(
        lambda: (
            "psycopg.errors.AdminShutdown: terminating connection due to administrator command"
            in scenario.app_log_text()
        ),
        timeout=20,
        what="the application's AdminShutdown record",
    )
    assert "INFO lab.idle-reaper: terminated" in (scenario.workdir / "idle-reaper.log").read_text()
    assert any(e["what"] == "pg_terminate_backend" for e in scenario.stats()["injected"])


@pytest.mark.parametrize("scenario", ["server_restart"], indirect=True)
def test_server_restart_ends_every_session(scenario: RunningScenario) -> None:
    postmaster = scenario.server.postmaster_pid()
    wait_signature(scenario, 20)
    log = scenario.server_log_text()
    assert "database system is ready to accept connections" in log
    assert "FATAL:  terminating connection due to administrator command" in log
    assert scenario.server.postmaster_pid() != postmaster
    assert scenario.stats()["services"]["catalog"]["requests_failed"] > 0


@pytest.mark.parametrize("scenario", ["backend_crash"], indirect=True)
def test_backend_crash_brings_every_session_down(scenario: RunningScenario) -> None:
    wait_signature(scenario, 20)
    log = scenario.server_log_text()
    killed = next(e["killed_pid"] for e in scenario.stats()["injected"] if e["what"] == "kill -9")
    assert f"(PID {killed}) was terminated by signal 9: Killed" in log
    assert "all server processes terminated; reinitializing" in log
    assert "server closed the connection unexpectedly" in scenario.app_log_text()


# -- no incident -------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["healthy", "nat_drop_keepalive"], indirect=True)
def test_healthy_scenarios_show_no_incident(scenario: RunningScenario) -> None:
    wait_signature(scenario, 20)  # healthy: requests served; keepalive: a burst after a gap > the NAT limit
    assert scenario.app_errors() == 0
    assert " ERROR " not in scenario.app_log_text() and " WARNING " not in scenario.app_log_text()
    assert not TERMINATING.search(scenario.server_log_text())
    if scenario.proxy is not None:
        assert scenario.stats()["proxy"]["drops"] == 0


# -- the guard -----------------------------------------------------------------------------------------
def test_fault_injection_refuses_servers_the_lab_did_not_start(
    lab: LabServer, tmp_path: Path, private_lab: LabServer
) -> None:
    with pytest.raises(PlaybookError, match="holds none") as nothing:
        start_scenario("backend_crash", LabServer(tmp_path / "nothing"), tmp_path / "w1")
    # An impostor: a running data directory (the private lab's), but the shared lab's port and
    # password, so the server answering is not the one started from that directory.
    impostor = LabServer(tmp_path / "impostor")
    impostor.base_dir.mkdir()
    impostor.state_file.write_text(lab.state_file.read_text())
    impostor.passfile.write_text(lab.passfile.read_text())
    impostor.passfile.chmod(0o600)
    impostor.data_dir.symlink_to(private_lab.data_dir)
    assert impostor.is_running() and impostor.port == lab.port
    with pytest.raises(PlaybookError, match="it is not the one the lab started") as foreign:
        start_scenario("server_restart", impostor, tmp_path / "w2")
    private_lab.down()
    with pytest.raises(PlaybookError, match="not running") as stopped:
        start_scenario("admin_terminate", private_lab, tmp_path / "w3")
    with pytest.raises(PlaybookError, match="no scenario 'nope'") as unknown:
        start_scenario("nope", lab, tmp_path / "w4")
    for error in (nothing, foreign, stopped, unknown):
        assert "\n" not in str(error.value)
    assert lab.is_running()  # the real lab was never touched


# -- the CLI ---------------------------------------------------------------------------------------------
def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    scenario_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_lists_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert scenario_cli.run(parse("--list")) == 0
    out = capsys.readouterr().out
    for spec in SCENARIOS.values():
        assert re.search(rf"^{spec.name}\s+expected: {spec.expected_category or 'none'}\s", out, re.M)


def test_cli_bad_input_is_one_sentence_and_exit_3(tmp_path: Path) -> None:
    for argv, words in [
        (["nope"], "there is no scenario 'nope'"),
        (["leak", "--duration", "soon"], "is not a number of seconds"),
        ([], "name a scenario"),
    ]:
        with pytest.raises(PlaybookError, match=words):
            scenario_cli.run(parse(*argv, "--lab-dir", str(tmp_path / "lab")))
    done = subprocess.run(
        [sys.executable, "-m", "playbook.lab.scenario_cli", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "lab").exists()  # bad input never starts a server


def lab_processes(lab_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(lab_dir) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_cli_duration_run_ends_by_itself_and_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], threads_before: set[threading.Thread]
) -> None:
    lab_dir = tmp_path / "lab"
    children = set(psutil.Process().children(recursive=True))
    assert scenario_cli.run(parse("idle_session_timeout", "--duration", "3", "--lab-dir", str(lab_dir))) == 0
    out = capsys.readouterr().out
    assert "dsn:        host=127.0.0.1" in out and "password" not in out
    assert (
        f"server log: {lab_dir}" in out
        and "app log:" in out
        and "scenario idle_session_timeout stopped" in out
    )
    assert "lab server stopped" in out  # it started the server, so it stops it
    assert_nothing_left(threads_before)
    assert set(psutil.Process().children(recursive=True)) <= children
    assert lab_processes(lab_dir) == []
    server = LabServer(lab_dir)
    server.up()
    try:
        assert show(server, "idle_session_timeout") == "0"  # restored before the server went down
    finally:
        server.destroy()


def test_cli_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    proc = subprocess.Popen(
        [sys.executable, "-m", "playbook.lab.scenario_cli", "reset_path", "--lab-dir", str(lab_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []

        def announced() -> bool:
            line = proc.stdout.readline() if proc.stdout is not None else ""
            lines.append(line)
            return "running until Ctrl-C" in line or proc.poll() is not None

        wait_until(announced, timeout=60, what="the scenario to start")
        assert proc.poll() is None, "".join(lines)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "scenario reset_path stopped" in out and "lab server stopped" in out
    assert lab_processes(lab_dir) == []

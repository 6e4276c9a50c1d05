from __future__ import annotations

import multiprocessing
import os
import pwd
import socket
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psycopg
import pytest

from conftest import run_cli
from playbook.lab import server as lab_server
from playbook.lab.server import MONITOR_ROLE, LabServer, ensure_system_user
from playbook.lab.wait import wait_until


def test_lab_listens_on_loopback_with_scram_and_no_password_in_dsn(lab: LabServer) -> None:
    dsn = lab.dsn()
    assert "password" not in dsn
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT current_user, inet_server_addr()::text, current_setting('log_connections'),"
            " current_setting('log_disconnections')"
        ).fetchone()
    assert row == (MONITOR_ROLE, "127.0.0.1/32", "on", "on")
    hba = (lab.data_dir / "pg_hba.conf").read_text()
    assert "scram-sha-256" in hba


def test_up_is_idempotent_and_status_follows(lab: LabServer) -> None:
    port = lab.port
    lab.up()
    assert lab.port == port
    assert lab.is_running()


def test_logs_are_written_in_stderr_and_structured_form(lab: LabServer) -> None:
    with psycopg.connect(lab.dsn()):
        pass
    # the server's logging collector writes on its own schedule
    logged = lambda: "connection authorized" in lab.stderr_log.read_text()  # noqa: E731
    wait_until(logged, timeout=15, what="the login logged")
    wait_until(lab.structured_log.exists, timeout=15, what="the structured log")


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a system user needs root (CI runs as root)")
def test_two_processes_creating_the_lab_user_at_once_both_succeed() -> None:
    """Both pytest workers' first lab on a fresh machine create the server user at the same moment."""
    name = f"pgpbt{os.getpid() % 100000}"
    try:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            done = [pool.submit(ensure_system_user, name) for _ in range(4)]
            assert [f.result(timeout=60) for f in done] == [None] * 4
        assert pwd.getpwnam(name).pw_shell == "/usr/sbin/nologin"
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_down_stops_and_up_restarts(private_lab: LabServer) -> None:
    private_lab.down()
    assert not private_lab.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(private_lab.dsn(), connect_timeout=2)
    private_lab.up()
    with psycopg.connect(private_lab.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_port_taken_between_the_check_and_the_bind_is_chosen_again(
    private_lab: LabServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_lab.down()
    taken = private_lab.port
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        # the race, made certain: the port looks free when checked and is taken when the server binds
        monkeypatch.setattr(lab_server, "_port_is_free", lambda port: True)
        private_lab.up()
    assert private_lab.port != taken
    with psycopg.connect(private_lab.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_any_server_build_runs_the_lab(any_server: LabServer) -> None:
    with psycopg.connect(any_server.dsn()) as conn:
        assert conn.execute("SHOW server_version_num").fetchone() is not None


def test_lab_cli_up_is_idempotent_status_follows_and_down_stops(tmp_path: Path) -> None:
    lab_dir = str(tmp_path / "cli-lab")
    try:
        first = run_cli("lab", "--lab-dir", lab_dir, "up")
        assert first.returncode == 0, first.stderr
        assert "dsn:" in first.stdout and "password" not in first.stdout
        assert "server log:" in first.stdout and "postgresql.log" in first.stdout
        dsn = next(
            line.split(":", 1)[1].strip() for line in first.stdout.splitlines() if line.startswith("dsn:")
        )
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        again = run_cli("lab", "--lab-dir", lab_dir, "up")
        assert again.returncode == 0 and dsn in again.stdout  # same server, same port
        status = run_cli("lab", "--lab-dir", lab_dir, "status")
        assert status.returncode == 0 and "running" in status.stdout
        down = run_cli("lab", "--lab-dir", lab_dir, "down")
        assert down.returncode == 0
        stopped = run_cli("lab", "--lab-dir", lab_dir, "status")
        assert stopped.returncode == 1 and "not running" in stopped.stdout
    finally:
        LabServer(Path(lab_dir)).destroy()

from __future__ import annotations

import psycopg
import pytest

from playbook.lab.server import MONITOR_ROLE, LabServer


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
    assert "connection authorized" in lab.stderr_log.read_text()
    assert lab.structured_log.exists()


def test_down_stops_and_up_restarts(private_lab: LabServer) -> None:
    private_lab.down()
    assert not private_lab.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(private_lab.dsn(), connect_timeout=2)
    private_lab.up()
    with psycopg.connect(private_lab.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_any_server_build_runs_the_lab(any_server: LabServer) -> None:
    with psycopg.connect(any_server.dsn()) as conn:
        assert conn.execute("SHOW server_version_num").fetchone() is not None

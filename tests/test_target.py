from __future__ import annotations

import psycopg
import pytest

from playbook import APPLICATION_NAME
from playbook.errors import PlaybookError
from playbook.lab.server import LabServer
from playbook.target import Target, redact, resolve_target


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db port=5432 user=app password=s3cr3t-Pw dbname=shop",
        "postgresql://app:s3cr3t-Pw@db:5432/shop",
        "host=db user=app sslpassword=s3cr3t-Pw",
    ],
)
def test_redaction_removes_every_secret(dsn: str) -> None:
    shown = redact(dsn)
    assert "s3cr3t-Pw" not in shown
    assert "host=db" in shown and "user=app" in shown


def test_malformed_dsn_is_one_sentence_without_the_password() -> None:
    with pytest.raises(PlaybookError) as caught:
        resolve_target("host=db password=s3cr3t-Pw port")
    assert "malformed" in str(caught.value)
    assert "s3cr3t-Pw" not in str(caught.value)


def test_dsn_precedence_flag_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAYBOOK_DSN", "host=from-env")
    assert resolve_target("host=from-flag").dsn == "host=from-flag"
    assert resolve_target(None).dsn == "host=from-env"
    monkeypatch.delenv("PLAYBOOK_DSN")
    assert resolve_target(None).dsn == ""  # libpq reads PG* variables and the service file


def test_libpq_environment_is_used_when_nothing_else_is_given(
    lab: LabServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLAYBOOK_DSN", raising=False)
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(lab.port))
    monkeypatch.setenv("PGUSER", "playbook_monitor")
    monkeypatch.setenv("PGDATABASE", "lab")
    monkeypatch.setenv("PGPASSFILE", str(lab.passfile))
    with resolve_target(None).check() as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("playbook_monitor",)


def test_every_session_is_read_only_bounded_and_named(lab: LabServer) -> None:
    with Target(lab.dsn("postgres")).connect() as conn:  # even a superuser session is read-only
        settings = conn.execute(
            "SELECT current_setting('default_transaction_read_only'), current_setting('statement_timeout'),"
            " current_setting('lock_timeout'), current_setting('application_name')"
        ).fetchone()
        assert settings == ("on", "5s", "1s", APPLICATION_NAME)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE playbook_must_not_write (id int)")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(10)")


def test_user_options_are_kept_alongside_the_safety_options(lab: LabServer) -> None:
    with Target(lab.dsn() + " options='-c work_mem=8MB'").connect() as conn:
        row = conn.execute(
            "SELECT current_setting('work_mem'), current_setting('default_transaction_read_only')"
        )
        assert row.fetchone() == ("8MB", "on")


def test_the_playbook_keeps_its_own_session_alive_through_nats(lab: LabServer) -> None:
    from playbook.probes.keepalive import client_keepalive_settings

    with Target(lab.dsn()).connect() as conn:
        socket_options = client_keepalive_settings(conn)
    assert socket_options["so_keepalive"] is True
    assert (socket_options["tcp_keepidle_s"], socket_options["tcp_keepintvl_s"]) == (15, 5)
    assert socket_options["tcp_user_timeout_ms"] == 30000
    with Target(lab.dsn() + " keepalives_idle=7").connect() as conn:  # the DSN's own value wins
        assert client_keepalive_settings(conn)["tcp_keepidle_s"] == 7

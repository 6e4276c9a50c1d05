"""`playbook run` through a real PgBouncer with its default settings (no ignore_startup_parameters
for `options`): the safety settings travel per transaction, never reach the pool's other clients,
and the summary says the target was reached through a pooler. Statement pooling, where they cannot
travel, is refused in one sentence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import run_cli
from playbook.lab.pgbouncer_process import PgBouncer, find_pgbouncer
from playbook.lab.server import APP_ROLE, MONITOR_ROLE, LabServer
from playbook.target import POOLER_NOTE, Target


@pytest.fixture(scope="module", autouse=True)
def pgbouncer_installed() -> None:
    if find_pgbouncer() is None:
        pytest.fail("pgbouncer is not installed: `make install` as root installs it")


@pytest.fixture
def bouncer(request: pytest.FixtureRequest, lab: LabServer, tmp_path: Path) -> Iterator[PgBouncer]:
    # One server connection per pool: the application session afterwards gets the very server
    # connection the playbook's transactions ran on, where a leaked SET would show.
    mode, _, ignored = str(request.param).partition("+")
    settings: dict[str, str | int | float] = {"pool_mode": mode, "default_pool_size": 1}
    if ignored:  # PgBouncer told to drop the startup parameter instead of refusing it
        settings["ignore_startup_parameters"] = f"extra_float_digits,{ignored}"
    with PgBouncer(tmp_path / "bnc", lab, settings) as running:
        yield running


def server_own(lab: LabServer, name: str) -> str:
    with psycopg.connect(lab.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT reset_val FROM pg_settings WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return str(row[0])


def application_sees(bouncer: PgBouncer, user: str) -> dict[str, str]:
    """What an application session through the same pool (same user, same database) sees."""
    with psycopg.connect(bouncer.dsn(user), autocommit=True, prepare_threshold=None) as conn:
        return {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("default_transaction_read_only", "transaction_read_only", "statement_timeout",
                         "lock_timeout")
        }  # fmt: skip


@pytest.mark.parametrize("bouncer", ["session", "transaction"], indirect=True)
def test_a_run_through_pgbouncer_works_and_leaves_the_pool_as_it_found_it(
    bouncer: PgBouncer, lab: LabServer, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = run_cli(
        "run", "--dsn", bouncer.dsn(MONITOR_ROLE), "--duration", "3", "--interval", "0.5",
        "--notebooks", "triage", "--out", str(out), timeout=240,
    )  # fmt: skip
    assert result.returncode in (0, 1, 2), result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["live"] is True
    assert summary["target"]["pooler"] == POOLER_NOTE
    assert not any("unsupported startup parameter" in w for w in summary["evidence_warnings"])
    assert "connection pooler" in (out / "report.html").read_text()
    settings = json.loads(next(out.rglob("settings.json")).read_text())["settings"]
    assert settings["statement_timeout"]["setting"] == server_own(lab, "statement_timeout")  # not ours
    seen = application_sees(bouncer, MONITOR_ROLE)
    assert seen["default_transaction_read_only"] == "off" and seen["transaction_read_only"] == "off"
    assert seen["statement_timeout"] == server_own(lab, "statement_timeout")
    assert seen["lock_timeout"] == server_own(lab, "lock_timeout")


@pytest.mark.parametrize("bouncer", ["transaction", "transaction+options"], indirect=True)
def test_each_statement_is_read_only_and_bounded_through_the_pool(bouncer: PgBouncer) -> None:
    target = Target(bouncer.dsn(MONITOR_ROLE), statement_timeout_ms=1234)
    with target.check() as session:
        assert target.pooled and session.pooled
        assert session.execute("SHOW transaction_read_only").fetchone() == ("on",)
        assert session.execute("SHOW statement_timeout").fetchone() == ("1234ms",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            session.execute("CREATE TABLE written_through_the_pool (x int)")
        with pytest.raises(psycopg.errors.QueryCanceled):
            session.execute("SELECT pg_sleep(3)")
        assert session.execute("SELECT 2").fetchone() == (2,)  # the session goes on after both


@pytest.mark.parametrize("bouncer", ["statement"], indirect=True)
def test_statement_pooling_is_refused_in_one_sentence(bouncer: PgBouncer, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run_cli("run", "--dsn", bouncer.dsn(MONITOR_ROLE), "--duration", "1", "--out", str(out))
    assert result.returncode == 3, result.stderr
    assert "statement pooling" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "summary.json").exists()
    assert application_sees(bouncer, APP_ROLE)["default_transaction_read_only"] == "off"


def test_a_direct_session_is_not_pooled(lab: LabServer) -> None:
    target = Target(lab.dsn())
    with target.check() as session:
        assert not target.pooled and not session.pooled
        assert session.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert session.info.transaction_status.name == "IDLE"

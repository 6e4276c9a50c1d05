"""`playbook logs`: classify server logs from the command line, as a table or one JSON object."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from playbook import logs_command
from playbook.collect.serverlog import read_server_logs
from playbook.errors import PlaybookError
from playbook.lab.server import APP_ROLE, STDERR_PREFIX, LabServer
from playbook.lab.wait import wait_until

DATA = Path(__file__).parent / "data" / "logs"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="playbook logs")
    logs_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_json_is_one_object_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert logs_command.run(_args(str(DATA / "pg18_incident.log"), "--json")) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and err == ""
    summary = json.loads(out)
    assert summary["format"] == "stderr" and summary["prefix"] == STDERR_PREFIX
    assert summary["events"]["idle_session_timeout"]["count"] == 1
    assert summary["events"]["idle_session_timeout"]["category"] == "timeout"
    assert summary["events"]["admin_terminate"]["applications"] == {"reaped-app": 1}
    assert summary["categories"]["pool_config"] >= 3  # role and database limits, a bad password


def test_table_shows_categories_events_and_who(capsys: pytest.CaptureFixture[str]) -> None:
    assert logs_command.run(_args(str(DATA / "pg18_incident.csv"))) == 0
    out = capsys.readouterr().out
    for text in ("timeout", "idle_session_timeout", "pool_config", "role_conn_limit", "lab_app", "idle-pool"):
        assert text in out
    assert "sessions" in out


def test_format_prefix_and_window_flags(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(DATA / "rotated.log"), "--format", "stderr", "--prefix", STDERR_PREFIX]
    assert (
        logs_command.run(
            _args(*argv, "--since", "2025-03-01T10:01:00Z", "--until", "2025-03-01 10:03", "--json")
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["events"]) == {
        "disconnection",
        "too_many_clients",
        "lock_timeout",
        "incomplete_startup_packet",
    }
    assert summary["window"]["since"] == "2025-03-01T10:01:00+00:00"


def test_nothing_found_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "quiet.log"
    path.write_text("2025-03-01 10:00:00.000 UTC [1] LOG:  checkpoint starting: time\n")
    assert logs_command.run(_args(str(path), "--prefix", "%m [%p] ")) == 0
    assert "No line in these logs explains a lost session" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (["/nonexistent/postgresql.log"], "server log /nonexistent/postgresql.log does not exist"),
        ([str(DATA / "garbage.bin")], "is binary data, not a PostgreSQL log"),
        ([str(DATA / "multiline.log"), "--prefix", "%t <%u> "], "matches no line of"),
        (
            [str(DATA / "multiline.log"), "--since", "yesterday"],
            "--since 'yesterday' is not an ISO 8601 time",
        ),
        ([str(DATA / "multiline.log"), "--since", "2025-03-02", "--until", "2025-03-01"], "--since is later"),
    ],
)
def test_bad_input_is_one_sentence(argv: list[str], sentence: str) -> None:
    with pytest.raises(PlaybookError, match=sentence) as info:
        logs_command.run(_args(*argv))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message


def test_unknown_format_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _args(str(DATA / "multiline.log"), "--format", "syslog")
    assert info.value.code == 2
    assert "invalid choice: 'syslog'" in capsys.readouterr().err


def test_progress_bar_does_not_change_the_result() -> None:
    quiet = read_server_logs([DATA / "pg18_incident.log"])
    shown = read_server_logs([DATA / "pg18_incident.log"], progress=True)
    assert quiet.summary == shown.summary


def test_live_lab_log_in_a_separate_process(lab: LabServer) -> None:
    """The shared lab's own stderr log, read by a fresh interpreter as the CLI will run it."""
    victim = psycopg.connect(lab.dsn(APP_ROLE), application_name="logs-cli-victim", autocommit=True)
    pid = victim.info.backend_pid
    with lab.admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    victim.close()
    wait_until(
        lambda: f"[{pid}] {APP_ROLE}@lab FATAL:  terminating connection" in lab.stderr_log.read_text(),
        timeout=15,
        what="the terminate line in the lab's log",
    )
    code = (
        "import argparse, sys; from playbook import logs_command as m; p = argparse.ArgumentParser(); "
        "m.add_arguments(p); sys.exit(m.run(p.parse_args(sys.argv[1:])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(lab.stderr_log), "--prefix", STDERR_PREFIX, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    summary = json.loads(done.stdout)
    assert summary["by_application"]["logs-cli-victim"]["events"] == {"admin_terminate": 1}


@pytest.mark.parametrize(
    ("path", "forced"),
    [("pg18_incident.log", "csvlog"), ("pg18_incident.log", "jsonlog"), ("pg18_incident.json", "csvlog")],
)
def test_a_forced_format_the_file_is_not_is_one_sentence(path: str, forced: str) -> None:
    """Never "no line explains a lost session" on a log that was never parsed."""
    with pytest.raises(PlaybookError) as info:
        read_server_logs([DATA / path], fmt=forced)
    assert f"--format {forced} but " in str(info.value) and "drop --format" in str(info.value)

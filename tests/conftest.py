"""Real servers for the test session: the embedded PostgreSQL 18, and Debian's builds where present."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from playbook.lab.server import LabServer

_OWN_BASETEMP: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    """A temp folder of this run's own. pytest's default (/tmp/pytest-of-<user>/pytest-N) is shared
    by every pytest on the machine, and each one deletes all but the newest three of them: a second
    test run would delete the data directory of this run's servers under their feet."""
    if config.option.basetemp is None:
        own = Path(tempfile.mkdtemp(prefix="pg-session-playbook-tests-"))
        config.option.basetemp = str(own)
        _OWN_BASETEMP.append(own)


def pytest_unconfigure(config: pytest.Config) -> None:
    # Kept when something failed: what a failing test left behind is how its cause is found.
    if _OWN_BASETEMP and getattr(config, "_playbook_failed", False) is False:
        shutil.rmtree(_OWN_BASETEMP[0], ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._playbook_failed = exitstatus != 0  # type: ignore[attr-defined]


def debian_bin_dirs() -> list[Path]:
    return [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin")) if Path(p, "postgres").exists()]


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """The shared embedded PostgreSQL 18. Tests that change settings restore them; tests that
    restart or crash the server use `private_lab` instead."""
    server = LabServer(tmp_path_factory.mktemp("lab"))
    server.up()
    yield server
    server.destroy()


@pytest.fixture
def private_lab(tmp_path: Path) -> Iterator[LabServer]:
    """A server of one's own (about a second to create), for tests that break it."""
    server = LabServer(tmp_path / "lab")
    server.up()
    yield server
    server.destroy()


@pytest.fixture(scope="session", params=["embedded", *[f"debian-{p.parent.name}" for p in debian_bin_dirs()]])
def any_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabServer]:
    """Every PostgreSQL build on this machine: the embedded one always, Debian's where installed."""
    if request.param == "embedded":
        server = LabServer(tmp_path_factory.mktemp("any-embedded"))
    else:
        version = request.param.split("-", 1)[1]
        server = LabServer(
            tmp_path_factory.mktemp(f"any-{version}"), bin_dir=Path(f"/usr/lib/postgresql/{version}/bin")
        )
    server.up()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def one_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A notebook folder (for $PLAYBOOK_NOTEBOOKS) whose only page, the triage, loads the run's
    evidence and prints its window: for tests about what a run collects or finds, not about the
    pages (the shipped triage takes several times longer; the tests about the pages run it)."""
    import nbformat

    folder = tmp_path_factory.mktemp("one-page")
    page = nbformat.v4.new_notebook()
    page.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    page.metadata["language_info"] = {"name": "python"}
    page.cells = [
        nbformat.v4.new_code_cell('evidence_dir = ""', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from playbook.notebook import load_or_collect\n"
            "print(load_or_collect(evidence_dir=evidence_dir).manifest['window'])"
        ),
    ]
    nbformat.write(page, str(folder / "00_triage.ipynb"))
    return folder


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    user: str | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`playbook …` as a user would run it: a separate process, its own stdout and stderr."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "playbook.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        user=user,
        cwd=str(cwd or Path(__file__).resolve().parents[1]),
    )


def run_main_as_nobody(argv: list[str]) -> tuple[int, str]:
    """playbook's main() in a forked child that dropped root: root itself reads every file."""
    import io
    import sys

    from playbook import cli
    from playbook.collect import applog, serverlog  # noqa: F401  (imported before dropping privileges:
    from playbook.report import run_command  # noqa: F401   nobody cannot read this Python's stdlib under /root)

    cli.build_parser()  # imports every subcommand's modules

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run, report back, never return into pytest
        status = 99
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sys.stderr = captured = io.StringIO()
            status = cli.main(argv)
            os.write(write_end, f"{status}\n{captured.getvalue()}".encode())
        except BaseException:  # say what broke in the child instead of an empty pipe
            import traceback

            os.write(write_end, f"99\n{traceback.format_exc()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        output = pipe.read()
    os.waitpid(pid, 0)
    code, _, stderr = output.partition("\n")
    return int(code), stderr


_REFUSING: list[socket.socket] = []


def refused_port() -> int:
    """A port that refuses connections for the rest of this test process: bound and never
    listening, so no kernel, scheduler or other program on the machine can take it meanwhile (a
    port bound and released could be)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _REFUSING.append(sock)
    return int(sock.getsockname()[1])


def xact_age(server: LabServer, application: str) -> float:
    """Seconds the oldest open transaction of `application` has been idle in transaction on
    `server` (0 when it has none): how a test waits for a leak to be old enough."""
    import psycopg

    with psycopg.connect(server.dsn()) as conn:
        row = conn.execute(
            "SELECT max(extract(epoch FROM now() - xact_start)) FROM pg_stat_activity"
            " WHERE application_name = %s AND state = 'idle in transaction'",
            [application],
        ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0

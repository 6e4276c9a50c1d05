"""`playbook stress` against the lab: a role whose idle_session_timeout is 2 s (the
idle_session_timeout scenario's misconfiguration, set on the role so the shared lab is left alone).
Each client pool with its library's defaults breaks at the server's idle-timeout link (TMO-001);
with the fix the finding itself offers (its pool block, parsed from the recommendation as a user
would paste it, or its role-level SQL, run as written) the same stress holds. Through PgBouncer a
client_idle_timeout breaks it at the pooler's link (BNC-001). Ctrl-C closes every connection."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import run_cli
from playbook.lab.pgbouncer_process import PgBouncer, find_pgbouncer
from playbook.lab.server import APP_ROLE, MONITOR_ROLE, SUPERUSER, LabServer
from playbook.report.summary import validate
from playbook.stress.pools import node_unavailable

ROOT = str(Path(__file__).resolve().parents[1])
DURATION = "8"  # one gap crossing a 2 s timeout (3 s) and the bursts around it
TMO_LINK = "breaks at link client pool → server (idle_session_timeout) (finding TMO-001)"
# Where a fix block's setting goes on the command line (the names each library's block uses).
FLAG_OF_SETTING = {
    "min_size": "--min-size",
    "max_size": "--size",
    "max_idle": "--max-idle",
    "max_lifetime": "--max-lifetime",
    "pool_recycle": "--max-lifetime",
    "max_inactive_connection_lifetime": "--max-idle",
    "maxLifetimeSeconds": "--max-lifetime",
}


def timed_out_role(lab: LabServer, name: str) -> str:
    """A login role whose sessions the server ends after 2 s idle; its DSN."""
    dsn = lab.create_role(name)
    with lab.admin() as conn:
        conn.execute(f"ALTER ROLE {name} SET idle_session_timeout = '2s'")
    return dsn


def launch(dsn: str, out: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """`playbook stress … --yes` started as a user would, left running (the runs of one phase go
    side by side: each one is idle most of its time)."""
    command = [sys.executable, "-m", "playbook.cli", "stress", "--dsn", dsn, "--duration", DURATION,
               "--out", str(out), "--yes", *args]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    return process, out


def finish(
    started: tuple[subprocess.Popen[str], Path],
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    process, out = started
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    if summary:
        validate(summary)  # the run's schema, with its stress object
    return result, summary


def stress(dsn: str, out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    return finish(launch(dsn, out, *args))


Runs = dict[str, tuple[subprocess.CompletedProcess[str], dict[str, Any]]]


@pytest.fixture(scope="module")
def runs(lab: LabServer, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Every pool's run before the fix, side by side; then, side by side, the runs with the fixes
    their TMO-001 findings offered (the pool block parsed as pasted, or the role SQL run)."""
    base = tmp_path_factory.mktemp("stress")
    befores = {
        "psycopg": ("stress_psycopg", ["--pool", "psycopg"]),
        "sqlalchemy": ("stress_sqlalchemy", ["--pool", "sqlalchemy"]),
        "asyncpg": ("stress_asyncpg", ["--pool", "asyncpg", "--max-idle", "1"]),
    }
    if node_unavailable() is None:
        befores["node-postgres"] = ("stress_node", ["--pool", "node-postgres", "--max-idle", "10"])
    dsns = {name: timed_out_role(lab, role) for name, (role, _) in befores.items()}
    dsns["sqlalchemy-masked"] = timed_out_role(lab, "stress_sqlalchemy_masked")
    started = {
        name: launch(dsns[name], base / f"{name}-before", *args) for name, (_, args) in befores.items()
    }
    done: Runs = {f"{name}-before": finish(run) for name, run in started.items()}
    fix = {name: fix_blocks(summary, "TMO-001") for name, (_, summary) in
           ((n[: -len("-before")], r) for n, r in done.items()) if summary.get("findings")}  # fmt: skip
    afters: dict[str, tuple[str, list[str]]] = {}
    if "psycopg" in fix:
        config = base / "psycopg.yaml"
        config.write_text(yaml_of("psycopg", pool_flags(fix["psycopg"]["python"], "python")))
        afters["psycopg"] = (dsns["psycopg"], ["--config", str(config)])
    if "sqlalchemy" in fix:
        flags = pool_flags(fix["sqlalchemy"]["python"], "python")
        afters["sqlalchemy-masked"] = (dsns["sqlalchemy-masked"], ["--pool", "sqlalchemy", *flags])
        apply_sql(lab, fix["sqlalchemy"]["sql"])
        afters["sqlalchemy"] = (dsns["sqlalchemy"], ["--pool", "sqlalchemy"])
    if "asyncpg" in fix:
        apply_sql(lab, fix["asyncpg"]["sql"])
        afters["asyncpg"] = (dsns["asyncpg"], befores["asyncpg"][1])
    if "node-postgres" in fix:
        flags = pool_flags(fix["node-postgres"]["javascript"], "javascript")
        afters["node-postgres"] = (dsns["node-postgres"], ["--pool", "node-postgres", *flags])
    started = {name: launch(dsn, base / f"{name}-after", *args) for name, (dsn, args) in afters.items()}
    done.update({f"{name}-after": finish(run) for name, run in started.items()})
    done["fixes"] = (subprocess.CompletedProcess([], 0), {"blocks": fix})
    return done


def fix_blocks(summary: dict[str, Any], finding_id: str) -> dict[str, str]:
    """The fenced blocks of a finding's recommendation, by kind (sql, python, javascript)."""
    finding = next(f for f in summary["findings"] if f["id"] == finding_id)
    return dict(re.findall(r"```(\w+)\n(.*?)\n```", finding["recommendation"], re.S))


def pool_flags(block: str, kind: str) -> list[str]:
    """The stress flags of a pool block as pasted: the pool call's keyword literals (Python), or
    the options object's numbers (JavaScript: milliseconds become seconds)."""
    flags: list[str] = []
    if kind == "python":
        call = next(
            n
            for n in ast.walk(ast.parse(block.replace("await ", "")))
            if isinstance(n, ast.Call) and n.keywords
        )
        for keyword in call.keywords:
            if keyword.arg in ("check", "pool_pre_ping"):
                flags.append("--check")
            elif keyword.arg in FLAG_OF_SETTING and isinstance(keyword.value, ast.Constant):
                flags += [FLAG_OF_SETTING[keyword.arg], str(keyword.value.value)]
        return flags
    for name, value in re.findall(r"(\w+):\s*(\d+)", block):
        if name == "idleTimeoutMillis":
            flags += ["--max-idle", str(int(value) / 1000)]
        elif name in FLAG_OF_SETTING:
            flags += [FLAG_OF_SETTING[name], value]
    return flags


def yaml_of(pool: str, flags: list[str]) -> str:
    """The --config YAML saying what these flags say."""
    lines, i = [f"pool: {pool}"], 0
    while i < len(flags):
        key = flags[i].lstrip("-").replace("-", "_")
        if flags[i] == "--check":
            lines.append(f"{key}: true")
            i += 1
        else:
            lines.append(f"{key}: {flags[i + 1]}")
            i += 2
    return "\n".join(lines) + "\n"


def apply_sql(lab: LabServer, block: str) -> None:
    with lab.admin() as conn:
        for statement in filter(None, (s.strip() for s in block.split(";"))):
            conn.execute(statement)


def assert_breaks_at_idle_timeout(result: subprocess.CompletedProcess[str], summary: dict[str, Any]) -> None:
    stress_object = summary["stress"]
    assert stress_object["requests"] > 50, result.stderr  # it really ran
    assert stress_object["verdict"] == TMO_LINK, result.stderr
    assert summary["findings"][0]["id"] == "TMO-001"
    assert stress_object["failures"][0]["lost_connections"] >= 1
    assert result.returncode == {"critical": 2, "warning": 1}[summary["status"]]
    # the library's model predicted it before anything ran: a masked break is a warning
    model = stress_object["model"]
    assert model["expected"] == "breaks" and model["masked"] == (summary["status"] == "warning"), model


def assert_holds(result: subprocess.CompletedProcess[str], summary: dict[str, Any]) -> None:
    found = summary.get("stress", {})
    assert result.returncode == 0, (result.stderr, found.get("failures"), found.get("lost_connections"))
    assert summary["status"] == "ok" and summary["stress"]["verdict"] == "holds"
    assert summary["stress"]["failed_requests"] == 0 and summary["stress"]["churn"]["lost"] == 0
    assert summary["stress"]["requests"] > 50  # it really ran
    assert summary["stress"]["model"]["expected"] == "holds", summary["stress"]["model"]
    assert "holds" in (Path(result.stdout.split(": ", 2)[-1].strip())).read_text()


def test_without_yes_it_says_what_it_would_hold_and_exits_3(tmp_path: Path) -> None:
    result = run_cli("stress", "--dsn", "host=127.0.0.1 port=1 dbname=x", "--pool", "psycopg", "--size", "3",
                     "--out", str(tmp_path))  # fmt: skip
    assert result.returncode == 3
    assert "would open up to 3 connection(s)" in result.stderr and "--yes" in result.stderr
    assert not (tmp_path / "summary.json").exists()
    wrong = run_cli("stress", "--pool", "sqlalchemy", "--max-idle", "5", "--yes")
    assert wrong.returncode == 3 and "QueuePool has no idle limit" in wrong.stderr
    assert "Traceback" not in wrong.stderr


@pytest.mark.parametrize("pool", ["sqlalchemy", "asyncpg"])
def test_a_pool_whose_library_is_missing_names_the_stress_extra(pool: str, tmp_path: Path) -> None:
    """A core install (no [stress], no [dev]) lacks SQLAlchemy and asyncpg: the process below hides
    them the way an absent package reads (sys.modules[name] = None: find_spec answers None)."""
    argv = [
        "stress",
        "--dsn",
        "host=127.0.0.1 port=1 dbname=x",
        "--pool",
        pool,
        "--out",
        str(tmp_path),
        "--yes",
    ]
    hide = (
        "import sys; sys.modules['sqlalchemy'] = sys.modules['asyncpg'] = None; "
        f"from playbook.cli import main; sys.exit(main({argv!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.splitlines()  # one sentence, no traceback
    assert f"playbook stress --pool {pool} needs the [stress] extra" in line, line
    assert "pip install 'pg-session-playbook[stress]'" in line
    assert not (tmp_path / "summary.json").exists()


def test_psycopg_pool_breaks_at_the_idle_timeout_and_holds_with_the_findings_pool_block(runs: Runs) -> None:
    result, summary = runs["psycopg-before"]
    assert_breaks_at_idle_timeout(result, summary)
    assert summary["status"] == "critical" and summary["stress"]["failed_requests"] >= 1
    assert summary["stress"]["limits"]["crossed"] == ["idle_session_timeout"]
    assert summary["stress"]["cap"]["connections"] == 4
    flags = pool_flags(runs["fixes"][1]["blocks"]["psycopg"]["python"], "python")
    assert "--check" in flags and flags[flags.index("--min-size") + 1] == "0"
    result, summary = runs["psycopg-after"]  # that block, as the stress's --config YAML
    assert_holds(result, summary)
    assert summary["stress"]["pool"]["min_size"] == 0 and summary["stress"]["pool"]["check"] is True


def test_sqlalchemy_breaks_and_its_pool_block_only_masks_while_the_role_sql_holds(runs: Runs) -> None:
    result, summary = runs["sqlalchemy-before"]
    assert_breaks_at_idle_timeout(result, summary)
    assert summary["status"] == "critical"
    # pool_pre_ping + pool_recycle: no request fails, but QueuePool still keeps idle connections the
    # server cuts (the block says it masks): a warning, exit 1
    result, masked = runs["sqlalchemy-masked-after"]
    assert_breaks_at_idle_timeout(result, masked)
    assert masked["status"] == "warning" and masked["stress"]["failed_requests"] == 0
    assert masked["stress"]["pool"]["check"] is True
    sql = runs["fixes"][1]["blocks"]["sqlalchemy"]["sql"]
    assert "ALTER ROLE stress_sqlalchemy SET idle_session_timeout = 0" in sql
    assert_holds(*runs["sqlalchemy-after"])


def test_asyncpg_breaks_at_its_floor_and_holds_with_the_role_sql(runs: Runs) -> None:
    result, summary = runs["asyncpg-before"]
    # asyncpg 0.32 never retires its min_size floor: cut by the server, replaced by the pool (masked)
    assert_breaks_at_idle_timeout(result, summary)
    assert summary["stress"]["pool"]["idle_bound_s"] is None
    assert_holds(*runs["asyncpg-after"])


def test_node_postgres_breaks_and_holds_with_the_findings_pool_options(runs: Runs) -> None:
    reason = node_unavailable()
    if reason:
        pytest.skip(reason)
    assert_breaks_at_idle_timeout(*runs["node-postgres-before"])
    flags = pool_flags(runs["fixes"][1]["blocks"]["node-postgres"]["javascript"], "javascript")
    assert flags[:2] == ["--max-idle", "1.0"]
    assert_holds(*runs["node-postgres-after"])


def test_through_pgbouncer_a_client_idle_timeout_breaks_at_the_poolers_link(
    lab: LabServer, tmp_path: Path
) -> None:
    if find_pgbouncer() is None:
        pytest.fail("pgbouncer is not installed: `make install` as root installs it")
    lab.create_role("stress_bnc")
    users = (SUPERUSER, MONITOR_ROLE, APP_ROLE, "stress_bnc")
    settings: dict[str, str | int | float] = {"pool_mode": "transaction", "client_idle_timeout": 2}
    with PgBouncer(tmp_path / "bnc", lab, settings, users=users) as bouncer:
        result, summary = stress(bouncer.dsn("stress_bnc"), tmp_path / "out", "--pool", "psycopg",
                                 "--pgbouncer", bouncer.console_dsn())  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert summary["stress"]["verdict"] == (
        "breaks at link client pool → pooler (client_idle_timeout) (finding BNC-001)"
    )
    assert summary["target"]["pooler"] and summary["stress"]["through_pooler"] is True
    assert summary["stress"]["limits"]["pooler"]["client_idle_timeout"] == 2
    assert summary["stress"]["limits"]["crossed"] == ["client_idle_timeout"]


def stress_sessions(lab: LabServer, where: str = "") -> int:
    """The stress's sessions on the server (its setup session and its pool's), or those of them
    matching an extra SQL condition."""
    with psycopg.connect(lab.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'playbook-stress-%'"
            + (f" AND {where}" if where else "")
        ).fetchone()
    return int(row[0]) if row else 0


def sessions_seen(lab: LabServer) -> list[tuple[Any, ...]]:
    with psycopg.connect(lab.dsn(), autocommit=True) as conn:
        return conn.execute(
            "SELECT application_name, state, wait_event_type, wait_event, left(query, 60)"
            " FROM pg_stat_activity WHERE backend_type = 'client backend'"
        ).fetchall()


def start_stress_for_ctrl_c(lab: LabServer, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "playbook.cli", "stress", "--dsn", lab.dsn(APP_ROLE), "--pool", "psycopg",
         "--duration", "60", "--out", str(out), "--yes"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ},
    )  # fmt: skip


def interrupt_when(lab: LabServer, process: subprocess.Popen[str], where: str, what: str) -> str:
    """SIGINT as soon as a stress session matching `where` is on the server; the stderr."""
    try:
        deadline = time.monotonic() + 60
        while stress_sessions(lab, where) < 1:
            assert process.poll() is None and time.monotonic() < deadline, (
                f"the stress never {what}: {sessions_seen(lab)}"
            )
            time.sleep(0.05)  # polling for the evidence, within the deadline
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return stderr


def assert_interrupted_and_closed(lab: LabServer, process: subprocess.Popen[str], stderr: str) -> None:
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr, stderr
    assert "cannot read" not in stderr and "error ignored" not in stderr, stderr
    deadline = time.monotonic() + 10
    while stress_sessions(lab):
        assert time.monotonic() < deadline, "connections left open after Ctrl-C"
        time.sleep(0.1)


def test_ctrl_c_closes_every_connection_and_exits_130(lab: LabServer, tmp_path: Path) -> None:
    """Ctrl-C once the pool's own sessions are open (not the setup one): mid-run."""
    process = start_stress_for_ctrl_c(lab, tmp_path)
    stderr = interrupt_when(lab, process, "application_name NOT LIKE '%-setup'", "opened its pool")
    assert_interrupted_and_closed(lab, process, stderr)


def test_ctrl_c_at_its_first_session_exits_130_with_nothing_open(lab: LabServer, tmp_path: Path) -> None:
    """The earliest interrupt: Ctrl-C as soon as the stress's first session is on the server (its
    setup session, reading the limits the pool's sessions run under). psycopg cut mid-query must
    not turn it into exit 3 ("cannot read the limits the pool's sessions run under")."""
    process = start_stress_for_ctrl_c(lab, tmp_path)
    stderr = interrupt_when(lab, process, "true", "opened a session")
    assert_interrupted_and_closed(lab, process, stderr)

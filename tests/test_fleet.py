"""`playbook fleet` end to end: 23 targets on three real lab servers (healthy databases and roles,
live incidents, a server that comes up while the fleet retries it, an unreachable one), run by real
Dask: a LocalCluster, then an existing `dask scheduler` with two `dask worker` processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest

from conftest import refused_port, run_cli, xact_age
from playbook import cli
from playbook.fleet.dispatch import fleet_exit_code, schema, validate
from playbook.lab.scenarios import start_scenario
from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.wait import wait_until

SECRET_ENV = "FLEET_TEST_SECRET_PASSWORD"
HEALTHY_DBS = [f"fleet_db{i:02d}" for i in range(1, 11)]
ROLES = [f"fleet_role{i}" for i in range(1, 7)]  # odd ones get pg_monitor, even ones run with less


class World:
    """The servers, the incidents and the TARGETS.yaml the fleet tests share."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.a = LabServer(base / "a")  # healthy: databases and roles
        self.b = LabServer(base / "b")  # incidents: idle_session_timeout kills, a transaction left open
        self.c = LabServer(base / "c")  # down when the fleet starts, up while it retries
        self.env = {SECRET_ENV: "s3cret-" + os.urandom(6).hex()}
        self.targets = base / "targets.yaml"

    def build(self) -> psycopg.Connection[Any]:
        """Start the servers and fill them; returns b's transaction left open, opened first so that
        it is old enough (LEAK-001 wants 10 s) by the time the rest is ready."""
        self.b.up()
        leaky = psycopg.connect(self.b.dsn(APP_ROLE), application_name="fleet-leaky")
        leaky.execute("SELECT 1")
        self.a.up()
        self.c.up()
        with self.a.admin() as conn:
            for db in HEALTHY_DBS:
                conn.execute(f"CREATE DATABASE {db}")
            conn.execute(
                psycopg.sql.SQL("CREATE ROLE fleet_secret LOGIN PASSWORD {}").format(
                    psycopg.sql.Literal(self.env[SECRET_ENV])
                )
            )
        for number, role in enumerate(ROLES, start=1):
            self.a.create_role(role)
            if number % 2:
                with self.a.admin() as conn:
                    conn.execute(f"GRANT pg_monitor TO {role}")
        self.c.down()
        self.write_targets()
        return leaky

    def write_targets(self) -> None:
        a, b, c = self.a, self.b, self.c
        rows: list[dict[str, Any]] = []
        for number, db in enumerate(HEALTHY_DBS):
            team = ["payments", "search"][number % 2]
            rows.append({"name": db, "dsn": a.dsn(dbname=db), "labels": {"team": team, "server": "a"}})
        for role in ROLES:
            rows.append({"name": role, "dsn": a.dsn(user=role), "labels": {"team": "ops", "server": "a"}})
        rows += [
            {
                # No passfile: the password comes from the variable, on the worker, and nowhere else.
                "name": "secret-role",
                "dsn": f"host=127.0.0.1 port={a.port} dbname=lab user=fleet_secret sslmode=disable",
                "password_env": SECRET_ENV,
                "labels": {"team": "ops", "server": "a"},
            },
            {"name": "unknown-db", "dsn": a.dsn(dbname="no_such_db"), "labels": {"server": "a"}},
            {"name": "too-slow", "dsn": a.dsn(), "duration": 6, "deadline": 2, "labels": {"server": "a"}},
            {
                "name": "b-timeout",
                "dsn": b.dsn(),
                "duration": 5,
                "server_log": [str(b.stderr_log)],
                "labels": {"team": "search", "server": "b"},
            },
            {"name": "b-leak", "dsn": b.dsn(), "labels": {"team": "payments", "server": "b"}},
            {"name": "c-restarting", "dsn": c.dsn(), "retries": 3, "labels": {"server": "c"}},
            {
                "name": "unreachable",
                "dsn": f"host=127.0.0.1 port={refused_port()} dbname=x user=y",
                "retries": 1,
                "labels": {"server": "none"},
            },
        ]
        text = "defaults:\n  labels: {env: test}\ntargets:\n" + "".join(
            f"  - {json.dumps(row)}\n" for row in rows
        )
        self.targets.write_text(text)

    def names(self) -> list[str]:
        return [
            json.loads(line[4:])["name"]
            for line in self.targets.read_text().splitlines()
            if line[:4] == "  - "
        ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Three lab servers and live incidents on b, for the whole module (both fleets see them)."""
    world = World(tmp_path_factory.mktemp("fleet"))
    leaky: psycopg.Connection[Any] | None = None
    scenario = None
    try:
        leaky = world.build()
        scenario = start_scenario("idle_session_timeout", world.b, world.base / "scenario")
        wait_until(scenario.signature_seen, timeout=30, what="idle_session_timeout kills on server b")
        old_enough = lambda: xact_age(world.b, "fleet-leaky") >= 10.5  # noqa: E731
        wait_until(old_enough, timeout=30, what="a transaction idle for 10 s on b")
        yield world
    finally:
        if scenario is not None:
            scenario.stop()
        if leaky is not None:
            leaky.close()
        for server in (world.a, world.b, world.c):
            server.destroy()


def bring_c_up_when_retried(world: World, out: Path) -> threading.Thread:
    """Start server c once the fleet has failed to reach it and said it will retry."""
    log = out / "logs" / "c-restarting.log"

    def retried() -> bool:
        return log.exists() and "retrying" in log.read_text()

    def bring_up() -> None:
        wait_until(retried, timeout=120, what="the fleet retrying server c")
        world.c.up()

    thread = threading.Thread(target=bring_up, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def local_fleet(world: World) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = world.base / "local"
    riser = bring_c_up_when_retried(world, out)
    result = run_cli(
        "fleet", str(world.targets), "--out", str(out), "--workers", "4", "--duration", "1",
        "--interval", "0.5", "--render", "critical", "--history", str(out.parent / "history"),
        env=world.env, timeout=480,  # a deadline for a hang; CI takes ~110 s
    )  # fmt: skip
    riser.join(timeout=5)
    return result, out


@pytest.fixture(scope="module")
def dask_cluster(world: World) -> Iterator[str]:
    """A real `dask scheduler` and two `dask worker` processes, in a folder of their own, ended after."""
    from distributed import Client

    folder = world.base / "dask"
    folder.mkdir()
    # Port 0 and a scheduler file: the scheduler binds a port nobody else can take meanwhile.
    scheduler_file = folder / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, **world.env, "DASK_TEMPORARY_DIRECTORY": str(folder)}
    # A session each: the end kills a worker with the process its nanny spawned, in one signal.
    common = {
        "cwd": folder, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
        "start_new_session": True,
    }  # fmt: skip
    processes = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)],
            **common,
        )  # type: ignore[call-overload]
    ]  # fmt: skip
    try:
        for number in (1, 2):
            processes.append(
                subprocess.Popen(
                    [dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "2",
                     "--no-dashboard", "--name", f"w{number}",
                     "--local-directory", str(folder / f"w{number}")],
                    **common,
                )  # type: ignore[call-overload]
            )  # fmt: skip
        with Client(scheduler_file=str(scheduler_file), timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
            address = str(client.scheduler.address)
        yield address
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def remote_fleet(world: World, dask_cluster: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = world.base / "remote"
    result = run_cli(
        "fleet", str(world.targets), "--out", str(out), "--scheduler", dask_cluster, "--duration", "1",
        "--interval", "0.5", "--render", "critical", env=world.env, timeout=480,  # a hang's deadline
    )  # fmt: skip
    return result, out


def rows_of(out: Path) -> dict[str, dict[str, Any]]:
    fleet = json.loads((out / "fleet.json").read_text())
    validate(fleet)
    return {row["name"]: row for row in fleet["targets"]}


def check_fleet(world: World, out: Path, *, scheduler: str) -> dict[str, dict[str, Any]]:
    """What both fleets must show, whatever ran them."""
    fleet = json.loads((out / "fleet.json").read_text())
    validate(fleet)
    assert fleet["schema"] == "pg-session-playbook/fleet/v1"
    assert fleet["scheduler"] == scheduler
    assert [row["name"] for row in fleet["targets"]] == world.names()  # the file's order, every target
    assert len(fleet["targets"]) >= 20
    rows = {row["name"]: row for row in fleet["targets"]}
    for name in [*HEALTHY_DBS, *ROLES, "secret-role", "c-restarting"]:
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["error"] is None and row["labels"]["env"] == "test"
        summary = json.loads((out / Path(row["report"]).parent / "summary.json").read_text())
        assert summary["status"] == "ok" and (out / row["report"]).is_file()
    timeout = rows["b-timeout"]
    assert (timeout["status"], timeout["top_cause"]) == ("critical", "timeout"), timeout
    assert timeout["worst_finding"].startswith("TMO-")
    leak = rows["b-leak"]
    assert leak["status"] in ("warning", "critical") and leak["top_cause"] == "leak", leak
    # Errors stay in their own rows; only the refusals a restart explains were retried.
    assert rows["unknown-db"]["status"] == "error" and rows["unknown-db"]["attempts"] == 1
    assert "unknown database" in rows["unknown-db"]["error"]
    assert rows["unreachable"]["status"] == "error" and rows["unreachable"]["attempts"] == 2
    assert "nothing listens there" in rows["unreachable"]["error"]
    slow = rows["too-slow"]
    assert slow["status"] == "error" and "deadline of 2 s" in slow["error"] and slow["seconds"] < 5, slow
    for row in rows.values():
        assert (row["report"] is None) == (row["status"] == "error")
        assert "s3cret" not in json.dumps(row)
    return rows


def test_a_local_fleet_examines_every_target_and_exits_with_the_worst(
    world: World, local_fleet: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    result, out = local_fleet
    assert result.returncode == 2, result.stderr[-3000:]  # critical and error targets, --fail-on warning
    rows = check_fleet(world, out, scheduler="local")
    assert rows["c-restarting"]["attempts"] >= 2  # refused while down, diagnosed once up
    assert "retrying" in (out / "logs" / "c-restarting.log").read_text()
    # The deadline killed the run: it would have published long before the fleet ended, and its
    # unfinished folders are gone.
    assert not (out / "targets" / "too-slow" / "summary.json").exists()
    assert not [p for p in (out / "targets").rglob(".*") if "partial" in p.name or "pages" in p.name]
    assert f"index: {out.resolve() / 'index.html'}" in result.stdout
    assert "Traceback" not in result.stderr


def test_pages_are_rendered_only_at_or_above_render(
    world: World, local_fleet: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    _, out = local_fleet
    rows = rows_of(out)
    executed = {p.parent.name for p in (out / "targets").glob("*/*.ipynb")}
    assert executed == {"b-timeout"}  # --render critical: the one critical target, nothing else
    assert rows["b-timeout"]["pages"] == ["triage", "timeouts"]  # not the leak's page: a warning
    for page in rows["b-timeout"]["pages"]:
        assert (out / "targets" / "b-timeout" / f"{page}.html").is_file()
    summary = json.loads((out / "targets" / "b-timeout" / "summary.json").read_text())
    assert {nb["name"] for nb in summary["notebooks"] if nb["status"] == "ok"} == set(
        rows["b-timeout"]["pages"]
    )
    assert all(rows[name]["pages"] == [] for name in rows if name != "b-timeout")
    # The one-file report holds the pages too: it was published with them, not left from the
    # first, page-less run.
    combined = (out / "targets" / "b-timeout" / "report.html").read_text()
    for page in rows["b-timeout"]["pages"]:
        assert f'id="page-{page}"' in combined


def test_history_records_each_diagnosed_target_once(
    local_fleet: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """--history: one record per target, with the status the fleet reports; a target in error is
    recorded once after its retries, with its reason."""
    _, out = local_fleet
    history = out.parent / "history"
    for name, row in rows_of(out).items():
        records = sorted((history / name / "runs").glob("*/record.json"))
        assert len(records) == 1, (name, records)
        summary = json.loads((records[0].parent / "summary.json").read_text())
        assert summary["status"] == row["status"], name
        if row["status"] == "error":
            record = json.loads(records[0].read_text())
            assert record["error"] and record["logs_until"] is None and record["report"] is None, name
            drawn = run_cli("history", str(history / name))  # the trend page shows it
            assert drawn.returncode == 0 and "no diagnosis: " in (history / name / "index.html").read_text()


def test_the_index_links_every_report_and_filters_by_label(
    world: World, local_fleet: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    _, out = local_fleet
    html = (out / "index.html").read_text()
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert body.count("<tr ") == len(world.names())
    links = re.findall(r'href="([^"]+)"', body)
    rows = rows_of(out)
    assert sorted(links) == sorted(row["report"] for row in rows.values() if row["report"])
    assert all((out / link).is_file() for link in links)
    for key in ("team", "server", "env"):
        assert f'data-filter="label:{key}"' in html
    assert "<script src" not in html and "http://" not in html and "https://" not in html  # self-contained


def test_the_same_fleet_runs_on_an_existing_dask_cluster(
    world: World, dask_cluster: str, remote_fleet: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    result, out = remote_fleet
    assert result.returncode == 2, result.stderr[-3000:]
    rows = check_fleet(world, out, scheduler=dask_cluster)
    assert rows["c-restarting"]["attempts"] == 1  # up since the first fleet
    executed = {p.parent.name for p in (out / "targets").glob("*/*.ipynb")}
    assert executed == {"b-timeout"}


def test_a_fleet_where_every_target_errored_exits_3(world: World, dask_cluster: str) -> None:
    targets = world.base / "all-down.yaml"
    targets.write_text(
        "targets:\n"
        f"  - {{name: nobody, dsn: 'host=127.0.0.1 port={refused_port()} dbname=x user=y', retries: 0}}\n"
        f"  - {{name: no-db, dsn: '{world.a.dsn(dbname='nope')}'}}\n"
    )
    out = world.base / "all-down"
    result = run_cli("fleet", str(targets), "--out", str(out), "--scheduler", dask_cluster, "--duration", "1")
    assert result.returncode == 3, result.stderr
    fleet = json.loads((out / "fleet.json").read_text())
    assert fleet["status"] == "error" and fleet["counts"]["error"] == 2 and fleet["exit_code"] == 3
    assert [row["attempts"] for row in fleet["targets"]] == [1, 1]


@pytest.mark.parametrize(
    ("statuses", "fail_on", "code"),
    [
        (["ok", "ok"], "warning", 0),
        (["ok", "warning"], "warning", 1),
        (["ok", "warning"], "critical", 0),
        (["warning", "critical"], "warning", 2),
        (["ok", "error"], "warning", 2),  # a database nobody could examine counts as critical
        (["ok", "error"], "critical", 2),
        (["critical", "error"], "never", 0),
        (["error", "error"], "never", 3),  # nothing was diagnosed at all
        (["error"], "warning", 3),
    ],
)
def test_the_exit_code_is_the_fleets_worst_by_fail_on(statuses: list[str], fail_on: str, code: int) -> None:
    assert fleet_exit_code(statuses, fail_on) == code


def test_the_schema_rejects_a_fleet_that_breaks_the_contract(
    local_fleet: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = local_fleet
    fleet = json.loads((out / "fleet.json").read_text())
    for breakage in (
        {"schema": "pg-session-playbook/fleet/v0"},
        {"targets": []},
        {"targets": [{**fleet["targets"][0], "status": "fine"}]},
        {"targets": [{**fleet["targets"][0], "dsn": "host=x password=hunter2"}]},
        {"targets": [{**fleet["targets"][0], "worst_finding": "OOPS-1"}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**fleet, **breakage}, schema())


BAD_TARGETS = {
    "malformed YAML": ("targets: [ {name: x", "is not valid YAML at line"),
    "no targets": ("defaults: {duration: 5}\n", "names no target"),
    "unknown top key": ("targets: [{name: a, dsn: 'dbname=a'}]\nextra: 1\n", "unknown key 'extra'"),
    "unknown target key": ("targets: [{name: a, dsn: 'dbname=a', colour: red}]\n", "unknown key 'colour'"),
    "password in a DSN": ("targets: [{name: a, dsn: 'dbname=a password=hunter2'}]\n", "has a password in"),
    "password in a URL": ("targets: [{name: a, dsn: 'postgresql://u:hunter2@h/db'}]\n", "has a password in"),
    "dsn and service": ("targets: [{name: a, dsn: 'dbname=a', service: a}]\n", "exactly one of"),
    "twice the same name": ("targets: [{name: a, service: a}, {name: a, service: b}]\n", "appears twice"),
    "a name that is a path": ("targets: [{name: ../a, service: a}]\n", "needs a `name`"),
    "negative duration": ("targets: [{name: a, service: a, duration: -1}]\n", "positive number"),
    "labels not a mapping": ("targets: [{name: a, service: a, labels: [x]}]\n", "labels must map"),
}


@pytest.mark.parametrize("case", list(BAD_TARGETS), ids=list(BAD_TARGETS))
def test_bad_targets_are_one_sentence_and_exit_3(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = BAD_TARGETS[case]
    targets = tmp_path / "targets.yaml"
    targets.write_text(text)
    code = cli.main(["fleet", str(targets), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert "hunter2" not in err
    assert not (tmp_path / "out").exists()  # refused before any cluster or folder


@pytest.mark.parametrize(
    "argv",
    [
        ["fleet", "missing.yaml", "--out", "x"],
        ["fleet", "t.yaml", "--out", "x", "--render", "sometimes"],
        ["fleet", "t.yaml", "--out", "x", "--workers", "0"],
        ["fleet", "t.yaml"],
        ["fleet", "t.yaml", "--out", "x", "--scheduler", "not-an-address"],
    ],
    ids=["missing file", "unknown --render", "zero workers", "no --out", "bad scheduler address"],
)
def test_bad_arguments_are_one_sentence_and_exit_3(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text("targets: [{name: a, service: a}]\n")
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors exit through Parser.error
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 3 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("argv", [["--help"], ["fleet", "--help"]], ids=" ".join)
def test_parsing_loads_neither_dask_nor_the_lab(argv: list[str]) -> None:
    probe = (
        "import sys, json\nfrom playbook.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "sys.stdout = sys.__stdout__\nprint('\\n' + json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    heavy = {
        m
        for m in loaded
        if m.split(".")[0] in {"dask", "distributed", "yaml"} or m.startswith("playbook.lab")
    }
    assert not heavy, heavy


def finding(id_: str, severity: str, notebook: str) -> dict[str, Any]:
    return {"id": id_, "severity": severity, "notebook": notebook}


@pytest.mark.parametrize(
    ("status", "render", "pages"),
    [
        ("ok", "warning", []),
        ("ok", "all", ["triage"]),
        ("warning", "critical", []),
        ("warning", "warning", ["triage", "leaks", "timeouts"]),
        ("critical", "critical", ["triage", "timeouts"]),  # the critical story, not its side warnings
        ("critical", "all", ["triage", "leaks", "timeouts"]),
        ("error", "all", []),  # nothing was diagnosed: nothing to show
    ],
)
def test_pages_follow_the_render_threshold(status: str, render: str, pages: list[str]) -> None:
    from playbook.fleet.job import pages_for

    findings = [finding("NET-003", "info", "network")]
    if status != "ok":
        worst = "warning" if status == "warning" else "critical"
        findings += [finding("LEAK-001", "warning", "leaks"), finding("TMO-001", worst, "timeouts")]
    assert pages_for({"status": status, "findings": findings}, render) == pages


def test_the_default_in_flight_follows_the_cores_the_window_and_the_memory() -> None:
    """default_workers on this machine's real cores and memory: the least of its bounds, each
    respected, a longer window allowing more, fewer cores or less memory fewer."""
    import psutil

    from playbook.fleet import dispatch

    available = psutil.virtual_memory().available
    fleet = [(10.0, 610.0)] * 50
    here = dispatch.default_workers(fleet)
    assert here.cores == len(os.sched_getaffinity(0))
    assert abs(here.available_mb * 1024 * 1024 - available) < 0.2 * available  # psutil's, moments apart
    assert here.workers == min(here.by_cpu, here.by_memory, here.by_deadline or 50, 50) >= 1
    # Each bound holds: the targets' CPU fits the share of the cores, their memory the share of RAM.
    assert here.workers * here.cores_per_target <= here.cores * dispatch.CPU_SHARE or here.workers == 1
    assert here.workers * dispatch.TARGET_MEMORY_MB <= dispatch.MEMORY_SHARE * here.available_mb
    assert here.by_cpu > 2 * here.cores  # a target waits on the network: more than the old 2 per core
    assert f"fleet: {here.workers} targets in flight by default" in here.line()

    longer = dispatch.default_workers([(60.0, 660.0)] * 500, available_bytes=available)
    assert longer.by_cpu > here.by_cpu  # the same fixed cost spread over a longer window
    one_core = dispatch.default_workers(fleet, cores=1, available_bytes=available)
    assert one_core.by_cpu < dispatch.default_workers(fleet, cores=2, available_bytes=available).by_cpu
    pages = dispatch.default_workers(fleet, "all", available_bytes=available)
    assert pages.by_cpu < here.by_cpu  # every target executes a notebook in a kernel
    small = dispatch.default_workers([(60.0, 660.0)] * 500, available_bytes=1024**3)  # 1 GB free
    assert small.workers == small.by_memory == int(512 / dispatch.TARGET_MEMORY_MB)
    tight = dispatch.default_workers([(10.0, 11.0)] * 50, cores=2, available_bytes=available)  # 1 s spare
    assert tight.workers == tight.by_deadline and tight.by_deadline < here.by_cpu
    assert dispatch.default_workers([(10.0, 610.0)] * 3).workers == 3  # never more than the targets
    asked = dispatch.default_workers(fleet, asked=7)
    assert asked.in_flight == 7 and "7 targets in flight (--workers)" in asked.line()


@pytest.mark.parametrize("workers", [None, "3"], ids=["default", "--workers 3"])
def test_a_local_fleet_says_how_many_in_flight_and_workers_wins(workers: str | None, tmp_path: Path) -> None:
    """A real LocalCluster fleet: one line on stderr derives the number, fleet.json records it."""
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n"
        + "".join(
            f"  - {{name: t{n}, dsn: 'host=127.0.0.1 port={refused_port()} dbname=x user=y', retries: 0}}\n"
            for n in range(2)
        )
    )
    out = tmp_path / "out"
    result = run_cli("fleet", str(targets), "--out", str(out), "--duration", "1",
                     *(["--workers", workers] if workers else []), timeout=240)  # fmt: skip
    assert result.returncode == 3, result.stderr[-3000:]  # nothing could be diagnosed
    said = [line for line in result.stderr.splitlines() if line.startswith("fleet: ")]
    assert len(said) == 1, result.stderr[-3000:]
    fleet = json.loads((out / "fleet.json").read_text())
    if workers:
        assert fleet["workers"] == 3 and said[0].startswith("fleet: 3 targets in flight (--workers)")
    else:  # two targets: never more in flight than that, whatever the cores and memory allow
        assert fleet["workers"] == 2 and said[0].startswith("fleet: 2 targets in flight by default")
    assert "memory" in said[0] and "cores" in said[0] and "Traceback" not in result.stderr


def test_a_target_names_its_pgbouncer_and_the_zone_of_its_server_log(
    private_lab: LabServer, tmp_path: Path
) -> None:
    """Every run option is a target key: a target sampling its PgBouncer's console and reading its
    log, and a target whose server log was written in Asia/Shanghai (log_timezone since set back to
    UTC), read with `log_tz` within since/until; the same log without `log_tz` is read 8 hours off
    and its kills fall outside the window."""
    from playbook.lab.pgbouncer_process import PgBouncer
    from playbook.lab.scenarios import IDLE_SESSION_FATAL

    lab = private_lab
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    lab.alter_system({"log_timezone": "Asia/Shanghai"})
    dsn = lab.create_role("zone_app")
    with lab.admin() as conn:
        conn.execute("ALTER ROLE zone_app SET idle_session_timeout = '1s'")
    sessions = [psycopg.connect(dsn) for _ in range(3)]  # each idle past 1 s: the server ends it
    try:
        killed = lambda: lab.stderr_log.read_text().count(IDLE_SESSION_FATAL) >= 3 or None  # noqa: E731
        wait_until(killed, timeout=30, what="three idle-session kills in the server log")
    finally:
        for session in sessions:
            session.close()
    kills = [line for line in lab.stderr_log.read_text().splitlines() if IDLE_SESSION_FATAL in line]
    assert all(" CST " in line for line in kills), kills  # Shanghai's clock, in Chicago's letters
    with lab.admin() as conn:
        conn.execute("ALTER ROLE zone_app RESET idle_session_timeout")
    lab.alter_system({"log_timezone": None})  # back to the lab's UTC: the live value no longer helps
    until = datetime.now(timezone.utc) + timedelta(seconds=1)
    window = {"since": since.isoformat(), "until": until.isoformat()}
    with PgBouncer(tmp_path / "bnc", lab) as bouncer:
        with psycopg.connect(bouncer.dsn(), autocommit=True, prepare_threshold=None) as conn:
            conn.execute("SELECT 1")  # something in PgBouncer's log
        rows = [
            {"name": "shanghai", "dsn": lab.dsn(), "server_log": str(lab.stderr_log),
             "log_tz": "Asia/Shanghai", **window},
            {"name": "shanghai-read-as-utc", "dsn": lab.dsn(), "server_log": str(lab.stderr_log), **window},
            {"name": "pooled", "dsn": lab.dsn(), "pgbouncer": bouncer.console_dsn(),
             "pgbouncer_log": [str(bouncer.log_file)], "app_tz": "UTC", "prefix": "%m [%p] %q%u@%d "},
        ]  # fmt: skip
        targets = tmp_path / "targets.yaml"
        targets.write_text("targets:\n" + "".join(f"  - {json.dumps(row)}\n" for row in rows))
        out = tmp_path / "out"
        result = run_cli(
            "fleet", str(targets), "--out", str(out), "--workers", "3", "--duration", "2",
            "--interval", "0.5", "--render", "critical", timeout=300,
        )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    fleet = rows_of(out)
    assert all(row["error"] is None for row in fleet.values()), fleet

    def summary(name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((out / "targets" / name / "summary.json").read_text())
        return loaded

    shanghai = fleet["shanghai"]
    assert (shanghai["top_cause"], shanghai["worst_finding"]) == ("timeout", "TMO-001"), shanghai
    assert summary("shanghai")["zones"]["server_log"].startswith("Asia/Shanghai")
    as_utc = fleet["shanghai-read-as-utc"]
    assert as_utc["top_cause"] != "timeout" and as_utc["worst_finding"] != "TMO-001", as_utc
    assert summary("shanghai-read-as-utc")["zones"]["server_log"].startswith("UTC")
    manifest = json.loads((out / "targets" / "pooled" / "evidence" / "manifest.json").read_text())
    assert "pgbouncer_console" in manifest["collected"], manifest["collected"]
    assert manifest["pgbouncer_logs"] == [str(bouncer.log_file)]
    assert summary("pooled")["zones"]["app_log"].startswith("UTC")
    assert (out / "targets" / "pooled" / "evidence" / "pgbouncer_pools.parquet").exists()

"""`playbook probe path` against the lab server behind the chaos proxy set to known cut-offs, and
`playbook run --path-probe DIR` joining what it found (issue 18).

The proxy resets flows idle 3 s either counting TCP keepalives as activity (a NAT or load balancer)
or only payload (an application-level proxy); the probe's ladder up to 8 s (1, 2, 4, 8 s) must find
the cut within one rung, and tell the two kinds apart by whether its keepalive connections survived.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import run_cli
from playbook import APPLICATION_NAME
from playbook.diagnose import diagnose_all
from playbook.diagnose.chain import chain_links
from playbook.diagnose.path_cutoff import probe_verdict
from playbook.errors import PlaybookError
from playbook.evidence import Evidence
from playbook.lab.pgbouncer_process import PgBouncer, find_pgbouncer
from playbook.lab.proxy import ChaosProxy
from playbook.lab.server import MONITOR_ROLE, LabServer
from playbook.probes.path import probe_path, read_probe
from playbook.target import Target

CUT_S = 3.0
MAX_IDLE = "8"  # rungs 1, 2, 4, 8 s: the cut lies between the 2 s and the 4 s rung


@pytest.fixture
def proxy(lab: LabServer) -> Iterator[ChaosProxy]:
    with ChaosProxy("127.0.0.1", lab.port) as chaos:
        yield chaos


def probe(dsn: str, out: Path, max_idle: str = MAX_IDLE) -> tuple[subprocess.CompletedProcess[str], dict]:
    done = run_cli("probe", "path", "--dsn", dsn, "--max-idle", max_idle, "--out", str(out), timeout=120)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return done, summary


def keepalive_idles(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"keepalives?_idle\"?\s*[=:]\s*(\d+)", text)]


def run_with_probe(lab: LabServer, probe_dir: Path, out: Path) -> Evidence:
    """A short `playbook run` joining the probe; its evidence as the report saved it."""
    done = run_cli(
        "run", "--dsn", lab.dsn(), "--duration", "2", "--notebooks", "triage",
        "--path-probe", str(probe_dir), "--out", str(out), timeout=180,
    )  # fmt: skip
    assert done.returncode in (1, 2), done.stderr
    return Evidence.load(out / "evidence")


@pytest.mark.parametrize("keepalives_count", [True, False], ids=["nat-like", "application-level"])
def test_the_probe_finds_the_cut_within_a_rung_and_whether_keepalives_help(
    lab: LabServer, proxy: ChaosProxy, tmp_path: Path, keepalives_count: bool
) -> None:
    proxy.reset_idle_after(CUT_S, count_keepalives=keepalives_count)
    out = tmp_path / "probe"
    done, summary = probe(proxy.dsn_for(lab.dsn()), out)
    path = summary["path"]
    assert path["survived_up_to_s"] == 2.0 and path["failed_from_s"] == 4.0, path  # within one rung
    assert path["kind"] == "measured" and abs(path["idle_cutoff_s"] - CUT_S) <= 0.5, path
    assert path["how"] == "reset"
    assert path["keepalives_help"] is keepalives_count
    assert summary["status"] == ("warning" if keepalives_count else "critical")
    assert done.returncode == (1 if keepalives_count else 2), done.stderr
    assert "Traceback" not in done.stderr and "rung" in done.stderr  # progress on stderr
    assert (out / "index.html").read_text().count("data:image/png;base64,") == 1
    assert f"cut idle connections at {path['idle_cutoff_s']:.1f} s" in done.stdout

    # One real `playbook run` (the NAT-like kind) joins the folder; the other kind's evidence is the
    # same frame read by the same source, diagnosed by the same functions.
    if keepalives_count:
        evidence = run_with_probe(lab, out, tmp_path / "run")
        findings = json.loads((tmp_path / "run" / "summary.json").read_text())["findings"]
    else:
        frame, meta = read_probe(out)
        evidence = Evidence(frames={"path_probe": frame}, snapshots={"path_probe": meta})
        findings = [f.to_dict() for f in diagnose_all(evidence)]
    path_link = chain_links(evidence)[-1]
    assert path_link.after.layer == "network path" and path_link.after.source == "measured"
    assert abs((path_link.after.seconds or 0) - CUT_S) <= 0.5
    net = next(f for f in findings if f["id"] == "NET-007")
    idles = keepalive_idles(net["recommendation"])
    if keepalives_count:
        assert idles and max(idles) < CUT_S, idles  # keepalives below the cut, through a hop that counts them
    else:
        assert not idles, idles  # no keepalive advice through a hop that ignores them
        assert "Let the pool close connections idle 1 s" in net["recommendation"]
        assert "timeout client" in net["recommendation"]  # or the hop's own timeout, named


def test_a_silent_drop_is_found_by_the_bounded_query_and_bounds_the_cut(
    lab: LabServer, proxy: ChaosProxy
) -> None:
    """A NAT that forgets idle flows says nothing: the rung's SELECT 1 finds it within its bound,
    and the cut-off is then the smallest failing rung, "at most"."""
    proxy.drop_idle_after(CUT_S)
    target = Target(proxy.dsn_for(lab.dsn()))
    target.check().close()
    started = time.monotonic()
    frame = probe_path(target, max_idle_s=4, timeout_s=2)
    assert time.monotonic() - started < 4 + 2 * 2 + 5  # the longest rung, two bounded queries, slack
    verdict = probe_verdict(frame)
    assert verdict is not None and verdict.how == "silent drop" and verdict.kind == "at most"
    assert verdict.idle_cutoff_s == 4.0 and verdict.survived_up_to_s == 2.0
    assert verdict.keepalives_help is True  # the proxy counts keepalive segments, as a NAT does


def test_a_path_that_holds_is_ok_with_no_cut_off(lab: LabServer, proxy: ChaosProxy, tmp_path: Path) -> None:
    done, summary = probe(proxy.dsn_for(lab.dsn()), tmp_path / "probe", max_idle="2")
    assert done.returncode == 0, done.stderr
    assert summary["status"] == "ok" and summary["findings"] == []
    assert summary["path"]["idle_cutoff_s"] is None and summary["path"]["keepalives_help"] is None
    assert [r["rung_s"] for r in summary["path"]["rungs"]] == [1.0, 2.0]


def test_through_pgbouncer_its_own_idle_timeout_is_found_and_keepalives_do_not_help(
    lab: LabServer, tmp_path: Path
) -> None:
    """PgBouncer with its default startup-parameter handling (it refuses `options`) in transaction
    pooling, cutting clients idle 3 s: the probe gets through and names the pooler's own end."""
    if find_pgbouncer() is None:
        pytest.fail("pgbouncer is not installed: `make install` as root installs it")
    settings: dict[str, str | int | float] = {"pool_mode": "transaction", "client_idle_timeout": int(CUT_S)}
    with PgBouncer(tmp_path / "bnc", lab, settings) as bouncer:
        done, summary = probe(bouncer.dsn(MONITOR_ROLE), tmp_path / "probe")
    assert done.returncode == 2, done.stderr
    path = summary["path"]
    assert path["how"] == "server end" and "client_idle_timeout" in (path["said"] or ""), path
    assert path["survived_up_to_s"] == 2.0 and path["failed_from_s"] == 4.0
    assert path["keepalives_help"] is False  # a pooler counts payload, not keepalives
    assert "client_idle_timeout = 0" in summary["findings"][0]["recommendation"]
    assert "connection pooler" in summary["target"]["pooler"]


def own_connections(lab: LabServer) -> int:
    with psycopg.connect(lab.dsn(), autocommit=True, application_name="probe-path-test") as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APPLICATION_NAME,)
        ).fetchone()
    return int(row[0]) if row else 0


def wait_for(check: object, deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)  # polling the evidence, bounded by the deadline
    raise AssertionError(f"not within {deadline_s} s: {what}")


def test_ctrl_c_closes_every_connection_and_exits_130(lab: LabServer, tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "playbook.cli", "probe", "path", "--dsn", lab.dsn(), "--max-idle", "60",
         "--out", str(tmp_path / "probe")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=str(Path(__file__).resolve().parents[1]),
    )  # fmt: skip
    try:
        wait_for(lambda: own_connections(lab) >= 12, 60, "the probe's 12 connections open")
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    wait_for(lambda: own_connections(lab) == 0, 30, "no connection of the probe's left on the server")
    assert not (tmp_path / "probe" / "summary.json").exists()


@pytest.mark.parametrize("value", ["abc", "nan", "99999"])
def test_a_bad_max_idle_is_one_sentence(value: str, tmp_path: Path) -> None:
    done = run_cli(
        "probe", "path", "--dsn", "host=127.0.0.1 port=1", "--max-idle", value, "--out", str(tmp_path)
    )
    assert done.returncode == 3
    assert done.stderr.strip().count("\n") == 0 and "--max-idle must be" in done.stderr, done.stderr


def test_a_missing_or_garbled_probe_folder_is_one_sentence(lab: LabServer, tmp_path: Path) -> None:
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "path_probe.json").write_text("{not json")
    done = run_cli("run", "--dsn", lab.dsn(), "--path-probe", str(garbled), "--out", str(tmp_path / "r"))
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "--path-probe" in done.stderr, done.stderr
    assert not (tmp_path / "r").exists()  # said before anything was collected
    for folder in (tmp_path / "missing", tmp_path):  # nothing there; a folder of other files
        with pytest.raises(PlaybookError, match="--path-probe") as said:
            read_probe(folder)
        assert "\n" not in str(said.value)

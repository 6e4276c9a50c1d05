"""A run outlives its own session: the playbook's path is reset at each phase of `playbook run`.

The playbook's own connection goes through the lab's chaos proxy; the test waits on evidence that
the run is in the phase (pg_stat_activity showing the playbook's session running that phase's
query, the console's flow carrying data, the evidence written before the notebooks start), then
cuts the path. Phases that take milliseconds are stretched by the proxy's latency, so that the
query seen is still the phase's when the cut lands. Every run must end with an exit code of a
diagnosis (0, 1 or 2), no traceback, a summary.json, and evidence that names what was lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from playbook import APPLICATION_NAME
from playbook.collect.activity import ActivitySampler
from playbook.collect.pgbouncer_console import PgBouncerSampler
from playbook.evidence import Evidence
from playbook.lab.pgbouncer_process import PgBouncer, find_pgbouncer
from playbook.lab.proxy import ChaosProxy
from playbook.lab.server import LabServer
from playbook.lab.wait import wait_until
from playbook.notebook import load_or_collect
from playbook.target import Target

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 180
STRETCH_MS = 200  # each round trip of the playbook's session, while the phase is awaited


@pytest.fixture
def proxy(lab: LabServer) -> Iterator[ChaosProxy]:
    with ChaosProxy("127.0.0.1", lab.port) as chaos:
        yield chaos


def start_run(
    dsn: str, out: Path, duration: float, interval: float, *args: str, pages: Path | None = None
) -> subprocess.Popen[str]:
    """`playbook run` as a user runs it (the triage notebook only, from `pages` when given), in its
    own process, left running for the test to cut."""
    env = {**os.environ, "PLAYBOOK_NOTEBOOKS": str(pages)} if pages else None
    window = ["--duration", str(duration), "--interval", str(interval), "--notebooks", "triage"]
    return subprocess.Popen(
        [sys.executable, "-m", "playbook.cli", "run", "--dsn", dsn, "--out", str(out), *window, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
        env=env,
    )


def finish(run: subprocess.Popen[str], out: Path) -> tuple[dict[str, Any], Evidence, str]:
    """The run's summary, evidence and stderr, once it ended as a diagnosis: exit 0, 1 or 2 (never 3,
    nothing diagnosed, nor a Python traceback) and a summary.json."""
    try:
        _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            run.kill()
    assert "Traceback" not in stderr, stderr
    assert run.returncode in (0, 1, 2), f"exit {run.returncode}: {stderr}"
    summary_file = out / "summary.json"
    assert summary_file.exists(), stderr
    return json.loads(summary_file.read_text()), Evidence.load(out / "evidence"), stderr


def playbook_running(lab: LabServer, admin: psycopg.Connection[Any], pattern: str) -> bool:
    """Whether a session of the playbook's runs (or has just run) a query like `pattern`."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND query LIKE %s",
        [APPLICATION_NAME, pattern],
    ).fetchone()
    return bool(row and row[0])


def cut_when(lab: LabServer, pattern: str, what: str, cut: Callable[[], None]) -> None:
    with lab.admin() as admin:
        wait_until(lambda: playbook_running(lab, admin, pattern), timeout=60, what=what, poll=0.01)
    cut()


def test_a_connect_the_path_resets_during_start_up_is_tried_once_more(
    lab: LabServer, proxy: ChaosProxy, tmp_path: Path, one_page: Path
) -> None:
    # Start-up takes several round trips, each STRETCH_MS. The server's first answer past the
    # encryption negotiation (one byte, which libpq would retry itself without encryption) is the
    # authentication request: the proxy holds it STRETCH_MS, so the start-up is cut mid-way.
    proxy.set_latency(STRETCH_MS)
    out = tmp_path / "out"
    run = start_run(proxy.dsn_for(lab.dsn()), out, 1, 0.5, pages=one_page)

    def authenticating() -> bool:
        return any(flow["bytes_to_client"] > 1 for flow in proxy.stats()["flows"])

    wait_until(authenticating, timeout=60, what="the first connect's authentication", poll=0.005)
    proxy.reset_all()
    proxy.set_latency(0)
    summary, _, _ = finish(run, out)
    assert proxy.stats()["resets"] == 1
    assert summary["target"]["live"]


def test_settings_phase_lost_once_is_read_again_on_a_fresh_session(
    lab: LabServer, proxy: ChaosProxy, tmp_path: Path, one_page: Path
) -> None:
    proxy.set_latency(STRETCH_MS)
    out = tmp_path / "out"
    run = start_run(proxy.dsn_for(lab.dsn()), out, 2, 0.5, pages=one_page)

    def reset() -> None:
        proxy.reset_all()
        proxy.set_latency(0)

    # the settings' second query: the snapshot has several more to send, each STRETCH_MS long
    cut_when(lab, "%FROM pg_settings WHERE name%", "the playbook reading pg_settings", reset)
    summary, evidence, _ = finish(run, out)
    lost: list[dict[str, Any]] = evidence.snapshots["settings"].get("own_session_lost") or []
    assert [entry["phase"] for entry in lost] == ["settings snapshot"], lost
    assert lost[0]["end"] is not None  # read again: the settings are whole
    assert evidence.settings["server"]["role"] == "playbook_monitor"
    assert evidence.settings["settings"]["max_connections"]["setting"]
    assert summary["target"]["server_version"]


def test_settings_phase_lost_for_good_is_an_evidence_warning(
    lab: LabServer, proxy: ChaosProxy, tmp_path: Path, one_page: Path
) -> None:
    proxy.set_latency(STRETCH_MS)
    out = tmp_path / "out"
    run = start_run(proxy.dsn_for(lab.dsn()), out, 2, 0.5, pages=one_page)

    def path_gone() -> None:
        proxy.refuse_new(True)
        proxy.reset_all()

    cut_when(lab, "%FROM pg_settings WHERE name%", "the playbook reading pg_settings", path_gone)
    summary, evidence, _ = finish(run, out)
    warnings = " ".join(summary["evidence_warnings"])
    assert "lost during the settings snapshot" in warnings, summary["evidence_warnings"]
    assert "settings" not in evidence.snapshots or not evidence.settings.get("server")
    # the probes that need the lost session say so; the connect probes are still rows of evidence
    assert "round-trip" in warnings, summary["evidence_warnings"]
    assert not evidence.frames["connect_probes"]["ok"].any()
    assert evidence.gaps and evidence.gaps[0]["end"] is None  # the sampler found the path gone too


def test_round_trip_probe_lost_mid_series_goes_on_on_a_fresh_session(
    lab: LabServer, proxy: ChaosProxy, tmp_path: Path, one_page: Path
) -> None:
    proxy.set_latency(STRETCH_MS)
    out = tmp_path / "out"
    run = start_run(proxy.dsn_for(lab.dsn()), out, 2, 0.5, pages=one_page)

    def reset() -> None:
        proxy.reset_all()
        proxy.set_latency(0)

    # the first `SELECT 1` of the playbook's is the round-trip probe's (20 of them, STRETCH_MS each)
    cut_when(lab, "SELECT 1", "the round-trip probe", reset)
    summary, evidence, _ = finish(run, out)
    probes = evidence.frames["round_trip_probes"]
    failed = probes[probes["error"].notna()]
    assert len(failed) == 1 and "server closed the connection" in failed["error"].iloc[0], probes
    assert len(probes) == 20 and probes["rtt_ms"].notna().sum() == 19
    assert evidence.snapshots["latency"]["round_trip"]["failures"] == 1
    assert "keepalive_probe" in evidence.snapshots  # read on a fresh session like the lost one
    assert not [w for w in summary["evidence_warnings"] if "probe" in w]


def test_sampler_lost_mid_window_is_a_gap_and_resumes(
    lab: LabServer, proxy: ChaosProxy, tmp_path: Path, one_page: Path
) -> None:
    out = tmp_path / "out"
    run = start_run(proxy.dsn_for(lab.dsn()), out, 5, 0.25, pages=one_page)
    # only the sampler's query reads pg_stat_activity
    cut_when(lab, "%FROM pg_stat_activity%", "the sampler's first tick", proxy.reset_all)
    summary, evidence, _ = finish(run, out)
    assert evidence.gaps, "the sampler's lost session is a gap"
    assert evidence.gaps[0]["end"] is not None  # it reconnected within the window
    assert "NET-005" in {f["id"] for f in summary["findings"]}
    assert evidence.frames["activity_ticks"]["ok"].iloc[-1]


IDLE_CUT_S = 0.3  # the path's idle cut-off, well under the interval: every idle flow is reset
TICK_S = 1.0


def test_a_path_resetting_idle_flows_between_ticks_costs_the_sampler_no_tick(
    lab: LabServer, proxy: ChaosProxy
) -> None:
    proxy.reset_idle_after(IDLE_CUT_S)
    target = Target(proxy.dsn_for(lab.dsn()))
    evidence = ActivitySampler(target, duration=3 * TICK_S, interval=TICK_S, progress=False).run()
    assert len(evidence.ticks) >= 3 and evidence.ticks["ok"].all(), evidence.ticks
    # each tick after the first found its session reset and opened another at once: a closed gap
    assert len(evidence.gaps) >= 2 and all(gap["end"] for gap in evidence.gaps), evidence.gaps
    assert proxy.stats()["idle_resets"] >= len(evidence.gaps)


@pytest.fixture
def bouncer(lab: LabServer, tmp_path: Path) -> Iterator[PgBouncer]:
    if find_pgbouncer() is None:
        pytest.fail("pgbouncer is not installed: `make install` (apt-get install pgbouncer) installs it")
    with PgBouncer(tmp_path / "bnc", lab) as running:
        yield running


def test_pgbouncer_console_lost_mid_window_is_a_gap(
    lab: LabServer, bouncer: PgBouncer, tmp_path: Path, one_page: Path
) -> None:
    out = tmp_path / "out"
    with ChaosProxy("127.0.0.1", bouncer.port) as console_path:
        run = start_run(
            lab.dsn(),
            out,
            5,
            0.25,
            "--pgbouncer",
            console_path.dsn_for(bouncer.console_dsn()),
            pages=one_page,
        )

        def console_sampled() -> bool:
            flows = console_path.stats()["flows"]
            return any(f["bytes_to_client"] > 0 for f in flows)

        # the console's flow has carried answers: the sampler is ticking
        wait_until(console_sampled, timeout=60, what="the console sampler's first answers", poll=0.01)
        console_path.reset_all()
        summary, evidence, _ = finish(run, out)
    console = evidence.snapshots["pgbouncer_console"]
    assert console["gaps"] and console["gaps"][0]["end"] is not None, console
    # a loss between two ticks is replaced within the next one (no tick lost), a loss during a tick
    # costs that tick: which one the reset hit is timing, the recorded, closed gap is not
    assert 0 < console["ticks_ok"] <= console["ticks"], console
    assert "pgbouncer_console" in evidence.manifest["collected"]


def test_a_path_resetting_idle_flows_between_ticks_costs_the_console_no_tick(bouncer: PgBouncer) -> None:
    with ChaosProxy("127.0.0.1", bouncer.port) as console_path:
        console_path.reset_idle_after(IDLE_CUT_S)
        sampler = PgBouncerSampler(console_path.dsn_for(bouncer.console_dsn()), TICK_S)
        console = sampler.run(3 * TICK_S)
        resets = console_path.stats()["idle_resets"]
    ticks = console.frame("pgbouncer_ticks")
    assert len(ticks) >= 3 and ticks["ok"].all(), ticks
    assert len(console.gaps) >= 2 and all(gap["end"] for gap in console.gaps), console.gaps
    assert resets >= len(console.gaps)


def test_notebooks_read_the_evidence_without_the_path(
    lab: LabServer, proxy: ChaosProxy, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = start_run(proxy.dsn_for(lab.dsn()), out, 1, 0.5)

    def evidence_written() -> bool:
        return any(tmp_path.glob(".out.partial-*/evidence/manifest.json"))

    wait_until(evidence_written, timeout=60, what="the run's evidence, before its notebooks", poll=0.01)
    proxy.refuse_new(True)
    proxy.reset_all()
    summary, evidence, stderr = finish(run, out)
    assert [nb["status"] for nb in summary["notebooks"]] == ["ok"], stderr
    # and a notebook opened on that evidence never connects: the path is still gone
    again = load_or_collect(dsn=proxy.dsn_for(lab.dsn()), evidence_dir=str(out / "evidence"))
    assert again.manifest["window"] == evidence.manifest["window"]


def test_a_session_the_server_ended_leaves_its_with_block_quietly(lab: LabServer) -> None:
    target = Target(lab.dsn())
    with target.check() as conn:
        pid = conn.info.backend_pid
        with lab.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        fresh = conn.reopen()
    assert conn.closed
    with fresh:
        assert fresh.execute("SELECT 1").fetchone() == (1,)
        assert fresh.info.backend_pid != pid

"""The path's idle cut-off measured from recorded incidents, and the advice sized against it.

The recordings are the demo's (playbook/lab/scenarios.py): reset_path goes through the chaos
proxy resetting flows idle 2 s (`reset_idle_after(2.0)`), nat_drop through one silently dropping
flows idle 2 s (`drop_idle_after(2.0)`), its pool idling 5 s between bursts. No server is needed.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import psycopg
import pytest
from matplotlib.colors import to_hex
from psycopg_pool import ConnectionPool

from playbook.collect.collection import collect_evidence
from playbook.diagnose import diagnose_all, network
from playbook.diagnose.chain import chain_links, path_idle
from playbook.diagnose.findings import Finding
from playbook.diagnose.fix_text import fenced_blocks
from playbook.diagnose.path_cutoff import MIN_SESSIONS, STEADY_SPREAD, PathCutoff, path_cutoff
from playbook.evidence import Evidence
from playbook.lab.proxy import ChaosProxy
from playbook.lab.server import APP_ROLE, LAB_DATABASE, MONITOR_ROLE, LabServer
from playbook.lab.workloads import app_logger
from playbook.plots_layers import timeout_chain_figure
from playbook.request import RunRequest
from playbook.target import Target

RECORDED = Path(__file__).parent / "data" / "evidence"
PROXY_CUTOFF_S = 2.0  # scenarios.py: reset_idle_after(2.0), drop_idle_after(2.0)
NAT_IDLE_GAP_S = 5.0  # scenarios.py LONG_GAPS: the pool's idle gap, when nat_drop's losses are found
BROKEN_RED = "#de2d26"


@cache
def recorded(name: str) -> Evidence:
    return Evidence.load(RECORDED / name)


def findings(name: str) -> dict[str, Finding]:
    return {f.id: f for f in diagnose_all(recorded(name))}


def keepalive_idles(text: str) -> list[int]:
    """Every keepalive idle time a recommendation offers (DSN, kwargs, server SQL)."""
    found = re.findall(r"keepalives?_idle\"?\s*[=:]\s*(\d+)", text)
    return [int(n) for n in found]


def test_resets_at_the_cut_measure_the_proxys_setting() -> None:
    cutoff = path_cutoff(recorded("reset_path"))
    assert cutoff is not None and cutoff.kind == "measured"
    assert abs(cutoff.seconds - PROXY_CUTOFF_S) <= 0.2 * PROXY_CUTOFF_S, cutoff
    assert cutoff.sessions >= MIN_SESSIONS
    assert cutoff.high - cutoff.low <= 2 * STEADY_SPREAD * cutoff.seconds
    assert "server-log resets" in cutoff.source


def test_silent_drops_give_an_upper_bound_never_a_value_below_the_cut() -> None:
    """A silently dropped flow is found at the next query: its idle age then bounds the cut-off
    from above (the pool's 5 s gap), and the estimate says so rather than claim 2 s."""
    cutoff = path_cutoff(recorded("nat_drop"))
    assert cutoff is not None and cutoff.kind == "at most"
    assert PROXY_CUTOFF_S <= cutoff.seconds <= NAT_IDLE_GAP_S * 1.2, cutoff
    assert cutoff.text().startswith("at most ")
    assert cutoff.fix_below_s < PROXY_CUTOFF_S  # a third of the bound still clears the real cut


@pytest.mark.parametrize(
    "name",
    [
        "healthy",
        "nat_drop_keepalive",
        "admin_terminate",
        "idle_session_timeout",
        "idle_in_transaction_timeout",
        "server_restart",
        "backend_crash",
        "own_session_reset",  # the playbook's own session, not the application's
    ],
)
def test_no_cut_off_without_path_losses_or_with_a_server_side_reason(name: str) -> None:
    assert path_cutoff(recorded(name)) is None


def test_the_findings_state_the_cut_off_and_size_keepalives_below_it() -> None:
    found = findings("reset_path")
    cutoff = path_cutoff(recorded("reset_path"))
    assert cutoff is not None
    for fid in ("NET-001", "NET-002"):
        finding = found[fid]
        assert finding.evidence["path_cutoff"]["kind"] == "measured"
        assert finding.evidence["path_cutoff"]["sessions"] == cutoff.sessions
        assert f"{cutoff.seconds:.1f} s" in finding.recommendation
        idles = keepalive_idles(finding.recommendation)
        assert idles and max(idles) < cutoff.seconds, (fid, idles)
        # both remedies, since the evidence cannot tell a NAT from an application proxy
        assert "min_size=0" in finding.recommendation and "max_idle=0.2," in finding.recommendation
        assert "application-level proxy" in finding.recommendation
        assert "240 s" not in finding.recommendation
    # the server's keepalive finding is sized against the same cut-off
    assert max(keepalive_idles(found["NET-003"].recommendation)) < cutoff.seconds


def test_nat_drop_keepalive_advice_clears_the_real_cut() -> None:
    finding = findings("nat_drop")["NET-002"]
    assert finding.evidence["path_cutoff"]["kind"] == "at most"
    assert max(keepalive_idles(finding.recommendation)) < PROXY_CUTOFF_S


def test_the_chain_marks_a_measured_path() -> None:
    value = path_idle(recorded("reset_path"))
    assert value.source == "measured"
    assert value.seconds is not None and abs(value.seconds - PROXY_CUTOFF_S) <= 0.2 * PROXY_CUTOFF_S
    path_link = chain_links(recorded("reset_path"))[-1]
    assert path_link.after is not None and path_link.after.source == "measured"
    assert not path_link.holds and "keepalives_idle=1 " in path_link.fix
    # without losses the path stays assumed
    assert path_idle(recorded("healthy")).source == "assumed"


def bar_colors(name: str) -> dict[str, str]:
    figure = timeout_chain_figure(recorded(name))
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    return {label: to_hex(bar.get_facecolor()) for label, bar in zip(labels, ax.patches, strict=True)}


def test_an_assumed_path_is_never_drawn_broken_a_measured_one_is() -> None:
    assumed = bar_colors("idle_session_timeout")
    (label,) = [k for k in assumed if k.startswith("network path")]
    assert not chain_links(recorded("idle_session_timeout"))[-1].holds  # at risk, not broken
    assert assumed[label] != BROKEN_RED
    measured = bar_colors("reset_path")
    (label,) = [k for k in measured if k.startswith("network path")]
    assert measured[label] == BROKEN_RED


def test_estimates_read_as_evidence() -> None:
    cutoff = PathCutoff(6.0, 5.5, 6.4, 4, "measured", "server-log resets and activity samples")
    assert cutoff.fix_below_s == 2
    assert cutoff.as_evidence()["seconds"] == 6.0
    assert PathCutoff(2.5, 2.4, 2.6, 3, "measured", "x").fix_below_s == 1


# -- in the lab: a hop with a known cut-off, measured, then the offered fix ------------------------------
LAB_CUTOFF_S = 4.0
BURST_S = 0.5
IDLE_GAP_S = 5.5  # longer than the cut-off: every pooled connection idles past it


def workload(pool: ConnectionPool, cycles: int, app_log: Path) -> list[str]:
    """Two workers query for BURST_S, then the application idles IDLE_GAP_S (the stimulus that
    crosses the hop's limit, not a wait for evidence); the errors the workers met."""
    errors: list[str] = []
    log = app_logger("cutoff", app_log)  # as a service logs its failures: the stack is read from it

    def worker() -> None:
        end = time.monotonic() + BURST_S
        while time.monotonic() < end:
            try:
                with pool.connection(timeout=5) as conn:
                    conn.execute("SELECT 1")
            except psycopg.Error as exc:
                errors.append(type(exc).__name__)
                text = " ".join(f"{type(exc).__module__}.{type(exc).__name__}: {exc}".split())
                log.error("request failed: %s", text)

    for _ in range(cycles):
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        threading.Event().wait(IDLE_GAP_S)
    return errors


def test_a_hop_cutting_at_4_s_is_measured_and_the_offered_pool_fix_holds(
    lab: LabServer, tmp_path: Path
) -> None:
    proxy = ChaosProxy("127.0.0.1", lab.port)
    proxy.start()
    try:
        proxy.reset_idle_after(LAB_CUTOFF_S)
        dsn = proxy.dsn_for(lab.dsn(APP_ROLE, LAB_DATABASE))
        since = datetime.now(timezone.utc)
        app_log = tmp_path / "app.log"
        before_fix = ConnectionPool(dsn, min_size=2, max_size=4, open=True)  # psycopg_pool's defaults
        errors: list[str] = []
        runner = threading.Thread(target=lambda: errors.extend(workload(before_fix, 3, app_log)))
        runner.start()
        request = RunRequest(
            duration=15.0,
            interval=0.5,
            server_logs=(Path(lab.stderr_log),),
            app_logs=(app_log,),
            since=since,
            progress=False,
        )
        evidence = collect_evidence(Target(lab.dsn(MONITOR_ROLE, LAB_DATABASE)), request)
        runner.join(timeout=60)
        before_fix.close()
        assert errors  # without the fix, the first query after each idle gap met the cut
        assert proxy.stats()["idle_resets"] >= MIN_SESSIONS

        cutoff = path_cutoff(evidence)
        assert cutoff is not None and cutoff.kind == "measured", cutoff
        assert abs(cutoff.seconds - LAB_CUTOFF_S) <= 0.2 * LAB_CUTOFF_S, cutoff
        (net,) = [f for f in network.diagnose(evidence) if f.id == "NET-001"]
        assert net.evidence["path_cutoff"]["seconds"] == round(cutoff.seconds, 2)

        # the psycopg_pool block the finding offers, as pasted, on the same path and workload
        scope: dict[str, object] = {"conninfo": dsn}
        exec(_python_block(net.recommendation), scope)
        fixed = scope["pool"]
        assert isinstance(fixed, ConnectionPool) and fixed.min_size == 0 and fixed.max_idle < LAB_CUTOFF_S
        resets = proxy.stats()["idle_resets"]
        try:
            assert workload(fixed, 3, tmp_path / "fixed.log") == []
        finally:
            fixed.close()
        assert proxy.stats()["idle_resets"] == resets, "the path still cut an idle pooled connection"
    finally:
        proxy.stop()


def _python_block(recommendation: str) -> str:
    (text,) = [text for kind, text in fenced_blocks(recommendation) if kind == "python"]
    return text


@pytest.mark.parametrize("cutoff", [3.0499, 3.0501, 3.05, 20.149, 20.151])
def test_the_probes_verdict_says_the_cut_off_summary_json_carries(cutoff: float) -> None:
    """The sentence and summary.json's path.idle_cutoff_s agree at one decimal whatever the raw
    value's last digits (the clean-clone CI once read '3.1 s' beside a summary of 3.05)."""
    from playbook.diagnose.path_cutoff import ProbeVerdict

    verdict = ProbeVerdict(
        max_idle_s=8.0,
        idle_cutoff_s=cutoff,
        kind="measured",
        survived_up_to_s=2.0,
        failed_from_s=4.0,
        low_s=cutoff,
        high_s=cutoff,
        cut=2,
        how="reset",
        keepalives_help=False,
        rungs=[],
        said=None,
    )
    carried = verdict.as_summary()["idle_cutoff_s"]
    assert f"cut idle connections at {carried:.1f} s (reset)" in verdict.text()

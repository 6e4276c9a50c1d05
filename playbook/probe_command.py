"""`playbook probe path`: the idle cut-off between this host and the server, measured (issue 18).

    playbook probe path [--dsn DSN] [--max-idle S] [--out DIR] [--fail-on critical|warning|never]

Leaves a few connections idle on a ladder of durations at once, with and without TCP keepalives
(probes/path.py), asks each `SELECT 1` when its time is up, and writes DIR/summary.json (the run's
schema, with a `path` object), DIR/index.html (the verdict, then the ladder) and the probe's rows
(DIR/path_probe.parquet + path_probe.json) that `playbook run --path-probe DIR` joins to its
evidence. Exit codes as `playbook run`'s: 0 the path held up to --max-idle, 1 or 2 it cut (per
--fail-on), 3 bad input (one sentence). Ctrl-C closes every connection it opened (exit 130).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from playbook.diagnose import rank_root_causes
from playbook.diagnose.network import find_probed_cutoff
from playbook.diagnose.path_cutoff import ProbeVerdict, probe_verdict
from playbook.errors import PlaybookError
from playbook.evidence import Evidence
from playbook.evidence.contract import PATH_PROBE
from playbook.probes.path import (
    DEFAULT_MAX_IDLE_S,
    DEFAULT_TIMEOUT_S,
    check_max_idle,
    ladder,
    probe_path,
    write_probe,
)
from playbook.progress import console, progress_bar
from playbook.report.summary import SCHEMA_ID, exit_code, validate
from playbook.target import resolve_target

DEFAULT_OUT = "path-probe"
POOLED_NOTE = (
    "reached through a connection pooler (it refused or dropped the startup options): the idle "
    "connections probed were the pooler's clients, so a cut is on the path to the pooler or the "
    "pooler's own idle timeout (client_idle_timeout), not the server's"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["path"], help="what to probe: path (the idle cut-off)")
    parser.add_argument("--dsn", help="libpq DSN or URL (default: $PLAYBOOK_DSN, else the PG* variables)")
    parser.add_argument(
        "--max-idle",
        default=str(DEFAULT_MAX_IDLE_S),
        metavar="S",
        help=f"the longest idle time tried, seconds (default {DEFAULT_MAX_IDLE_S:g}); the ladder halves it",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default ./{DEFAULT_OUT})")
    parser.add_argument("--fail-on", choices=["critical", "warning", "never"], default="warning")


def run(args: argparse.Namespace) -> int:
    """Probe, write the report, print the verdict; the exit code of the verdict per --fail-on."""
    max_idle = check_max_idle(args.max_idle)
    out = Path(args.out)
    _check_out(out)
    target = resolve_target(args.dsn)
    target.check().close()  # a refusal is one sentence; learns whether a pooler refuses `options`
    rungs = ladder(max_idle)
    started_at = datetime.now(timezone.utc)
    console.print(
        f"probing {target.redacted}: {2 * len(rungs)} connections idle "
        f"{', '.join(f'{r:g}' for r in rungs)} s, with and without keepalives (about {max_idle:g} s)"
    )
    with progress_bar("idle connections waiting", total=max_idle) as advance:
        frame = probe_path(target, max_idle_s=max_idle, on_row=_say_row, on_tick=advance)
    verdict = probe_verdict(frame)
    assert verdict is not None  # every connection has its row
    meta = {
        "dsn": target.redacted,
        "pooled": target.pooled,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "max_idle_s": max_idle,
        "timeout_s": DEFAULT_TIMEOUT_S,
        "rungs_s": rungs,
    }
    summary = build_probe_summary(frame, meta)
    validate(summary)
    out.mkdir(parents=True, exist_ok=True)
    write_probe(out, frame, meta)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "index.html").write_text(index_html(summary, verdict, frame))
    print(f"report: {(out / 'index.html').resolve()}")
    print(f"verdict: {verdict.text()}")
    return exit_code(summary["status"], args.fail_on)


def _check_out(out: Path) -> None:
    """--out is new, empty or an earlier probe's folder: never a folder of other files."""
    if out.exists() and not out.is_dir():
        raise PlaybookError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "summary.json").exists():
        raise PlaybookError(
            f"--out {out} holds files that are not a playbook report; give a new or empty folder"
        )


def _say_row(row: dict[str, Any]) -> None:
    mode = "with keepalives   " if row["keepalives"] else "without keepalives"
    if row["survived"]:
        what = "survived"
    elif row["seen"] == "idle":
        what = f"{row['ended']} at {row['ended_at_s']:.1f} s idle"
    else:
        what = f"{row['ended']} ({row['seen']})"
    console.print(f"  rung {row['rung_s']:>7g} s {mode}: {what}", highlight=False)


def probe_evidence(frame: pd.DataFrame, meta: dict[str, Any]) -> Evidence:
    """The probe's rows as evidence, so its verdict and finding are the run's own functions."""
    return Evidence(
        manifest={"target": meta.get("dsn", ""), "collected": ["path_probe"]},
        frames={PATH_PROBE.name: frame},
        snapshots={"path_probe": meta},
    )


def build_probe_summary(frame: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """summary.json in the run's schema: status "ok" when nothing was cut up to --max-idle, else
    the severity of NET-007 (warning when keepalives kept flows alive, critical otherwise); `path`
    holds the cut-off, whether keepalives help and the rungs."""
    evidence = probe_evidence(frame, meta)
    verdict = probe_verdict(frame)
    findings = find_probed_cutoff(evidence)
    status = findings[0].severity.value if findings else "ok"
    started, finished = str(meta["started_at"]), str(meta["finished_at"])
    duration = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return {
        "schema": SCHEMA_ID,
        "status": status,
        "target": {
            "dsn": meta.get("dsn", ""),
            "server_version": None,
            "live": True,
            "pooler": POOLED_NOTE if meta.get("pooled") else None,
        },
        "window": {"start": started, "end": finished, "duration_s": round(max(0.0, duration), 2)},
        "root_causes": rank_root_causes(findings),
        "findings": [f.to_dict() for f in findings],
        "notebooks": [],
        "path": {**(verdict.as_summary() if verdict else {}), "verdict": verdict.text() if verdict else ""},
    }


def ladder_figure_png(verdict: ProbeVerdict) -> bytes:
    """Rung against survival, one row per keepalive mode: green survived, red cut (marked by how),
    the cut-off as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.4))
    try:
        for y, key in ((0, "without_keepalives"), (1, "with_keepalives")):
            for rung in verdict.rungs:
                cell = rung.get(key)
                if cell is None:
                    continue
                ok = cell["survived"]
                ax.scatter(
                    rung["rung_s"], y, s=140, marker="o" if ok else "X", color="#31a354" if ok else "#de2d26"
                )
                if not ok:
                    ax.annotate(
                        str(cell["ended"]),
                        (rung["rung_s"], y),
                        textcoords="offset points",
                        xytext=(0, 10),
                        ha="center",
                        fontsize=8,
                    )
        if verdict.idle_cutoff_s is not None:
            ax.axvline(verdict.idle_cutoff_s, color="#636363", linestyle="--", linewidth=1)
            ax.annotate(
                f"cut-off {verdict.idle_cutoff_s:.1f} s",
                (verdict.idle_cutoff_s, 0.5),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=8,
                color="#636363",
            )
        ax.set_xscale("log", base=2)
        ticks = [rung["rung_s"] for rung in verdict.rungs]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_yticks([0, 1], ["without keepalives", "with keepalives"])
        ax.set_ylim(-0.6, 1.7)
        ax.set_xlabel("idle time (s), one connection per rung and mode")
        ax.set_title("survived (green) or cut (red), per rung")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()
    finally:
        plt.close(fig)


STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
    " pre{white-space:pre-wrap;background:#f5f5f5;padding:.6em}"
    " table.rows{border-collapse:collapse;font-size:.85em}"
    " table.rows td,table.rows th{padding:.2em .5em;border-bottom:1px solid #ddd}"
)
STATUS_COLORS = {"ok": "#31a354", "warning": "#e6550d", "critical": "#de2d26"}


def index_html(summary: dict[str, Any], verdict: ProbeVerdict, frame: pd.DataFrame) -> str:
    """A small page: the verdict first, the fix, the ladder's figure, then the rows."""
    status = summary["status"]
    color = STATUS_COLORS.get(status, "#636363")
    figure = base64.b64encode(ladder_figure_png(verdict)).decode()
    esc = html.escape
    fix = "".join(
        f"<h2>{esc(f['id'])}: {esc(f['title'])}</h2><pre>{esc(f['recommendation'])}</pre>"
        for f in summary["findings"]
    )
    cutoff = "null" if verdict.idle_cutoff_s is None else f"{verdict.idle_cutoff_s:g}"
    window = summary["window"]
    parts = [
        "<!doctype html>",
        f'<html><head><meta charset="utf-8"><title>playbook probe path · {esc(verdict.text())}</title>',
        f"<style>{STYLE}</style></head><body>",
        f'<h1 style="color:{color}">{esc(status.upper())}: {esc(verdict.text())}</h1>',
        f"<p>Target {esc(str(summary['target']['dsn']))}, probed {esc(window['start'])} for "
        f"{window['duration_s']:g} s: one connection per rung and keepalive mode, all idle at once, then "
        f"<code>SELECT 1</code>. idle_cutoff_s = {cutoff} ({esc(str(verdict.kind or 'nothing cut'))}), "
        f"keepalives_help = {json.dumps(verdict.keepalives_help)}.</p>",
        '<img alt="the ladder: rung against survival, with and without keepalives" '
        f'src="data:image/png;base64,{figure}">',
        fix,
        "<h2>Rows</h2>",
        frame.to_html(index=False, na_rep="", classes="rows", border=0),
        "<p>Join it to a run: <code>playbook run … --path-probe DIR</code>. Generated "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def probe_for_notebook(dsn: str, max_idle_s: float) -> Any:
    """The network notebook's step: the same probe, shown in the page (the verdict, the ladder's
    figure, the rows). `max_idle_s` 0 means off (a `playbook run` never waits for it): a note says
    how to ask for it. Bad input raises PlaybookError, one sentence."""
    from IPython.display import HTML, Markdown

    if not max_idle_s:
        return Markdown(
            "*Not probed in this run.* Opened by hand, set `probe_path_max_idle` in the parameters cell "
            "(for example `600`) and run this cell again: it takes that long, with at most 12 idle "
            "connections. `playbook probe path --max-idle 600` does the same from a shell."
        )
    seconds = check_max_idle(max_idle_s)
    target = resolve_target(dsn or None)
    target.check().close()
    frame = probe_path(target, max_idle_s=seconds)
    verdict = probe_verdict(frame)
    assert verdict is not None
    figure = base64.b64encode(ladder_figure_png(verdict)).decode()
    return HTML(
        f"<h3>{html.escape(verdict.text())}</h3>"
        f'<img alt="the ladder" src="data:image/png;base64,{figure}">'
        + frame.to_html(index=False, na_rep="", border=0)
    )

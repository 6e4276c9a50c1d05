"""The memory of scheduled runs: `playbook run --history DIR` records each run, `playbook history
DIR` draws the trend and applies retention.

Layout of a history folder (each run's folder is complete before it is renamed into place):

    DIR/index.html                     the trend: status and findings per run, peak connections
                                       against the usable limit, events per category, the runs
    DIR/runs/<YYYYmmddTHHMMSSZ>-<hex>/ one kept run:
        record.json                    the aggregates a trend needs (schema RECORD_SCHEMA)
        summary.json                   the run's summary.json as it was
        report.html                    the run's self-contained report, when it had one

`--since last` starts the next run's log reading where the last recorded run stopped
(`logs_until`), and the deltas of pg_stat_database's cumulative session counters since that run
(`between_runs`) say what happened in between, even where no log was read.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from playbook.errors import PlaybookError
from playbook.evidence import Evidence
from playbook.evidence.views import counts_over_time, usable_connections

RECORD_SCHEMA = "pg-session-playbook/history-record/v1"
COUNTERS = ("sessions", "sessions_abandoned", "sessions_fatal", "sessions_killed")
RUNS = "runs"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def aggregates(evidence: Evidence) -> dict[str, Any]:
    """What a trend needs from one run's evidence: peak client connections and the usable limit,
    server log events per category, and pg_stat_database's session counters per database."""
    counts = counts_over_time(evidence.activity_samples, evidence.activity_ticks, ["state"])
    sampled = "activity" in (evidence.manifest.get("collected") or [])
    if not counts.empty and counts.shape[1]:
        peak: int | None = int(counts.sum(axis=1).max())
    else:
        peak = 0 if sampled else None  # sampled and saw no client: 0; not sampled: unknown
    events: dict[str, int] = {}
    server = evidence.server_log_events
    if not server.empty:
        named = server[server["category"].astype(str) != ""]
        events = {str(k): int(v) for k, v in named["category"].astype(str).value_counts().items()}
    stats = [
        {"database": row.get("database"), "stats_reset": _text(row.get("stats_reset"))}
        | {name: _int(row.get(name)) for name in COUNTERS}
        for row in evidence.settings.get("database_stats") or []
        if isinstance(row, Mapping)
    ]
    usable = usable_connections(evidence.settings)
    return {
        "peak_connections": peak,
        "usable_connections": int(usable) if usable else None,
        "events": events,
        "gaps": len(evidence.gaps),
        "database_stats": stats,
    }


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def run_folders(history: Path) -> list[Path]:
    """The kept runs, oldest first (their names sort by time)."""
    runs = history / RUNS
    if not runs.is_dir():
        return []
    return sorted(
        p
        for p in runs.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "record.json").exists()
    )


def load_records(history: Path) -> list[dict[str, Any]]:
    """Every kept run's record, oldest first; a record that cannot be read is left out."""
    records = []
    for folder in run_folders(history):
        try:
            record = json.loads((folder / "record.json").read_text())
        except (OSError, ValueError):
            continue
        record["folder"] = folder.name
        records.append(record)
    return records


def last_stop(history: Path) -> datetime | None:
    """Where the last recorded run that read its evidence stopped reading logs (--since last);
    None without such a run. Failed runs read nothing and are skipped, so their time is read by
    the next run instead of falling into a gap."""
    for record in reversed(load_records(history)):
        until = record.get("logs_until")
        if until:
            return datetime.fromisoformat(until)
    return None


def counter_deltas(
    previous: Mapping[str, Any] | None, current: Sequence[Mapping[str, Any]], now: datetime
) -> dict[str, Any] | None:
    """pg_stat_database's session counters since the previous run, per database.

    A database whose stats_reset moved (or whose counter went down) was reset in between: its
    row counts from the reset and it is named in `reset`. None without a previous run or without
    counters (PostgreSQL before 14, or a run that could not read pg_stat_database)."""
    if not previous:
        return None
    before = {row.get("database"): row for row in previous.get("database_stats") or []}
    rows, reset = [], []
    for row in current:
        if row.get("sessions") is None:
            continue
        old = before.get(row.get("database"))
        was_reset = (
            old is None
            or old.get("stats_reset") != row.get("stats_reset")
            or any((old.get(c) or 0) > (row.get(c) or 0) for c in COUNTERS)
        )
        if old is not None and was_reset:
            reset.append(str(row.get("database")))
        rows.append(
            {"database": row.get("database")}
            | {c: (row.get(c) or 0) - (0 if was_reset else (old or {}).get(c) or 0) for c in COUNTERS}
        )
    if not rows:
        return None
    previous_at = str(previous.get("finished_at"))
    seconds = (now - datetime.fromisoformat(previous_at)).total_seconds()
    return {"previous_at": previous_at, "seconds": round(seconds, 1), "databases": rows, "reset": reset}


def record_run(
    history: Path,
    *,
    summary: Mapping[str, Any],
    aggregated: Mapping[str, Any],
    report: Path | None,
    started_at: datetime,
    finished_at: datetime,
    logs_until: datetime | None,
) -> Path:
    """Keep one run in `history` (created when missing) and return its folder. The folder is
    written under a hidden name and renamed into place, so a reader never sees half a run."""
    runs = history / RUNS
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlaybookError(f"cannot write the history to {history}: {exc.strerror or exc}") from None
    name = f"{finished_at.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    work = runs / f".{name}"
    work.mkdir()
    try:
        record = {
            "schema": RECORD_SCHEMA,
            "started_at": started_at.isoformat(),
            "finished_at": finished_at.isoformat(),
            "duration_s": round((finished_at - started_at).total_seconds(), 1),
            # a failed run read no logs: it moves no --since last
            "logs_until": (
                logs_until.isoformat()
                if logs_until
                else None
                if summary["status"] == "error"
                else finished_at.isoformat()
            ),
            "error": summary.get("error"),
            "status": summary["status"],
            "target": (summary.get("target") or {}).get("dsn"),
            "window": summary.get("window"),
            "root_cause": (summary.get("root_causes") or [{}])[0].get("category"),
            "findings": [
                {"id": f["id"], "severity": f["severity"], "category": f["category"], "title": f["title"]}
                for f in summary.get("findings") or []
            ],
            "between_runs": summary.get("between_runs"),
            **aggregated,
            "report": "report.html" if report is not None and report.exists() else None,
        }
        (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        (work / "record.json").write_text(json.dumps(record, indent=2, default=str))
        if record["report"]:
            shutil.copy2(report, work / "report.html")  # type: ignore[arg-type]
        os.replace(work, runs / name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return runs / name


def apply_retention(
    history: Path, *, keep: int | None = None, keep_days: float | None = None, now: datetime | None = None
) -> list[str]:
    """Remove the runs beyond the newest `keep` and those older than `keep_days`; returns the
    names of the runs removed. The newest run is always kept."""
    records = load_records(history)
    now = now or _now()
    doomed: list[str] = []
    for index, record in enumerate(records):
        newest = index == len(records) - 1
        if newest:
            continue
        too_many = keep is not None and index < len(records) - keep
        too_old = keep_days is not None and datetime.fromisoformat(record["finished_at"]) < now - timedelta(
            days=keep_days
        )
        if too_many or too_old:
            doomed.append(record["folder"])
    for name in doomed:
        shutil.rmtree(history / RUNS / name, ignore_errors=True)
    return doomed


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


SEVERITY_Y = {"ok": 0, "warning": 1, "critical": 2, "error": 3}
STATUS_COLORS = {"ok": "#31a354", "warning": "#d4a017", "critical": "#c62828", "error": "#636363"}
CATEGORY_COLORS = {
    "leak": "#e34a33",
    "timeout": "#fd8d3c",
    "network": "#6a51a3",
    "pool_config": "#31a354",
    "server": "#252525",
}


def _finished(fig: Any, ax: Any, title: str) -> str:
    """A trend figure's common end, as a data: URI: its title, the runs' times on the x axis
    (labelled as concisely as the span allows, minutes to months), laid out."""
    import matplotlib.dates as mdates

    ax.set_title(title)
    locator = mdates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("run finished (UTC)")
    fig.tight_layout()
    return _png(fig)


def trend_figures(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The three trend figures as data: URIs: status and findings per run, peak connections
    against the usable limit, server log events per category."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    times = [float(mdates.date2num(datetime.fromisoformat(r["finished_at"]))) for r in records]
    spacing = min((b - a for a, b in zip(times, times[1:], strict=False) if b > a), default=0.05)
    width = max(min(0.8 * spacing, 0.5), 1e-4)  # days: bars never overlap, whatever the schedule
    figures: dict[str, str] = {}

    fig = Figure(figsize=(10, 3.2))
    ax = fig.subplots()
    ax.bar(
        times, [len(r.get("findings") or []) for r in records], width=width, color="#bdbdbd", label="findings"
    )
    twin = ax.twinx()
    twin.scatter(
        times,
        [SEVERITY_Y.get(r["status"], 3) for r in records],
        c=[STATUS_COLORS.get(r["status"], "#636363") for r in records],
        s=40,
        zorder=3,
    )
    twin.set_yticks(list(SEVERITY_Y.values()), list(SEVERITY_Y))
    twin.set_ylim(-0.5, 3.5)
    ax.set_ylim(0, max(3.5, max(len(r.get("findings") or []) for r in records) * 1.15))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("findings (bars)")
    figures["status"] = _finished(fig, ax, "Status (dots) and findings (bars) per run")

    fig = Figure(figsize=(10, 3.2))
    ax = fig.subplots()
    peaks = [
        (t, r["peak_connections"])
        for t, r in zip(times, records, strict=True)
        if r.get("peak_connections") is not None
    ]
    usable = [
        (t, r["usable_connections"])
        for t, r in zip(times, records, strict=True)
        if r.get("usable_connections")
    ]
    if peaks:
        ax.plot([t for t, _ in peaks], [p for _, p in peaks], marker="o", label="peak client connections")
    if usable:
        ax.step(
            [t for t, _ in usable],
            [u for _, u in usable],
            where="post",
            color="black",
            linestyle="--",
            label="usable limit (max_connections − reserved)",
        )
    if not peaks and not usable:
        ax.text(
            0.5, 0.5, "none: no run sampled a live server", ha="center", va="center", transform=ax.transAxes
        )
    else:
        ax.legend(loc="center left", fontsize="small")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set_ylabel("connections")
    figures["connections"] = _finished(fig, ax, "Peak connections against the usable limit")

    fig = Figure(figsize=(10, 3.2))
    ax = fig.subplots()
    categories = sorted({c for r in records for c in (r.get("events") or {})})
    bottom = [0] * len(records)
    for category in categories:
        values = [int((r.get("events") or {}).get(category, 0)) for r in records]
        ax.bar(
            times,
            values,
            bottom=bottom,
            width=width,
            label=category,
            color=CATEGORY_COLORS.get(category, "#3182bd"),
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    if categories:
        ax.legend(loc="upper left", fontsize="small", ncol=5)
    else:
        ax.text(
            0.5,
            0.5,
            "none: no session-ending event in the logs of any kept run",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.tick_params(left=False, labelleft=False)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set_ylabel("events")
    figures["events"] = _finished(fig, ax, "Server log events per category, per run")
    return figures


def write_history_index(history: Path) -> Path:
    """DIR/index.html: one self-contained page with the trend figures and a row per kept run
    (status, findings, connections, counter deltas, a link to its report)."""
    import jinja2
    from markupsafe import Markup

    records = load_records(history)
    env = jinja2.Environment(loader=jinja2.PackageLoader("playbook.report", "templates"), autoescape=True)
    env.filters["second"] = lambda value: str(value or "")[:19].replace("T", " ")
    html = env.get_template("history.html.j2").render(
        records=list(reversed(records)),
        figures={k: Markup(v) for k, v in trend_figures(records).items()} if records else {},
        generated=_now().isoformat(),
        history=str(history),
    )
    path = history / "index.html"
    temporary = history / f".index.html.{os.getpid()}"
    temporary.write_text(html, encoding="utf-8")
    os.replace(temporary, path)
    return path

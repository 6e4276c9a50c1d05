"""Every figure the notebooks show: titled, axes labelled with units, limits drawn where they apply.

Each function returns a standalone Figure (no pyplot state): a notebook shows it by ending a cell
with the call, a report or a test can save it with `fig.savefig`. Every figure says something: it
draws marks a reader can see when its layer holds data, says "none: …" when the layer was read and
held nothing, and is None (a notebook cell then shows nothing) when the layer was not given at all
(no live sampling, no probe, no log): see `layer_read` and tests/test_figures.py.
"""

from __future__ import annotations

import math
from datetime import timedelta

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from playbook.evidence import Evidence
from playbook.evidence.views import (
    app_samples,
    counts_over_time,
    idle_in_transaction_sessions,
    usable_connections,
)

STATE_COLORS = {
    "active": "#2b8cbe",
    "idle": "#a6bddb",
    "idle in transaction": "#e34a33",
    "idle in transaction (aborted)": "#b30000",
    "fastpath function call": "#756bb1",
    "disabled": "#969696",
    "(hidden)": "#d9d9d9",
}


# The evidence each layer leaves: the collector's name in the manifest's "collected", and its frames.
LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "activity": (("activity",), ("activity_samples", "activity_ticks")),
    "probes": (("probes",), ("connect_probes", "round_trip_probes")),
    "logs": (("server_log", "app_log"), ("server_log_events", "app_log_events")),
    "pgbouncer_console": (("pgbouncer_console",), ("pgbouncer_pools",)),
    "pgbouncer_log": (("pgbouncer_log",), ("pgbouncer_log_events",)),
}


def layer_read(evidence: Evidence, layer: str) -> bool:
    """Whether the run read `layer` (a key of LAYERS): its collector ran, whatever it found, or the
    evidence holds rows of its frames (evidence assembled without a manifest)."""
    collectors, frames = LAYERS[layer]
    return any(evidence.collected(c) for c in collectors) or any(not evidence.frame(f).empty for f in frames)


LABEL_BOX = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}


def _vertical_limit(ax: Axes, x: float, label: str, *, color: str) -> None:
    """A limit on the x axis (a threshold, a timeout), labelled inside the frame near its top:
    the axis is widened so the line and its label both fit."""
    left, right = ax.get_xlim()
    if x >= right * 0.9:
        ax.set_xlim(left, x * 1.25 if x > 0 else right)
    ax.axvline(x, color=color, linestyle="--", linewidth=1.5)
    ax.annotate(
        label,
        xy=(x, 0.97),
        xycoords=("data", "axes fraction"),
        xytext=(-4, 0),
        textcoords="offset points",
        ha="right",
        va="top",
        fontsize="small",
        bbox=LABEL_BOX,
    )


def _horizontal_limit(ax: Axes, y: float, label: str, *, color: str) -> None:
    """A limit on the y axis (the usable connections, a percentile), labelled at the right, inside
    the frame: the axis is raised so the label never sits on the frame."""
    bottom, top = ax.get_ylim()
    if y * 1.15 > top:
        ax.set_ylim(bottom, y * 1.15 if y > 0 else top)
    ax.axhline(y, color=color, linestyle="--", linewidth=1)
    ax.annotate(
        label,
        xy=(0.99, y),
        xycoords=("axes fraction", "data"),
        xytext=(0, 2),
        textcoords="offset points",
        ha="right",
        va="bottom",
        fontsize="small",
        bbox=LABEL_BOX,
    )


def _none(ax: Axes, text: str, *, keep_time_axis: bool = False) -> None:
    """An axis with nothing to draw says so ("none: …") instead of showing empty ticks;
    `keep_time_axis` keeps the x ticks when the axis is the bottom of a shared time axis."""
    ax.text(0.5, 0.5, f"none: {text}", ha="center", va="center", transform=ax.transAxes)
    # tick_params, not set_xticks([]): a shared time axis keeps its ticks on the other row.
    ax.tick_params(left=False, labelleft=False)
    if not keep_time_axis:
        ax.tick_params(bottom=False, labelbottom=False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _seconds(value: float) -> str:
    """A duration for a label: milliseconds under a second, else seconds, three significant digits."""
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def _note(ax: Axes, text: str) -> None:
    """A sentence inside the frame, top right (a limit too far away to draw, say)."""
    ax.annotate(
        text,
        xy=(0.99, 0.97),
        xycoords="axes fraction",
        ha="right",
        va="top",
        fontsize="small",
        bbox=LABEL_BOX,
    )


def _counts_axis(ax: Axes) -> None:
    """A y axis of counts: integer ticks from zero."""
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)


def _limit_or_note(ax: Axes, usable: int | None, peak: float, label: str) -> None:
    """The usable-connections limit as a line, or, when the curve is far below it (drawing it
    would flatten the curve to nothing), as a note inside the frame."""
    if not usable:
        return
    if peak < 0.3 * usable:
        _note(ax, f"{label} = {usable} is far above (peak {int(peak)})")
    else:
        _horizontal_limit(ax, usable, f"{label} = {usable}", color="black")


def connections_by_state(evidence: Evidence, *, show_limit: bool = True) -> Figure | None:
    """Client backends over time, stacked by state, against the usable connection limit; None when
    the server was not sampled."""
    if not layer_read(evidence, "activity"):
        return None
    counts = counts_over_time(evidence.activity_samples, evidence.activity_ticks, ["state"])
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    if counts.empty or counts.shape[1] == 0:
        _none(ax, "no client backend was seen in the window")
        ax.set_title("Client connections by state (the playbook's own excluded)")
        fig.tight_layout()
        return fig
    else:
        order = [s for s in STATE_COLORS if s in counts.columns] + [
            s for s in counts.columns if s not in STATE_COLORS
        ]
        ax.stackplot(
            counts.index,
            *[counts[s] for s in order],
            labels=order,
            colors=[STATE_COLORS.get(s, "#cccccc") for s in order],
            step="post",
        )
        ax.legend(loc="upper left", fontsize="small", ncol=3)
    usable = usable_connections(evidence.settings)
    peak = int(counts.sum(axis=1).max()) if not counts.empty and counts.shape[1] else 0
    _counts_axis(ax)
    if show_limit:
        _limit_or_note(ax, usable, peak, "max_connections − reserved")
    for gap in evidence.gaps:
        window = evidence.window
        if gap.get("start"):
            end = pd.Timestamp(gap.get("end") or (window[1] if window else gap["start"]))
            ax.axvspan(
                pd.Timestamp(gap["start"]),  # type: ignore[arg-type]
                end,  # type: ignore[arg-type]
                color="orange",
                alpha=0.3,
                label="sampler lost its session",
            )
    ax.set_title("Client connections by state (the playbook's own excluded)")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("connections")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    fig.tight_layout()
    return fig


def idle_in_transaction_ages(
    evidence: Evidence, *, threshold_s: float | None = None, top: int = 15
) -> Figure | None:
    """The oldest idle-in-transaction sessions, longest observed transaction age per backend; None
    when the server was not sampled.

    A session seen idle in transaction for no measurable time (its transaction age is the clock's
    rounding, 0 or below) is not drawn; a threshold far above the longest age is a note, not a line
    that would shrink the bars to nothing.
    """
    if not layer_read(evidence, "activity"):
        return None
    sessions = idle_in_transaction_sessions(app_samples(evidence))
    sessions = sessions[sessions["max_age_s"] > 0].head(top) if not sessions.empty else sessions
    fig = Figure(figsize=(10, max(2.5, 0.35 * len(sessions) + 1.5)))
    ax = fig.subplots()
    if sessions.empty:
        _none(ax, "no session was idle in transaction in this window")
        ax.set_title("Oldest sessions idle in transaction")
        fig.tight_layout()
        return fig
    else:
        labels = [
            f"pid {pid} · {app or '?'} · {user}"
            for pid, app, user in zip(
                sessions["pid"], sessions["application_name"], sessions["usename"], strict=True
            )
        ]
        ax.barh(labels[::-1], sessions["max_age_s"][::-1], color=STATE_COLORS["idle in transaction"])
    longest = float(sessions["max_age_s"].max())
    if threshold_s and threshold_s > 20 * longest:
        ax.set_xlim(0, longest / 0.6)  # room for the note beside the longest bar
        _note(ax, f"threshold {threshold_s:g} s is far above (longest {_seconds(longest)})")
    elif threshold_s:
        _vertical_limit(ax, threshold_s, f"threshold {threshold_s:.0f} s", color="black")
    ax.set_title("Oldest sessions idle in transaction")
    ax.set_xlabel("transaction age (s)")
    fig.tight_layout()
    return fig


EVENT_COLORS = {
    "leak": "#e34a33",
    "timeout": "#fd8d3c",
    "network": "#6a51a3",
    "pool_config": "#31a354",
    "server": "#252525",
}


def placed(stamps: pd.Series) -> pd.Series:
    """The times of `stamps` that can go on a time axis: UTC, without NaT (matplotlib cannot
    convert NaT; evidence saved before the app-log reader counted untimed failures apart, or any
    other source, may still carry one)."""
    return pd.Series(pd.to_datetime(stamps, utc=True)).dropna()


def _format_time_axis(ax: Axes) -> None:
    ax.set_xlabel("time (UTC)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))


def incident_timeline(evidence: Evidence, categories: tuple[str, ...] | None = None) -> Figure | None:
    """Connections by state, with the server's and the application's events on the same time axis;
    None when no log was read and the playbook's own session was never lost (nothing to place).

    The time axis spans the sampled window and every placed event: the logs are read from a little
    before the window (`logs_since`), and what happened just before it is part of the story.
    """
    if not layer_read(evidence, "logs") and not evidence.gaps:
        return None
    fig = Figure(figsize=(10, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    _timeline_states(top, evidence)
    rows = _timeline_rows(evidence, categories)
    if rows:
        _timeline_events(bottom, rows)
    else:
        _none(bottom, _no_events_text(evidence), keep_time_axis=True)
    _timeline_span(top, evidence, rows)
    _format_time_axis(bottom)
    fig.tight_layout()
    return fig


def _timeline_states(ax: Axes, evidence: Evidence) -> None:
    """The timeline's top row: one step line per state against the usable limit, or "none: …"
    saying whether the server was sampled at all."""
    counts = counts_over_time(evidence.activity_samples, evidence.activity_ticks, ["state"])
    if not counts.empty and counts.shape[1]:
        for state in counts.columns:
            ax.step(
                counts.index,
                counts[state],
                where="post",
                label=state,
                color=STATE_COLORS.get(state, "#999999"),
            )
        ax.legend(loc="upper left", fontsize="small", ncol=3)
        _counts_axis(ax)
        peak = float(counts.sum(axis=1).max())
        _limit_or_note(ax, usable_connections(evidence.settings), peak, "usable limit")
    else:
        _none(
            ax,
            "no client backend was seen in the window"
            if layer_read(evidence, "activity")
            else "the server was not sampled (no live connection)",
        )
    ax.set_ylabel("connections")
    ax.set_title("Connections by state, and what the logs say happened at the same time")


def _timeline_rows(
    evidence: Evidence, categories: tuple[str, ...] | None
) -> list[tuple[str, str, pd.Series]]:
    """The timeline's rows of events, one per kind (label, category, the placed times of every
    occurrence): the server's events of `categories` (None: all categorized ones), the
    application's failures by kind, and the times the playbook lost its own session. Kinds with
    no placeable time are left out."""
    by_label: dict[str, tuple[str, list[pd.Series]]] = {}

    def add(label: str, category: str, stamps: pd.Series) -> None:
        stamps = placed(stamps)
        if not stamps.empty:
            by_label.setdefault(label, (category, []))[1].append(stamps)

    server = evidence.server_log_events
    if not server.empty:
        server = server[server["category"].astype(str) != ""]
        for (category, event), group in server.groupby(["category", "event"], observed=True):
            if categories is None or category in categories:
                add(f"server: {event}", str(category), group["ts"])
    app = evidence.app_log_events
    if not app.empty:
        for kind, group in app.groupby("kind"):
            add(f"app: {kind}", "app", group["ts"])
    starts = [pd.Timestamp(gap["start"]) for gap in evidence.gaps if gap.get("start")]
    if starts:
        add("playbook session lost", "gap", pd.Series(starts))
    return [(label, category, pd.concat(parts)) for label, (category, parts) in by_label.items()]


def _timeline_events(ax: Axes, rows: list[tuple[str, str, pd.Series]]) -> None:
    """The timeline's bottom row: each kind of event on a row of its own, a tick per occurrence."""
    for y, (_label, category, stamps) in enumerate(rows):
        ax.scatter(stamps, [y] * len(stamps), marker="|", s=200, color=EVENT_COLORS.get(category, "#3182bd"))
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize="small")
    ax.set_ylim(-0.8, len(rows) - 0.2)


def _no_events_text(evidence: Evidence) -> str:
    """What an empty events row says: the logs read held nothing to place, or no log was read."""
    if evidence.manifest.get("server_logs") or evidence.manifest.get("app_logs"):
        return "no session-ending event in the logs for this window"
    return "no log was read: pass --server-log / --app-log (or server_log / app_log here)"


def _timeline_span(ax: Axes, evidence: Evidence, rows: list[tuple[str, str, pd.Series]]) -> None:
    """The shared time axis spans the sampled window and every placed event, padded so that an
    event at either end stays off the frame (one lone event gets a second either side); left to
    matplotlib when there is neither."""
    span = list(evidence.window or ())
    for _label, _category, stamps in rows:
        span += [stamps.min().to_pydatetime(), stamps.max().to_pydatetime()]
    if span:
        first, last = min(span), max(span)
        pad = max((last - first) * 0.02, timedelta(seconds=1))
        # matplotlib converts datetimes by its date units; its type stubs name floats only
        ax.set_xlim(first - pad, last + pad)  # type: ignore[arg-type]


def connections_by_application(evidence: Evidence, top_n: int = 8) -> Figure | None:
    """Connections per application over time: a leak is a line that only goes up. None when the
    server was not sampled."""
    if not layer_read(evidence, "activity"):
        return None
    counts = counts_over_time(app_samples(evidence), evidence.activity_ticks, ["application_name"])
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    ax.set_title("Connections per application (the playbook's own excluded)")
    if counts.empty or not counts.shape[1]:
        _none(ax, "no client backend was seen in the window")
        fig.tight_layout()
        return fig
    for app in counts.sum().sort_values(ascending=False).index[:top_n]:
        ax.step(counts.index, counts[app], where="post", label=str(app) or "(no application_name)")
    ax.legend(loc="upper left", fontsize="small")
    ax.set_ylabel("connections")
    _counts_axis(ax)
    peak = float(counts.max().max())
    # A leak climbs towards a limit: the role's CONNECTION LIMIT when one is set, else the server's.
    role_limits = [
        (r["role"], int(r["conn_limit"]))
        for r in evidence.settings.get("role_limits") or []
        if r.get("conn_limit", -1) not in (-1, None)
    ]
    for role, limit in role_limits:
        if limit >= 0.3 * max(peak, 1) and limit <= 3 * max(peak, 1):
            _horizontal_limit(ax, limit, f"CONNECTION LIMIT of role {role} = {limit}", color="#e34a33")
    usable = usable_connections(evidence.settings)
    if usable:  # always the line here: where a climbing line ends is the point of this chart
        _horizontal_limit(ax, usable, f"max_connections − reserved = {usable}", color="black")
    _format_time_axis(ax)
    fig.tight_layout()
    return fig


MIN_BAR_PX = 6  # the narrowest histogram bar drawn, in pixels of the saved figure


def _idle_bins(ages: np.ndarray, low: float, high: float, axis_px: float) -> np.ndarray:
    """Bin edges for `ages` on an axis from `low` to `high` drawn `axis_px` pixels wide.

    numpy's 'auto' rule sizes bins from the data's spread, but no bin is narrower than MIN_BAR_PX
    at the axis' scale: ages that cluster (a pool that idles alike, 3.68-3.72 s) make a few visible
    bars instead of thirty one-pixel ones; ages that are all equal make one bar centred on them.
    """
    min_width = (high - low) * MIN_BAR_PX / max(axis_px, 1.0)
    smallest, largest = float(ages.min()), float(ages.max())
    if largest - smallest < min_width:
        start = max(low, (smallest + largest) / 2 - min_width / 2)
        return np.array([start, start + min_width])
    edges = np.histogram_bin_edges(ages, bins="auto")
    if len(edges) > 1 and edges[1] - edges[0] >= min_width:
        return edges
    count = max(1, math.floor((largest - smallest) / min_width))
    return np.linspace(smallest, largest, count + 1)


def idle_age_histogram(
    evidence: Evidence, *, limit_s: float | None = None, limit_label: str = ""
) -> Figure | None:
    """How long pooled connections sit idle, against the timeout that would end them; None when
    the server was not sampled. Bins follow the ages' spread (see `_idle_bins`)."""
    if not layer_read(evidence, "activity"):
        return None
    samples = app_samples(evidence)
    idle = samples[samples["state"] == "idle"] if not samples.empty else samples
    fig = Figure(figsize=(10, 3.8))
    ax = fig.subplots()
    if idle.empty:
        _none(ax, "no idle pooled connection was seen in the window")
        ax.set_title("Longest idle time of each pooled connection seen in the window")
        fig.tight_layout()
        return fig
    longest = idle.groupby(["pid", "backend_start"])["state_age_s"].max().dropna().clip(lower=0).to_numpy()
    # The axis first (the ages, and the limit when it is drawn), then bins no thinner than a few
    # pixels of it; edges a shade darker than the bars so they separate bars without eating them.
    oldest = float(longest.max())
    label = f"{limit_label or 'limit'} = {limit_s:g} s" if limit_s else ""
    far = limit_s is not None and limit_s > 20 * max(oldest, 1e-9)
    # With a note (the limit far above), room for it beside the oldest bar.
    high = max(oldest / 0.6 if far else oldest * 1.05, limit_s * 1.25 if limit_s and not far else 0.0, 1e-3)
    axis_px = ax.get_position().width * fig.get_figwidth() * fig.dpi
    edges = _idle_bins(longest, 0.0, high, axis_px)
    ax.hist(longest, bins=edges.tolist(), color=STATE_COLORS["idle"], edgecolor="#6f8fb3", linewidth=0.5)
    ax.set_xlim(0, max(high, float(edges[-1])))
    _counts_axis(ax)
    if limit_s and far:
        _note(ax, f"{label} is far above (longest {_seconds(oldest)})")
    elif limit_s:
        _vertical_limit(ax, limit_s, label, color="#e34a33")
    ax.set_title("Longest idle time of each pooled connection seen in the window")
    ax.set_xlabel("idle time (s)")
    ax.set_ylabel("connections")
    fig.tight_layout()
    return fig


def connect_latency(evidence: Evidence) -> Figure | None:
    """Connect time and query round trip from this host: percentiles and failures; None when no
    probe ran."""
    if not layer_read(evidence, "probes"):
        return None
    connects, trips = evidence.frame("connect_probes"), evidence.frame("round_trip_probes")
    fig = Figure(figsize=(10, 3.5))
    left, right = fig.subplots(1, 2)
    for ax, frame, column, title in (
        (left, connects, "connect_ms", "new connection (TCP + auth + first query)"),
        (right, trips, "rtt_ms", "round trip of SELECT 1 on an open session"),
    ):
        values = frame[column].dropna() if column in frame else pd.Series(dtype=float)
        failures = (
            int((~frame["ok"]).sum()) if "ok" in frame else int(frame.get("error", pd.Series()).notna().sum())
        )
        if values.empty:
            _none(ax, "no successful probe")
        else:
            ax.plot(range(1, len(values) + 1), values.to_numpy(), marker="o", linestyle="-", color="#3182bd")
            p95 = float(values.quantile(0.95))
            _horizontal_limit(ax, p95, f"p95 {p95:.2f} ms", color="#e34a33")
        ax.set_title(f"{title}\n{failures} failure(s)", fontsize="medium")
        if not values.empty:
            ax.set_xlabel("attempt")
            ax.set_ylabel("milliseconds")
            ax.set_ylim(bottom=0)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig

"""Every figure the notebooks show: titled, axes labelled with units, limits drawn where they apply.

Each function returns a standalone Figure (no pyplot state): a notebook shows it by ending a cell
with the call, a report or a test can save it with `fig.savefig`.
"""

from __future__ import annotations

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

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


def _vertical_limit(ax: Axes, x: float, label: str, *, color: str) -> None:
    """A limit on the x axis (a threshold, a timeout), labelled at the top of the plot."""
    ax.axvline(x, color=color, linestyle="--", linewidth=1.5)
    ax.annotate(label, xy=(x, 1.0), xycoords=("data", "axes fraction"), ha="left", va="top", fontsize="small")


def _horizontal_limit(ax: Axes, y: float, label: str, *, color: str) -> None:
    """A limit on the y axis (the usable connections, a percentile), labelled at the right."""
    ax.axhline(y, color=color, linestyle="--", linewidth=1)
    ax.annotate(
        label, xy=(0.99, y), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize="small"
    )


def connections_by_state(evidence: Evidence, *, show_limit: bool = True) -> Figure:
    """Client backends over time, stacked by state, against the usable connection limit."""
    counts = counts_over_time(evidence.activity_samples, evidence.activity_ticks, ["state"])
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    if counts.empty or counts.shape[1] == 0:
        ax.text(
            0.5,
            0.5,
            "no client backends seen in the window",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
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
    if show_limit and usable and peak < 0.3 * usable:
        # Far below the limit: drawing it would flatten the curve to nothing; say it instead.
        ax.annotate(
            f"usable limit {usable} (max_connections − reserved) is far above: peak {peak}",
            xy=(0.99, 0.97),
            xycoords="axes fraction",
            ha="right",
            va="top",
            fontsize="small",
        )
    elif show_limit and usable:
        _horizontal_limit(ax, usable, f"max_connections − reserved = {usable}", color="black")
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
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


def idle_in_transaction_ages(
    evidence: Evidence, *, threshold_s: float | None = None, top: int = 15
) -> Figure:
    """The oldest idle-in-transaction sessions, longest observed transaction age per backend."""
    sessions = idle_in_transaction_sessions(app_samples(evidence)).head(top)
    fig = Figure(figsize=(10, max(2.5, 0.35 * len(sessions) + 1.5)))
    ax = fig.subplots()
    if sessions.empty:
        ax.text(
            0.5, 0.5, "no session was idle in transaction", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_yticks([])
    else:
        labels = [
            f"pid {pid} · {app or '?'} · {user}"
            for pid, app, user in zip(
                sessions["pid"], sessions["application_name"], sessions["usename"], strict=True
            )
        ]
        ax.barh(labels[::-1], sessions["max_age_s"][::-1], color=STATE_COLORS["idle in transaction"])
    if threshold_s:
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


def _format_time_axis(ax: Axes) -> None:
    ax.set_xlabel("time (UTC)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))


def incident_timeline(evidence: Evidence, categories: tuple[str, ...] | None = None) -> Figure:
    """Connections by state, with the server's and the application's events on the same time axis."""
    counts = counts_over_time(evidence.activity_samples, evidence.activity_ticks, ["state"])
    fig = Figure(figsize=(10, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    if not counts.empty and counts.shape[1]:
        for state in counts.columns:
            top.step(
                counts.index,
                counts[state],
                where="post",
                label=state,
                color=STATE_COLORS.get(state, "#999999"),
            )
        top.legend(loc="upper left", fontsize="small", ncol=3)
    usable = usable_connections(evidence.settings)
    if usable and not counts.empty and counts.sum(axis=1).max() > usable * 0.5:
        top.axhline(usable, color="black", linestyle="--", linewidth=1, label="usable limit")
    top.set_ylabel("connections")
    top.set_ylim(bottom=0)
    top.set_title("Connections by state, and what the logs say happened at the same time")
    rows: list[tuple[str, str, pd.Series]] = []
    server = evidence.server_log_events
    if not server.empty:
        server = server[server["category"].astype(str) != ""]
        for (category, event), group in server.groupby(["category", "event"], observed=True):
            if categories is None or category in categories:
                rows.append((f"server: {event}", str(category), pd.to_datetime(group["ts"], utc=True)))
    app = evidence.app_log_events
    if not app.empty:
        for kind, group in app.dropna(subset=["ts"]).groupby("kind"):
            rows.append((f"app: {kind}", "app", pd.to_datetime(group["ts"], utc=True)))
    for gap in evidence.gaps:
        if gap.get("start"):
            rows.append(("playbook session lost", "gap", pd.Series([pd.Timestamp(gap["start"])])))
    if rows:
        for y, (_label, category, stamps) in enumerate(rows):
            bottom.scatter(
                stamps, [y] * len(stamps), marker="|", s=200, color=EVENT_COLORS.get(category, "#3182bd")
            )
        bottom.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize="small")
        bottom.set_ylim(-0.8, len(rows) - 0.2)
    else:
        bottom.text(
            0.5,
            0.5,
            (
                "no session-ending event in the logs for this window"
                if evidence.manifest.get("server_logs") or evidence.manifest.get("app_logs")
                else "no log was read: pass --server-log / --app-log (or server_log / app_log here)"
            ),
            ha="center",
            va="center",
            transform=bottom.transAxes,
        )
        bottom.set_yticks([])
    if evidence.window:
        top.set_xlim(*evidence.window)
    _format_time_axis(bottom)
    fig.tight_layout()
    return fig


def connections_by_application(evidence: Evidence, top_n: int = 8) -> Figure:
    """Connections per application over time: a leak is a line that only goes up."""
    counts = counts_over_time(app_samples(evidence), evidence.activity_ticks, ["application_name"])
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    if counts.empty or not counts.shape[1]:
        ax.text(0.5, 0.5, "no client backends seen", ha="center", va="center", transform=ax.transAxes)
    else:
        for app in counts.sum().sort_values(ascending=False).index[:top_n]:
            ax.step(counts.index, counts[app], where="post", label=str(app) or "(no application_name)")
        ax.legend(loc="upper left", fontsize="small")
    ax.set_title("Connections per application (the playbook's own excluded)")
    ax.set_ylabel("connections")
    ax.set_ylim(bottom=0)
    _format_time_axis(ax)
    fig.tight_layout()
    return fig


def idle_age_histogram(evidence: Evidence, *, limit_s: float | None = None, limit_label: str = "") -> Figure:
    """How long pooled connections sit idle, against the timeout that would end them."""
    samples = app_samples(evidence)
    idle = samples[samples["state"] == "idle"] if not samples.empty else samples
    fig = Figure(figsize=(10, 3.8))
    ax = fig.subplots()
    if idle.empty:
        ax.text(0.5, 0.5, "no idle connection was seen", ha="center", va="center", transform=ax.transAxes)
    else:
        longest = idle.groupby(["pid", "backend_start"])["state_age_s"].max()
        ax.hist(longest, bins=30, color=STATE_COLORS["idle"], edgecolor="white")
    if limit_s:
        _vertical_limit(ax, limit_s, f"{limit_label or 'limit'} = {limit_s:g} s", color="#e34a33")
    ax.set_title("Longest idle time of each pooled connection seen in the window")
    ax.set_xlabel("idle time (s)")
    ax.set_ylabel("connections")
    fig.tight_layout()
    return fig


def connect_latency(evidence: Evidence) -> Figure:
    """Connect time and query round trip from this host: percentiles and failures."""
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
            ax.text(0.5, 0.5, "no successful probe", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.plot(range(1, len(values) + 1), values.to_numpy(), marker="o", linestyle="-", color="#3182bd")
            p95 = float(values.quantile(0.95))
            _horizontal_limit(ax, p95, f"p95 {p95:.2f} ms", color="#e34a33")
        ax.set_title(f"{title}\n{failures} failure(s)", fontsize="medium")
        ax.set_xlabel("attempt")
        ax.set_ylabel("milliseconds")
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig

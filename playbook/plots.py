"""Every figure the notebooks show: titled, axes labelled with units, limits drawn where they apply.

Each function returns a standalone Figure (no pyplot state): a notebook shows it by ending a cell
with the call, a report or a test can save it with `fig.savefig`.
"""

from __future__ import annotations

import matplotlib.dates as mdates
from matplotlib.figure import Figure

from playbook.collect.activity import counts_over_time
from playbook.collect.settings import usable_connections
from playbook.diagnose.leak import idle_in_transaction_sessions
from playbook.evidence import Evidence

STATE_COLORS = {
    "active": "#2b8cbe",
    "idle": "#a6bddb",
    "idle in transaction": "#e34a33",
    "idle in transaction (aborted)": "#b30000",
    "fastpath function call": "#756bb1",
    "disabled": "#969696",
    "(hidden)": "#d9d9d9",
}


def connections_by_state(evidence: Evidence, *, show_limit: bool = True) -> Figure:
    """Client backends over time, stacked by state, against the usable connection limit."""
    counts = counts_over_time(evidence.frame("activity_samples"), evidence.frame("activity_ticks"), ["state"])
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
    if show_limit and usable:
        ax.axhline(usable, color="black", linestyle="--", linewidth=1)
        ax.annotate(
            f"max_connections − reserved = {usable}",
            xy=(0.99, usable),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize="small",
        )
    for gap in evidence.gaps:
        if gap.get("start"):
            end = gap.get("end") or evidence.manifest.get("window", {}).get("end")
            ax.axvspan(gap["start"], end, color="orange", alpha=0.3, label="sampler lost its session")
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
    sessions = idle_in_transaction_sessions(evidence.frame("activity_samples")).head(top)
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
        ax.axvline(threshold_s, color="black", linestyle="--", linewidth=1)
        ax.annotate(
            f"threshold {threshold_s:.0f} s",
            xy=(threshold_s, 1.0),
            xycoords=("data", "axes fraction"),
            ha="left",
            va="top",
            fontsize="small",
        )
    ax.set_title("Oldest sessions idle in transaction")
    ax.set_xlabel("transaction age (s)")
    fig.tight_layout()
    return fig

"""Figures of the layers between the application and the server: the timeout chain and PgBouncer.

Like playbook.plots, each function returns a standalone Figure, says "none: …" when its layer was
read and held nothing, and returns None when its layer was not given (no PgBouncer console, no
PgBouncer log): a page then shows no PgBouncer figure for a service without PgBouncer.
"""

from __future__ import annotations

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from playbook.diagnose.chain import chain_links, timeout_chain
from playbook.evidence import Evidence
from playbook.evidence.pgbouncer_frames import LOG_EVENTS_FRAME
from playbook.evidence.views import app_events
from playbook.plots import layer_read, placed

SOURCE_COLORS = {"measured": "#2b8cbe", "configured": "#31a354", "default": "#bdbdbd", "assumed": "#fdae6b"}
NEVER_S = 86400.0  # where a layer that never cuts is drawn (a day), labelled "never"


def _say(fig: Figure, text: str, title: str) -> Figure:
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def timeout_chain_figure(evidence: Evidence) -> Figure:
    """Each layer's idle limit from the application to the path, on one log-scale axis of seconds.

    Bars are coloured by where the value came from; a broken link (a layer that cuts what the
    previous one still holds) is drawn in red with the layer that must change.
    """
    chain = timeout_chain(evidence)
    broken = {
        (link.after.layer, link.after.setting): link for link in chain_links(evidence) if not link.holds
    }
    fig = Figure(figsize=(10, 0.7 * len(chain) + 1.6))
    ax = fig.subplots()
    labels = [f"{value.layer}: {value.setting}" for value in chain]
    for row, value in enumerate(chain):
        seconds = value.seconds if value.seconds is not None else NEVER_S
        link = broken.get((value.layer, value.setting))
        if link and value.source == "assumed":
            link = None  # an assumed limit is a risk to confirm, never drawn as a broken link
        ax.barh(
            row,
            seconds,
            color="#de2d26" if link else SOURCE_COLORS[value.source],
            edgecolor="black" if link else "none",
        )
        text = ("never" if value.seconds is None else f"{value.seconds:g} s") + f"  ({value.source})"
        if link:
            text += f"  ✗ cuts before the {link.before.layer} lets go: fix the {link.fix_layer}"
        ax.annotate(text, xy=(1.05, row), xycoords=("axes fraction", "data"), va="center", fontsize="small")
    ax.set_yticks(range(len(chain)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("idle seconds before the layer lets go or cuts (log scale)")
    ax.set_title("The timeout chain: each layer must let go before the next one cuts")
    fig.subplots_adjust(left=0.3, right=0.6)
    return fig


def pooler_pools(evidence: Evidence) -> Figure | None:
    """PgBouncer's clients and server connections over time (all pools summed), and how long the
    oldest waiting client waited; None when PgBouncer's console was not sampled (--pgbouncer)."""
    if not layer_read(evidence, "pgbouncer_console"):
        return None
    pools = evidence.frame("pgbouncer_pools")
    fig = Figure(figsize=(10, 4))
    if pools.empty:
        return _say(fig, "none: PgBouncer's console showed no pool in the window", "PgBouncer's pools")
    columns = [c for c in ("cl_active", "cl_waiting", "sv_active", "sv_idle") if c in pools]
    totals = pools.groupby("tick_ts")[columns].sum().astype("float64")
    ax = fig.subplots()
    for column in columns:
        ax.plot(totals.index, totals[column], label=column, drawstyle="steps-post")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set_ylabel("connections")
    ax.set_xlabel("time (UTC)")
    if "maxwait_s" in pools:
        wait = pools.groupby("tick_ts")["maxwait_s"].max().astype("float64")
        twin = ax.twinx()
        twin.plot(wait.index, wait, color="#de2d26", linestyle=":", label="maxwait (s)")
        twin.set_ylabel("oldest client's wait (s)")
        twin.set_ylim(bottom=0)
        twin.legend(loc="upper right", fontsize="small")
    ax.legend(loc="upper left", fontsize="small")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.set_title("PgBouncer's pools: clients waiting mean the pool is saturated")
    return fig


def pooler_closes(evidence: Evidence) -> Figure | None:
    """Why PgBouncer closed connections, over time, on the same axis as the application's errors.

    Normal recycling of unused server connections is left out: it is PgBouncer's work, not harm.
    None when no PgBouncer was given (neither its console nor its log): the application's errors
    alone are on the timeline figure. With the console but not the log, the figure says the log is
    what would show the closes.
    """
    if not (layer_read(evidence, "pgbouncer_log") or layer_read(evidence, "pgbouncer_console")):
        return None
    title = "PgBouncer's closes"
    if not layer_read(evidence, "pgbouncer_log"):
        return _say(
            Figure(figsize=(10, 2)),
            "none: PgBouncer's log was not read (--pgbouncer-log): it is the only record of its closes",
            title,
        )
    events = evidence.frame(LOG_EVENTS_FRAME)
    app = app_events(evidence)
    fig = Figure(figsize=(10, 4))
    if events.empty and app.empty:
        return _say(fig, "none: PgBouncer's log and the application's log hold no close and no error", title)
    closes = events[(events["kind"] == "close") & ~events["recycling"].fillna(False).astype(bool)]
    rows: list[tuple[str, pd.Series]] = []
    for key, group in closes.groupby("reason_key"):
        side = str(group["side"].dropna().iloc[0]) if group["side"].notna().any() else ""
        rows.append((f"PgBouncer {side}: {key}", placed(group["ts"])))
    for kind, group in app.groupby("kind"):
        rows.append((f"application: {kind}", placed(group["ts"])))
    rows = [(label, stamps) for label, stamps in rows if not stamps.empty]  # nothing to place: no row
    if not rows:
        return _say(
            Figure(figsize=(10, 2)), "none: PgBouncer closed nothing but unused server connections", title
        )
    ax = fig.subplots()
    for row, (_, stamps) in enumerate(rows):
        ax.scatter(stamps, [row] * len(stamps), marker="|", s=200)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.set_xlabel("time (UTC)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.set_title("PgBouncer's close reasons and the application's errors, on one time axis")
    fig.subplots_adjust(left=0.35)
    return fig

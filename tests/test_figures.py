"""Every figure says something: visible marks when there is data, a plain "none" when there is
not, and no figure at all for a layer that was not given.

Each figure function of playbook.plots and playbook.plots_layers is drawn (Agg, the figure's own
DPI, as the notebooks' inline backend and the report pages draw it) on every recorded incident
(tests/data/evidence and the demo's evidence), on a window where every layer was read and nothing
was seen, and on evidence where a layer was not given. A figure is then inspected as a reader sees
it: each axis either carries marks that show in the rasterized canvas (pixels of its data artists
inside the axis' frame, bars thicker than a couple of pixels once their edges are drawn, points
inside the limits) or says "none: …"; a figure for a layer that was not given is None.

The notebooks' figure cells are run the way Jupyter runs them (the last expression is displayed,
None shows nothing), so a page cannot show a figure or a heading for a layer that was not given.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from playbook import notebook as pb  # noqa: E402
from playbook import plots, plots_layers  # noqa: E402
from playbook.evidence import Evidence  # noqa: E402

ROOT = Path(__file__).parents[1]
RECORDED = {
    **{
        f"recorded:{p.parent.name}": p.parent
        for p in sorted((ROOT / "tests/data/evidence").glob("*/manifest.json"))
    },
    **{
        f"demo:{p.parents[1].name}": p.parent
        for p in sorted((ROOT / "demo").glob("*/evidence/manifest.json"))
    },
}
NOTEBOOKS = sorted((ROOT / "playbook" / "notebooks").glob("*.ipynb"))

# A mark a reader can see: this many pixels of a data artist inside its axis' frame (one "|" event
# marker is about 30), and a bar this many pixels thick once its edges are drawn over it.
MIN_MARK_PX = 20
MIN_BAR_PX = 2.0
INK = 235  # a pixel is ink when one of its channels is darker than this (white is 255)


@dataclass(frozen=True)
class Plot:
    """A figure function, how the notebooks call it, and the layer whose absence means no figure."""

    draw: Callable[[Evidence], Figure | None]
    layer: str  # the evidence layer this figure shows (see given())


PLOTS: dict[str, Plot] = {
    "connections_by_state": Plot(plots.connections_by_state, "activity"),
    "idle_in_transaction_ages": Plot(lambda e: plots.idle_in_transaction_ages(e, threshold_s=10), "activity"),
    "incident_timeline": Plot(plots.incident_timeline, "logs"),
    "incident_timeline[timeout]": Plot(lambda e: plots.incident_timeline(e, categories=("timeout",)), "logs"),
    "incident_timeline[network]": Plot(lambda e: plots.incident_timeline(e, categories=("network",)), "logs"),
    "connections_by_application": Plot(plots.connections_by_application, "activity"),
    "idle_age_histogram": Plot(
        lambda e: plots.idle_age_histogram(
            e, limit_s=pb.setting_seconds(e, "idle_session_timeout"), limit_label="idle_session_timeout"
        ),
        "activity",
    ),
    "connect_latency": Plot(plots.connect_latency, "probes"),
    "timeout_chain_figure": Plot(plots_layers.timeout_chain_figure, "always"),
    "pooler_pools": Plot(plots_layers.pooler_pools, "pgbouncer_console"),
    "pooler_closes": Plot(plots_layers.pooler_closes, "pgbouncer"),
}


def given(evidence: Evidence, layer: str) -> bool:
    """Whether the evidence says the layer was read (its collector ran), whatever it found."""
    collected = set(evidence.manifest.get("collected") or [])
    return {
        "always": True,
        "activity": "activity" in collected,
        "probes": "probes" in collected,
        "logs": bool({"server_log", "app_log"} & collected) or bool(evidence.gaps),
        "pgbouncer_console": "pgbouncer_console" in collected,
        "pgbouncer": bool({"pgbouncer_console", "pgbouncer_log"} & collected),
    }[layer]


# --- evidence: every recording, a window where everything was read and nothing seen, and layers
# taken away from a recording (a notebook opened by hand with only a DSN reads no log) ---


def empty_window() -> Evidence:
    """Every layer read over a 30 s window, and nothing seen in any of them."""
    return Evidence(
        manifest={  # type: ignore[typeddict-item]
            "window": {
                "start": "2026-12-07T10:00:00+00:00",
                "end": "2026-12-07T10:00:30+00:00",
                "duration_s": 30.0,
            },
            "collected": [
                "settings",
                "probes",
                "activity",
                "pgbouncer_console",
                "server_log",
                "pgbouncer_log",
                "app_log",
            ],
            "server_logs": ["postgresql.log"],
            "app_logs": ["app.log"],
            "pgbouncer_logs": ["pgbouncer.log"],
            "gaps": [],
        }
    )


def without(evidence: Evidence, *layers: str) -> Evidence:
    """The evidence as if the collectors of `layers` had not run (their frames and files gone)."""
    prefixes = {
        "server_log": ("server_log",),
        "app_log": ("app_log",),
        "pgbouncer_log": ("pgbouncer_log",),
        "pgbouncer_console": (
            "pgbouncer_pools",
            "pgbouncer_stats",
            "pgbouncer_clients",
            "pgbouncer_servers",
            "pgbouncer_databases",
            "pgbouncer_lists",
            "pgbouncer_ticks",
            "pgbouncer_config",
            "pgbouncer_console",
        ),
        "activity": ("activity_",),
        "probes": ("connect_probes", "round_trip_probes", "latency", "keepalive_probe"),
    }
    gone = tuple(p for layer in layers for p in prefixes[layer])
    manifest: dict[str, Any] = dict(evidence.manifest)
    manifest["collected"] = [c for c in manifest.get("collected", []) if c not in layers]
    for layer in layers:
        manifest.pop(f"{layer}s", None)  # server_logs, app_logs, pgbouncer_logs
    return Evidence(
        manifest=manifest,  # type: ignore[arg-type]
        frames={k: v for k, v in evidence.frames.items() if not k.startswith(gone)},
        snapshots={k: v for k, v in evidence.snapshots.items() if not k.startswith(gone)},
    )


@cache
def evidence_named(name: str) -> Evidence:
    if name == "empty window":
        return empty_window()
    if name == "nothing given":
        return Evidence()
    if name.startswith("no logs:"):
        return without(
            evidence_named(name.removeprefix("no logs:")), "server_log", "app_log", "pgbouncer_log"
        )
    if name.startswith("no pgbouncer:"):
        return without(
            evidence_named(name.removeprefix("no pgbouncer:")), "pgbouncer_log", "pgbouncer_console"
        )
    if name.startswith("offline:"):  # `playbook run --offline`: the logs, no server sampled, no probe
        return without(evidence_named(name.removeprefix("offline:")), "activity", "probes")
    if name.startswith("pgbouncer console only:"):
        return without(evidence_named(name.removeprefix("pgbouncer console only:")), "pgbouncer_log")
    return Evidence.load(RECORDED[name])


EVIDENCE = [
    *RECORDED,
    "empty window",
    "nothing given",
    "no logs:recorded:idle_session_timeout",
    "no logs:recorded:server_restart",  # its gaps still have a row to show
    "no pgbouncer:recorded:pgbouncer_idle_timeout",
    "pgbouncer console only:recorded:pgbouncer_saturation",
    "offline:recorded:server_restart",
]


# --- the inspection of a drawn figure ---


def _data_artists(ax: Axes) -> list[Artist]:
    """What an axis draws from data: lines, bars, areas and points placed in data coordinates (a
    limit line, a shaded span or a label is placed partly in axis coordinates and is not data)."""
    found: list[Artist] = []
    for line in ax.lines:
        if line.get_visible() and line.get_transform().contains_branch(ax.transData):
            found.append(line)
    for patch in ax.patches:
        if patch.get_visible() and patch.get_transform().contains_branch(ax.transData):
            found.append(patch)
    for collection in ax.collections:
        placed_by_data = collection.get_transform().contains_branch(ax.transData) or (
            collection.get_offset_transform().contains_branch(ax.transData)
        )
        if collection.get_visible() and placed_by_data:
            found.append(collection)
    return found


def _ink_of(fig: Figure, ax: Axes, keep: list[Artist]) -> int:
    """Pixels of `keep` inside `ax`'s frame in the rasterized figure, everything else hidden (the
    backgrounds stay white)."""
    kept = {id(a) for a in keep}
    backgrounds = {id(fig.patch), *(id(a.patch) for a in fig.axes)}
    hidden: list[Artist] = []
    for artist in fig.findobj(lambda a: True):
        if isinstance(artist, (Figure, Axes)) or id(artist) in kept or id(artist) in backgrounds:
            continue
        if artist.get_visible():
            artist.set_visible(False)
            hidden.append(artist)
    try:
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())[:, :, :3]
    finally:
        for artist in hidden:
            artist.set_visible(True)
    height = pixels.shape[0]
    x0, y0, x1, y1 = ax.bbox.extents
    inside = pixels[max(0, int(height - y1)) : int(height - y0), max(0, int(x0)) : int(x1)]
    return int((inside.min(axis=2) < INK).sum())


def _bar_problems(fig: Figure, ax: Axes) -> Iterator[str]:
    """Bars thinner than MIN_BAR_PX once a white edge is drawn over them."""
    px_per_pt = fig.dpi / 72
    for container in ax.containers:
        if not isinstance(container, BarContainer):
            continue
        vertical = container.orientation == "vertical"
        for bar in container.patches:
            if (bar.get_height() if vertical else bar.get_width()) == 0:
                continue  # an empty bin draws nothing, rightly
            box = bar.get_window_extent()
            thickness = box.width if vertical else box.height
            edge = to_rgba(bar.get_edgecolor())
            if edge[3] > 0 and min(edge[:3]) > 0.9:  # a white edge eats into the bar on both sides
                thickness -= bar.get_linewidth() * px_per_pt
            if thickness < MIN_BAR_PX:
                yield f"a bar {thickness:.1f} px thick"
                return


def _point_problems(ax: Axes) -> Iterator[str]:
    """Points and lines all outside the axis' limits show nothing."""
    x0, y0, x1, y1 = ax.bbox.extents
    for artist in _data_artists(ax):
        if isinstance(artist, Line2D):
            xy = artist.get_transform().transform(np.asarray(artist.get_xydata(), dtype=float))
        elif isinstance(artist, PathCollection) and len(artist.get_offsets()):  # points (scatter)
            xy = artist.get_offset_transform().transform(np.asarray(artist.get_offsets(), dtype=float))
        else:
            continue
        inside = (xy[:, 0] >= x0 - 1) & (xy[:, 0] <= x1 + 1) & (xy[:, 1] >= y0 - 1) & (xy[:, 1] <= y1 + 1)
        if not inside.any():
            yield f"{type(artist).__name__} {artist.get_label()!r} has no point inside the limits"


def none_texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text().startswith("none")]


def problems(fig: Figure) -> list[str]:
    """What a reader would not see: an axis without a visible mark and without a "none" text."""
    found: list[str] = []
    for n, ax in enumerate(fig.axes):
        where = f"axis {n} ({ax.get_title() or ax.get_ylabel() or 'untitled'})"
        says_none = [t.get_text() for t in ax.texts if t.get_text().startswith("none")]
        artists = _data_artists(ax)
        if says_none:
            if any(len(text) < len("none: ") + 10 for text in says_none):
                found.append(f"{where}: a bare 'none' that does not say what is absent")
            continue
        twins = [other for other in fig.axes if other is not ax and other.bbox.bounds == ax.bbox.bounds]
        if not artists:
            if any(_data_artists(twin) for twin in twins):
                continue  # a twin axis (a second scale on the same frame) draws into this frame
            found.append(f"{where}: no data artist and no 'none' text")
            continue
        ink = _ink_of(fig, ax, artists)
        if ink < MIN_MARK_PX:
            found.append(f"{where}: {len(artists)} data artist(s) but {ink} visible pixel(s)")
        found += [f"{where}: {p}" for p in _bar_problems(fig, ax)]
        found += [f"{where}: {p}" for p in _point_problems(ax)]
    return found


# --- the figures ---


@pytest.mark.parametrize("plot", list(PLOTS))
@pytest.mark.parametrize("name", EVIDENCE)
def test_every_figure_says_something(name: str, plot: str) -> None:
    evidence, spec = evidence_named(name), PLOTS[plot]
    fig = spec.draw(evidence)
    if not given(evidence, spec.layer):
        assert fig is None, f"{plot} draws a figure for a layer ({spec.layer}) that was not given"
        return
    assert isinstance(fig, Figure), f"{plot} gives no figure though its layer ({spec.layer}) was given"
    assert [ax.get_title() for ax in fig.axes if ax.get_title()], f"{plot} has no title"
    assert problems(fig) == []
    if name == "empty window" and spec.layer != "always":
        assert none_texts(fig), f"{plot} on a window where nothing was seen does not say 'none'"


def test_the_idle_ages_of_a_pool_that_idles_alike_are_visible_bars() -> None:
    """The timeouts page's histogram on ages that cluster (3.68-3.72 s) drew 30 bins of about a
    pixel each with white edges: a blank axis. Ages spread over a wider range stay a histogram."""
    base = Evidence.load(RECORDED["recorded:idle_session_timeout"])
    samples = base.activity_samples
    for spread in (0.0, 0.04, 0.4, 40.0):
        idle = samples[samples["state"] == "idle"].copy()
        rng = np.random.default_rng(7)
        idle["state_age_s"] = 3.68 + rng.uniform(0, spread, len(idle)) if spread else 3.7
        frames = {**base.frames, "activity_samples": pd.concat([samples[samples["state"] != "idle"], idle])}
        evidence = Evidence(manifest=base.manifest, frames=frames, snapshots=base.snapshots)
        for limit in (None, 5.0, 60.0):
            fig = plots.idle_age_histogram(evidence, limit_s=limit, limit_label="idle_session_timeout")
            assert fig is not None
            assert problems(fig) == [], (spread, limit)


def test_the_inspection_sees_a_blank_axis() -> None:
    """The checks themselves can fail: 30 one-pixel bars with white edges, points outside the
    limits and an axis with nothing on it are each reported."""
    fig = Figure(figsize=(10, 3.8))
    ax = fig.subplots()
    ages = np.random.default_rng(1).uniform(3.68, 3.72, 40)
    ax.hist(ages, bins=30, edgecolor="white")
    ax.set_xlim(0, 60)
    assert problems(fig)
    fig = Figure(figsize=(10, 3.8))
    ax = fig.subplots()
    ax.scatter([5.0], [1.0])
    ax.set_xlim(0, 1)
    assert any("no point inside" in p for p in problems(fig))
    assert problems(Figure().add_subplot().figure)


# --- the notebooks' figure cells ---


def figure_cells() -> list[tuple[str, int, str]]:
    """(notebook, cell index, source) of every code cell that draws a figure."""
    found = []
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text())
        for n, cell in enumerate(notebook["cells"]):
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and ("plots." in source or "plots_layers." in source):
                found.append((path.name, n, source))
    return found


def run_cell(source: str, evidence: Evidence) -> list[Any]:
    """What Jupyter would display for the cell: each display() argument, then the last
    expression's value unless it is None."""
    from IPython.display import HTML, Markdown

    shown: list[Any] = []
    namespace: dict[str, Any] = {
        "evidence": evidence,
        "plots": plots,
        "plots_layers": plots_layers,
        "pb": pb,
        "display": lambda *objects, **_: shown.extend(objects),
        "Markdown": Markdown,
        "HTML": HTML,
    }
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.startswith("%")))
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
        if value is not None:
            shown.append(value)
    return shown


def test_the_notebooks_draw_figures_only_with_the_tested_functions() -> None:
    called = {
        node.attr
        for _, _, source in figure_cells()
        for node in ast.walk(ast.parse("\n".join(x for x in source.splitlines() if not x.startswith("%"))))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("plots", "plots_layers")
    }
    assert called, "no figure cell found in the notebooks"
    tested = {name.split("[")[0] for name in PLOTS}
    assert called <= tested, f"figures the notebooks draw and this module does not check: {called - tested}"


def page_of(path: Path, evidence: Evidence) -> list[tuple[str, Any]]:
    """What a page built from the notebook shows, as far as figures decide it: ("markdown", text)
    for markdown cells and what figure cells display as Markdown, ("figure", Figure), ("empty",
    cell) for a figure cell that shows nothing, ("other", cell) for any other code cell (a table,
    a verdict: never empty)."""
    shown: list[tuple[str, Any]] = []
    for n, cell in enumerate(json.loads(path.read_text())["cells"]):
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            shown.append(("markdown", source))
        elif "plots." in source or "plots_layers." in source:
            displayed = run_cell(source, evidence)
            for thing in displayed:
                if isinstance(thing, Figure):
                    shown.append(("figure", thing))
                else:
                    shown.append(("markdown", str(getattr(thing, "data", thing))))
            if not displayed:
                shown.append(("empty", n))
        elif cell["cell_type"] == "code":
            shown.append(("other", n))
    return shown


def headings_over_nothing(page: list[tuple[str, Any]]) -> list[str]:
    """Headings whose section had a figure that is not drawn and shows nothing else but prose."""
    found = []
    sections: list[list[tuple[str, Any]]] = []
    for kind, thing in page:
        if kind == "markdown" and str(thing).lstrip().startswith("#"):
            sections.append([])
        if sections:
            sections[-1].append((kind, thing))
    for section in sections:
        kinds = {kind for kind, _ in section[1:]}
        if "empty" in kinds and kinds <= {"empty", "markdown"}:
            found.append(str(section[0][1]).lstrip().splitlines()[0])
    return found


@pytest.mark.parametrize(
    "name",
    [
        "recorded:pgbouncer_idle_timeout",
        "pgbouncer console only:recorded:pgbouncer_saturation",
        "no pgbouncer:recorded:pgbouncer_idle_timeout",
        "no logs:recorded:idle_session_timeout",
        "offline:recorded:idle_session_timeout",
        "empty window",
        "nothing given",
    ],
)
def test_a_page_shows_no_figure_and_no_heading_for_a_layer_not_given(name: str) -> None:
    """Run each notebook's figure cells as Jupyter does: every figure shown passes the checks, no
    PgBouncer figure or heading shows without PgBouncer, and no heading is left over a figure that
    is not drawn (a run --offline samples no server: its pages have no activity figure)."""
    evidence = evidence_named(name)
    for path in NOTEBOOKS:
        page = page_of(path, evidence)
        where = f"{path.name} on {name}"
        for kind, thing in page:
            if kind == "figure":
                assert problems(thing) == [], where
                text = " ".join(
                    [t.get_text() for ax in thing.axes for t in ax.texts]
                    + [ax.get_title() for ax in thing.axes]
                )
            elif kind == "markdown" and str(thing).lstrip().startswith("#"):
                text = str(thing).lstrip().splitlines()[0]  # a heading names what its section shows
            else:
                continue
            if not given(evidence, "pgbouncer"):
                assert "PgBouncer" not in text, where
        assert headings_over_nothing(page) == [], where

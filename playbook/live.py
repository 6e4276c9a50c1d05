"""The window as it is sampled, in a notebook opened by hand: one figure, updated in place.

While the evidence cell samples, the person watching the incident sees the server, not a progress
bar: connections by state and by application against the usable limit, the idle and
idle-in-transaction ages, and the events of the server's and the application's logs as they are
written (each log is followed from where it ended when the cell started: new bytes only, never
re-read). The figure is one display (an IPython display handle, no widget library), redrawn at
most once a tick and never more often than its drawing cost allows, so a slow redraw cannot eat
the sampler's clock.

Under papermill (its injected parameters cell is in the kernel's history), outside a notebook
kernel, or with PLAYBOOK_LIVE=0, there is no live view: the pages a run shares show the final
figures only. PLAYBOOK_LIVE=1 forces it on.
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from playbook.collect.activity import SampledTick
from playbook.collect.sources.base import Context
from playbook.errors import PlaybookError
from playbook.evidence import Evidence
from playbook.evidence.settings import setting_text, usable_connections
from playbook.plots import EVENT_COLORS, STATE_COLORS  # the final figures' colours: both read alike
from playbook.request import RunRequest

PAPERMILL_PARAMETERS = "# Parameters\n"  # how papermill's injected cell starts (papermill.translators)
MIN_REDRAW_S = 1.0  # never more than one redraw a second, whatever the interval
REDRAW_COST_FACTOR = 3  # a redraw that took r seconds waits at least 3r: sampling keeps the clock
FOLLOW_CHUNK_MAX = 4 << 20  # bytes of a log read per tick at most: a burst is caught up over ticks
SHOWN_EVENTS = 6  # the latest log events listed under the figure
TOP_APPS = 6
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4")  # rotated logs: nothing is written to them live


def interactive() -> bool:
    """Whether a person is watching this kernel's output as it comes: a notebook kernel that
    papermill is not driving (PLAYBOOK_LIVE=0/1 decides when set)."""
    forced = os.environ.get("PLAYBOOK_LIVE", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False  # a script or a terminal IPython: nothing to update in place
    history = shell.user_ns.get("In") or []
    return not any(str(cell).startswith(PAPERMILL_PARAMETERS) for cell in history)


@dataclass
class _Follower:
    """One log file followed from an offset: each poll returns the complete lines written since."""

    path: Path
    kind: str  # "server" or "app"
    offset: int = 0
    fmt: str = "auto"
    error: str | None = None

    @classmethod
    def at_end(cls, path: Path, kind: str) -> _Follower:
        try:
            offset = path.stat().st_size
        except OSError:
            offset = 0  # not written yet: followed from its first byte once it appears
        return cls(path, kind, offset)

    def new_lines(self) -> bytes:
        try:
            size = self.path.stat().st_size
        except OSError:
            return b""
        if size < self.offset:
            self.offset = 0  # truncated or rotated in place: the new file from its start
        if size == self.offset:
            return b""
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read(min(size - self.offset, FOLLOW_CHUNK_MAX))
        cut = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self.offset += cut
        return chunk[:cut]


@dataclass
class _Event:
    ts: Any
    source: str  # "server" or "application"
    category: str  # the root-cause category, or "application"
    label: str  # the event id or the application's error kind


@dataclass
class LiveView:
    """Called by the sampler with each tick (`on_tick` of collect_evidence); `finish` draws the
    last state once the evidence is in. Build it when the cell starts, so the logs are followed
    from that moment."""

    request: RunRequest
    times: list[datetime] = field(default_factory=list)
    states: list[Counter[str]] = field(default_factory=list)
    apps: list[Counter[str]] = field(default_factory=list)
    idle_age: list[float] = field(default_factory=list)
    idle_in_xact_age: list[float] = field(default_factory=list)
    events: list[_Event] = field(default_factory=list)
    ticks: int = 0
    redraws: int = 0
    gaps: int = 0
    elapsed_s: float = 0.0
    usable: int | None = None
    _followers: list[_Follower] = field(default_factory=list)
    _handle: Any = None
    _next_redraw: float = 0.0
    _workdir: tempfile.TemporaryDirectory[str] | None = None

    def __post_init__(self) -> None:
        from playbook.collect.collection import route_logs

        server, app, _pooler = route_logs(
            self.request.server_logs, self.request.app_logs, self.request.pgbouncer_logs
        )
        self._followers = [
            _Follower.at_end(path, kind)
            for paths, kind in ((server, "server"), (app, "app"))
            for path in paths
            if not path.name.endswith(COMPRESSED)
        ]

    def __call__(self, tick: SampledTick, context: Context) -> None:
        self.ticks += 1
        self.elapsed_s = tick.elapsed_s
        self.gaps = tick.gaps
        if self.usable is None:
            self.usable = usable_connections(context.settings)
        self._sample(tick)
        self._follow(context)
        now = time.monotonic()
        if now >= self._next_redraw:
            self._show(self._status(), final=False)
            self._next_redraw = now + max(MIN_REDRAW_S, REDRAW_COST_FACTOR * (time.monotonic() - now))

    def finish(self, evidence: Evidence) -> None:
        """The last state, once the window is over: says whether it ran its course or an interrupt
        cut it short (the cells below diagnose what was sampled either way)."""
        from playbook.collect.sources.sample_window import cut_short_warning

        at = evidence.snapshot("sampling").get("cut_short_at_s")
        duration = self.request.duration
        end = cut_short_warning(at, duration) if at is not None else f"window over: {duration:g} s"
        self._show(f"{end} · {self.ticks} ticks · the cells below diagnose it", final=True)
        self._clean_up()

    def abandon(self, exc: BaseException) -> None:
        """The cell stopped before the evidence was complete (an interrupt while connecting or
        while the logs were read, a refusal): the figure says so instead of looking live."""
        if self._handle is not None:
            self._show(f"stopped before the evidence was complete ({type(exc).__name__})", final=True)
        self._clean_up()

    def _clean_up(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    # What one tick adds ----------------------------------------------------------------------

    def _sample(self, tick: SampledTick) -> None:
        states: Counter[str] = Counter()
        apps: Counter[str] = Counter()
        idle = idle_in_xact = 0.0
        for row in tick.rows or []:  # QUERY_COLUMNS: ts, pid, state, application_name, …, state_change (10)
            state = row[2] or "(hidden)"
            states[state] += 1
            apps[row[3] or "(no application_name)"] += 1
            if row[0] is not None and row[10] is not None and state.startswith("idle"):
                age = (row[0] - row[10]).total_seconds()
                if state == "idle":
                    idle = max(idle, age)
                else:
                    idle_in_xact = max(idle_in_xact, age)
        self.times.append(tick.ts)
        self.states.append(states)
        self.apps.append(apps)
        self.idle_age.append(idle)
        self.idle_in_xact_age.append(idle_in_xact)

    def _follow(self, context: Context) -> None:
        for follower in self._followers:
            if follower.error is not None:
                continue
            try:
                chunk = follower.new_lines()
                if chunk:
                    self.events += self._read(follower, chunk, context)
            except Exception as exc:  # shown on the figure; the evidence reads the log whole anyway
                ours = isinstance(exc, PlaybookError)
                follower.error = str(exc) if ours else f"{type(exc).__name__}: {exc}"

    def _read(self, follower: _Follower, chunk: bytes, context: Context) -> list[_Event]:
        """The events of the new lines, read by the same readers the evidence uses (the server's
        prefix, zone and language; the application's zone), from a file of those lines alone."""
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="playbook-live-")
        piece = Path(self._workdir.name) / f"{len(self.events)}-{follower.path.name}"
        piece.write_bytes(chunk)
        try:
            if follower.kind == "server":
                from playbook.collect.serverlog import read_server_logs
                from playbook.collect.sources.read_server_log import log_zone
                from playbook.vocabulary.translations import language_of_locale

                settings = context.settings
                log = read_server_logs(
                    [piece],
                    fmt=follower.fmt,
                    prefix=self.request.log_prefix or setting_text(settings, "log_line_prefix"),
                    log_tz=log_zone(settings, context.flag_log_zone),
                    language=language_of_locale(setting_text(settings, "lc_messages")),
                )
                follower.fmt = log.format or follower.fmt
                frame = log.events
                frame = frame[frame["category"].astype(str) != ""]
                return [
                    _Event(ts, "server", str(category), str(event))
                    for ts, category, event in zip(
                        frame["ts"], frame["category"], frame["event"], strict=True
                    )
                ]
            from playbook.collect.applog import read_app_logs

            frame = read_app_logs([piece], app_tz=context.app_zone).events
            return [
                _Event(ts, "application", "application", str(kind))
                for ts, kind in zip(frame["ts"], frame["kind"], strict=True)
            ]
        finally:
            piece.unlink(missing_ok=True)

    # Drawing ---------------------------------------------------------------------------------

    def _status(self) -> str:
        now = sum(self.states[-1].values()) if self.states else 0
        limit = f" of {self.usable} usable" if self.usable else ""
        lost = f" · session lost {self.gaps}×" if self.gaps else ""
        return (
            f"live · tick {self.ticks} · {self.elapsed_s:.0f} s of {self.request.duration:g} s · "
            f"{now} connections{limit}{lost} · interrupt the kernel to stop and keep what was sampled"
        )

    def _show(self, status: str, *, final: bool) -> None:
        from IPython.display import display, update_display

        figure = self._figure()
        bundle = {"text/html": self._html(figure, status, final), "text/plain": status}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            update_display(bundle, raw=True, display_id=self._handle.display_id)
        self.redraws += 1

    def _html(self, png: bytes, status: str, final: bool) -> str:
        latest = self.events[-SHOWN_EVENTS:][::-1]
        rows = "".join(
            f"<li>{html.escape(_second(e.ts))} {html.escape(e.source)}: <b>{html.escape(e.label)}</b>"
            f" ({html.escape(e.category)})</li>"
            for e in latest
        )
        notes = [f.path.name + ": " + f.error for f in self._followers if f.error]
        listing = f"<ul>{rows}</ul>" if rows else ""
        note = "".join(f"<p><i>not followed: {html.escape(n)}</i></p>" for n in notes)
        state = "final" if final else "live"
        return (
            f'<div class="pb-live" data-state="{state}" data-redraw="{self.redraws + 1}">'
            f'<p class="pb-live-status"><b>{html.escape(status)}</b></p>'
            f'<img alt="the window as sampled" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
            f"{listing}{note}</div>"
        )

    def _figure(self) -> bytes:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(10, 8.2), dpi=72, layout="constrained")
        FigureCanvasAgg(figure)
        by_state, by_app, ages, logs = figure.subplots(4, 1, sharex=True, height_ratios=[3, 2, 2, 1.4])
        self._draw_states(by_state)
        self._draw_apps(by_app)
        self._draw_ages(ages)
        self._draw_logs(logs)
        import matplotlib.dates as mdates

        logs.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz="UTC"))
        logs.set_xlabel("time (UTC)")
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return out.getvalue()

    def _limit(self, ax: Any, peak: int) -> None:
        if not self.usable:
            return
        if peak >= self.usable * 0.5:
            ax.axhline(self.usable, color="#de2d26", linestyle="--", linewidth=1)
            ax.text(0.995, self.usable, f"usable {self.usable}", transform=ax.get_yaxis_transform(),
                    ha="right", va="bottom", fontsize=8, color="#de2d26")  # fmt: skip
        else:
            ax.text(0.995, 0.95, f"usable limit {self.usable} (far above)", transform=ax.transAxes,
                    ha="right", va="top", fontsize=8, color="#de2d26")  # fmt: skip

    def _draw_states(self, ax: Any) -> None:
        names = [s for s in STATE_COLORS if any(s in c for c in self.states)]
        names += sorted({s for c in self.states for s in c} - set(names))
        if self.times and names:
            ax.stackplot(self.times, *[[c.get(s, 0) for c in self.states] for s in names],
                         labels=names, colors=[STATE_COLORS.get(s, "#cccccc") for s in names])  # fmt: skip
            ax.legend(loc="upper left", fontsize=8, ncols=3)
        peak = max((sum(c.values()) for c in self.states), default=0)
        self._limit(ax, peak)
        ax.set_ylabel("connections\nby state")
        ax.set_ylim(bottom=0)

    def _draw_apps(self, ax: Any) -> None:
        total: Counter[str] = Counter()
        for counts in self.apps:
            total.update(counts)
        for name, _ in total.most_common(TOP_APPS):
            ax.plot(self.times, [c.get(name, 0) for c in self.apps], label=name[:30], linewidth=1.5)
        if total:
            ax.legend(loc="upper left", fontsize=8, ncols=3)
        self._limit(ax, max((max(c.values(), default=0) for c in self.apps), default=0))
        ax.set_ylabel("connections\nby application")
        ax.set_ylim(bottom=0)

    def _draw_ages(self, ax: Any) -> None:
        ax.plot(self.times, self.idle_age, color=STATE_COLORS["idle"], label="oldest idle", linewidth=1.5)
        ax.plot(self.times, self.idle_in_xact_age, color=STATE_COLORS["idle in transaction"],
                label="oldest idle in transaction", linewidth=1.5)  # fmt: skip
        ax.legend(loc="upper left", fontsize=8, ncols=2)
        ax.set_ylabel("age (s)")
        ax.set_ylim(bottom=0)

    def _draw_logs(self, ax: Any) -> None:
        ax.set_ylabel("log events")
        ax.set_yticks([])
        if not self._followers:
            _note(ax, "no log given: pass server_log and app_log to see their events here")
            return
        placed = [e for e in self.events if e.ts is not None and e.ts == e.ts]  # NaT != NaT
        if not placed:
            _note(ax, "none yet in the logs followed")
            return
        rows = sorted({e.category for e in placed})
        for y, category in enumerate(rows):
            stamps = [e.ts for e in placed if e.category == category]
            color = EVENT_COLORS.get(category, "#3182bd")  # "application" too: the final timeline's blue
            ax.scatter(stamps, [y] * len(stamps), marker="|", s=150, color=color)
            label = f"{category} ({len(stamps)})"
            ax.text(0.005, y, label, transform=ax.get_yaxis_transform(), fontsize=8, va="bottom")
        ax.set_ylim(-0.6, len(rows) - 0.2)


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="#636363")


def _second(ts: Any) -> str:
    try:
        return str(ts.strftime("%H:%M:%S"))
    except (AttributeError, ValueError):
        return "?"

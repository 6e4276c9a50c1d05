"""PgBouncer's admin console, sampled over the window: pools, clients, servers, stats, databases, lists.

`PgBouncerSampler(dsn, interval=…).run(duration)` connects to the virtual database `pgbouncer` (as a
stats_users or admin_users role), reads SHOW VERSION and SHOW CONFIG once, then every tick SHOW
POOLS, CLIENTS, SERVERS, STATS, DATABASES and LISTS, and returns a PgBouncerEvidence whose frames and
snapshots are named and typed in playbook.evidence.pgbouncer_frames. `add_to(evidence)` puts them into a run's
Evidence.

The console speaks only the simple query protocol and accepts no `options`: the session is
autocommit, never prepares, sends its SHOWs through a ClientCursor and sets only application_name,
keepalives and the playbook's connect timeout. Every command it sends is a SHOW: read-only by nature.
Columns differ between versions: what a version returns is kept, the schema's columns are cast and
the missing ones added empty; a SHOW a version does not know is noted once and not sent again.
Losing the console is a recorded gap (reconnect with backoff), never a crash; a console session
lost between two ticks (a path that resets idle flows) is replaced at once, within the tick.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from playbook import APPLICATION_NAME
from playbook.collect.ticks import tick_until
from playbook.evidence import Evidence
from playbook.evidence.manifest import gap_opened
from playbook.evidence.pgbouncer_frames import (
    CONFIG_SNAPSHOT,
    CONSOLE_COMMANDS,
    CONSOLE_SNAPSHOT,
    SCHEMAS,
    TICKS_FRAME,
)
from playbook.evidence.zones import Zone, to_utc
from playbook.progress import progress_bar
from playbook.target import DEFAULT_CONNECT_TIMEOUT_S, cannot_run_commands, parse_dsn, path_defaults, redact

_CONSOLE_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)(?: (\S+))?$")


@dataclass
class PgBouncerEvidence:
    """What the console showed: frames by name, the config and console snapshots, and the gaps."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    snapshots: dict[str, Any] = field(default_factory=dict)
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def frame(self, name: str) -> pd.DataFrame:
        return self.frames.get(name, pd.DataFrame())

    def add_to(self, evidence: Evidence) -> None:
        """Put the frames and snapshots into a run's Evidence; gaps go to the console snapshot."""
        evidence.frames.update(self.frames)
        evidence.snapshots.update(self.snapshots)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


class PgBouncerSampler:
    """Samples PgBouncer's console every `interval` seconds for `duration` seconds (`run()`).

    `zone` is the zone PgBouncer's host runs in, used to read the connect/request times SHOW CLIENTS
    and SHOW SERVERS print in local time; without it only UTC and numeric zones are read.
    """

    def __init__(
        self,
        dsn: str,
        interval: float = 1.0,
        *,
        zone: Zone | None = None,
        connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
        progress: bool = False,
    ) -> None:
        self.dsn = dsn
        self.interval = interval
        self.zone = zone
        self.connect_timeout_s = connect_timeout_s
        self.progress = progress
        self._conn: psycopg.Connection[Any] | None = None
        self._rows: dict[str, list[dict[str, Any]]] = {name: [] for name in CONSOLE_COMMANDS}
        self._ticks: list[dict[str, Any]] = []
        self._unsupported: dict[str, str] = {}
        self._config: dict[str, Any] | None = None
        self.gaps: list[dict[str, Any]] = []
        self._open_gap: dict[str, Any] | None = None
        self._stopped = threading.Event()
        self.notes: list[str] = []

    def stop(self) -> None:
        """End the window early (from another thread): what was sampled so far is the evidence."""
        self._stopped.set()

    # -- the console ----------------------------------------------------------------------------------
    def connect_kwargs(self) -> dict[str, Any]:
        params = parse_dsn(self.dsn)
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": None,  # the console has no extended protocol to prepare with
            "application_name": APPLICATION_NAME,
        }
        kwargs.update(path_defaults(params, self.connect_timeout_s))
        return kwargs

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, **self.connect_kwargs())

    def _show(self, conn: psycopg.Connection[Any], command: str) -> list[dict[str, Any]]:
        cur = psycopg.ClientCursor(conn)  # simple query protocol: the only one the console speaks
        try:
            cur.execute(command)
            names = [d.name for d in cur.description or []]
            return [{n: _plain(v) for n, v in zip(names, row, strict=False)} for row in cur.fetchall()]
        finally:
            cur.close()

    def _lost(self, exc: BaseException, at: datetime) -> None:
        """The session is gone: closed, and a gap opened at the tick `at` unless one is open."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._open_gap is None:
            self._open_gap = dict(gap_opened(exc, at))

    def _read_config(self, conn: psycopg.Connection[Any]) -> None:
        version_rows = self._show(conn, "SHOW VERSION")
        text = str(next(iter(version_rows[0].values()))) if version_rows else ""
        found = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
        rows = self._show(conn, "SHOW CONFIG")
        self._config = {
            "version": found.group(1) if found else None,
            "version_text": text,
            "settings": {str(r.get("key")): r.get("value") for r in rows},
            "defaults": {str(r.get("key")): r.get("default") for r in rows if "default" in r},
            "collected_at": _utcnow().isoformat(),
        }

    def _tick(self) -> None:
        started = time.perf_counter()
        now = _utcnow()
        batch: dict[str, list[dict[str, Any]]] | None = None
        error: psycopg.Error | None = None
        try:
            batch = self._sample(now)
        except psycopg.Error as exc:
            # A console session that answered the last tick and is gone at this one (a path that
            # resets flows idle for less than the interval): one fresh session at once keeps the
            # tick; the loss is still a gap, however short.
            lost_since_last_tick = (
                self._conn is not None and self._open_gap is None and cannot_run_commands(self._conn)
            )
            self._lost(exc, now)
            error = exc
            if lost_since_last_tick:
                try:
                    batch = self._sample(now)
                except psycopg.Error as again:
                    self._lost(again, now)
                    error = again
        if batch is None:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._ticks.append({"ts": now, "ok": False, "query_ms": elapsed_ms, "error": str(error)})
            return
        for name, rows in batch.items():
            self._rows[name].extend({"tick_ts": now, **row} for row in rows)
        self._ticks.append(
            {"ts": now, "ok": True, "query_ms": (time.perf_counter() - started) * 1000, "error": None}
        )

    def _sample(self, now: datetime) -> dict[str, list[dict[str, Any]]]:
        """One round of SHOWs on the console session, opened first when there is none: the open gap
        ends at this tick, `now`. The config is read on the first session that answers."""
        if self._conn is None or self._conn.closed:
            if self._open_gap is not None:
                self._open_gap["reconnect_attempts"] += 1
            self._conn = self._connect()
            if self._open_gap is not None:
                self._open_gap["end"] = now.isoformat()
                self.gaps.append(self._open_gap)
                self._open_gap = None
        conn = self._conn
        if self._config is None:
            self._read_config(conn)
        batch: dict[str, list[dict[str, Any]]] = {}
        for name, command in CONSOLE_COMMANDS.items():
            if name in self._unsupported:
                continue
            try:
                batch[name] = self._show(conn, command)
            except psycopg.Error as exc:
                if cannot_run_commands(conn):
                    raise
                # an older PgBouncer without this SHOW: noted once, the rest of the tick goes on
                self._unsupported[name] = " ".join(str(exc).split())[:200]
        return batch

    def run(self, duration: float) -> PgBouncerEvidence:
        """Sample for `duration` seconds (or until stop()); the first tick is at once."""
        start = time.monotonic()
        end = start + duration
        with progress_bar("sampling PgBouncer's console", total=duration, enabled=self.progress) as advance:
            tick_until(
                end, self.interval, self._tick, lambda: self._open_gap is not None, self._stopped, advance
            )
            advance(duration)
        if self._open_gap is not None:
            self.gaps.append(self._open_gap)  # still lost when the window closed (end stays None)
            self._open_gap = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        return self.evidence()

    def tick(self) -> None:
        """One round of SHOWs now (`playbook watch` drives the ticks itself)."""
        self._tick()

    def drain(self) -> PgBouncerEvidence:
        """The evidence sampled since the last drain, and an empty start for the next: the session
        stays open; a gap still open is listed (end None) and stays open, as ActivitySampler.drain."""
        if self._open_gap is not None:
            self.gaps.append(dict(self._open_gap))
        evidence = self.evidence()
        self._rows = {name: [] for name in CONSOLE_COMMANDS}
        self._ticks, self.gaps, self.notes = [], [], []
        return evidence

    def close(self) -> None:
        """Close the console session, if any (after the last drain)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the frames -----------------------------------------------------------------------------------
    def evidence(self) -> PgBouncerEvidence:
        frames = {name: self._frame(name, rows) for name, rows in self._rows.items()}
        ticks = pd.DataFrame(self._ticks, columns=SCHEMAS[TICKS_FRAME].column_names)
        frames[TICKS_FRAME] = _typed(ticks, TICKS_FRAME)
        console = {
            "dsn": redact(self.dsn),
            "interval_s": self.interval,
            "ticks": len(self._ticks),
            "ticks_ok": sum(1 for t in self._ticks if t["ok"]),
            "gaps": self.gaps,
            "unsupported": self._unsupported,
            "notes": sorted(set(self.notes)),
        }
        snapshots: dict[str, Any] = {CONSOLE_SNAPSHOT: console}
        if self._config is not None:
            snapshots[CONFIG_SNAPSHOT] = self._config
        return PgBouncerEvidence(frames=frames, snapshots=snapshots, gaps=list(self.gaps))

    def _frame(self, name: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows)
        if "tick_ts" not in frame:
            frame["tick_ts"] = pd.Series([], dtype="datetime64[ns, UTC]")
        if name == "pgbouncer_pools":
            frame["maxwait_s"] = _seconds(frame, "maxwait", "maxwait_us")
        if name in ("pgbouncer_clients", "pgbouncer_servers"):
            frame["wait_s"] = _seconds(frame, "wait", "wait_us")
            for text, utc in (("connect_time", "connect_ts"), ("request_time", "request_ts")):
                frame[utc] = self._console_times(frame, text)
        return _typed(frame, name)

    def _console_times(self, frame: pd.DataFrame, column: str) -> pd.Series:
        """UTC from the console's 'YYYY-MM-DD HH:MM:SS ZONE' texts (PgBouncer's local time)."""
        if column not in frame or frame.empty:
            return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
        parts = frame[column].astype(str).str.extract(_CONSOLE_TIME)
        naive = pd.to_datetime(parts[0], errors="coerce")
        ok = naive.notna().to_numpy()
        out = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
        if ok.any():
            values = naive[ok].to_numpy(dtype="datetime64[ms]")
            names = parts.loc[ok, 1].fillna("").tolist()
            utc = to_utc(values, names if all(names) else None, self.zone, self.notes, "PgBouncer's console")
            out[ok] = pd.to_datetime(pd.Series(utc, dtype="datetime64[ns]"), utc=True).to_numpy()
        return out


def _seconds(frame: pd.DataFrame, whole: str, micro: str) -> pd.Series:
    if whole not in frame:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    seconds = pd.to_numeric(frame[whole], errors="coerce").astype("float64")
    if micro in frame:
        seconds = seconds + pd.to_numeric(frame[micro], errors="coerce").fillna(0).astype("float64") / 1e6
    return seconds


def _typed(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Cast the schema's columns, add the missing ones empty, keep every other column as it came."""
    for column, dtype in SCHEMAS[name].dtypes().items():
        if column not in frame:
            frame[column] = pd.Series(pd.NA if dtype not in ("float64",) else np.nan, index=frame.index)
        series = frame[column]
        if dtype.startswith("datetime64"):
            frame[column] = pd.to_datetime(series, utc=True)
        elif dtype == "Int64":
            frame[column] = pd.to_numeric(series, errors="coerce").astype("Int64")
        elif dtype == "float64":
            frame[column] = pd.to_numeric(series, errors="coerce").astype("float64")
        elif dtype == "bool":
            frame[column] = series.fillna(False).astype(bool)
        else:
            frame[column] = series.astype("string")
    for column in frame.columns:
        if frame[column].dtype == object and column not in SCHEMAS[name].column_names:
            # other columns of other versions: numbers stay numbers, the rest becomes text
            numeric = pd.to_numeric(frame[column], errors="coerce")
            is_number = numeric.notna().sum() == frame[column].notna().sum()
            frame[column] = numeric if is_number and len(frame) else frame[column].astype("string")
    leading = [c for c in SCHEMAS[name].column_names if c in frame]
    return frame[leading + [c for c in frame.columns if c not in leading]].reset_index(drop=True)

"""The activity sampler: pg_stat_activity, one query per tick over one connection.

The patient is sick: when the sampler's own session is lost, it reconnects with backoff, records
the gap (start, end, error text, SQLSTATE) as evidence and goes on. A session lost between two
ticks (a path that resets flows idle for less than the interval) is replaced at once, within the
tick: the gap is recorded and the tick is kept. The playbook's own backends
are left out of every row.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import psycopg

from playbook import APPLICATION_NAME
from playbook.collect.ticks import tick_until
from playbook.evidence.frames import ACTIVITY_SAMPLES, ACTIVITY_TICKS
from playbook.evidence.manifest import gap_opened
from playbook.progress import progress_bar
from playbook.target import Target, session_lost

# One row per client backend. Ages are derived later in pandas from the server's own clock
# (ts is the server's now()), which keeps the per-tick cost low: no numeric conversions per row.
ACTIVITY_SQL = f"""
SELECT now() AS ts, pid, state, application_name, usename, datname, client_addr::text AS client_addr,
       backend_start, xact_start, query_start, state_change, wait_event_type, wait_event
FROM pg_stat_activity
WHERE (backend_type = 'client backend'
       -- rows of roles we may not see have a null backend_type; clients still show user and database
       OR (backend_type IS NULL AND usename IS NOT NULL AND datname IS NOT NULL))
  AND pid <> pg_backend_pid()
  AND coalesce(application_name, '') NOT LIKE '{APPLICATION_NAME}%'
"""
QUERY_COLUMNS = [
    "ts", "pid", "state", "application_name", "usename", "datname", "client_addr", "backend_start",
    "xact_start", "query_start", "state_change", "wait_event_type", "wait_event",
]  # fmt: skip
# The frames' columns are the evidence contract's (playbook.evidence.frames); the query feeds them.
SAMPLE_COLUMNS = ACTIVITY_SAMPLES.column_names
TICK_COLUMNS = ACTIVITY_TICKS.column_names
HIDDEN_STATE = "(hidden)"  # rows of other roles that this role may not see


@dataclass
class ActivityEvidence:
    samples: pd.DataFrame
    ticks: pd.DataFrame
    gaps: list[dict[str, Any]] = field(default_factory=list)
    hidden_note: str | None = None
    cut_short_s: float | None = None  # seconds into the window when an interrupt ended it


@dataclass(frozen=True)
class SampledTick:
    """One tick as it happens, for a live view: `rows` in QUERY_COLUMNS order (None while the
    session is lost), `elapsed_s` of the window's `duration_s`, `gaps` lost sessions so far."""

    ts: datetime
    elapsed_s: float
    duration_s: float
    rows: list[tuple[Any, ...]] | None
    gaps: int


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ActivitySampler:
    """Samples every `interval` seconds for `duration` seconds; `run()` returns the evidence."""

    def __init__(
        self,
        target: Target,
        *,
        duration: float,
        interval: float,
        progress: bool = True,
        on_tick: Callable[[SampledTick], None] | None = None,
        keep_on_interrupt: bool = False,
    ) -> None:
        """`on_tick` is given each tick as it is sampled (a live view; one that fails is dropped
        with a warning, the sampling goes on). With `keep_on_interrupt` a KeyboardInterrupt ends
        the window early and what was sampled is the evidence (`cut_short_s` says when): a
        notebook opened by hand; without, it ends the run (the CLI removes its partial report)."""
        self.target = target
        self.duration = duration
        self.interval = interval
        self.progress = progress
        self.on_tick = on_tick
        self.keep_on_interrupt = keep_on_interrupt
        self.cut_short_s: float | None = None
        self._started = time.monotonic()
        self._conn: psycopg.Connection[Any] | None = None
        self._batches: list[tuple[datetime, list[tuple[Any, ...]]]] = []
        self._ticks: list[tuple[Any, ...]] = []
        self.gaps: list[dict[str, Any]] = []
        self._open_gap: dict[str, Any] | None = None
        self._stopped = threading.Event()

    def stop(self) -> None:
        """End the window early (from another thread): what was sampled so far is the evidence."""
        self._stopped.set()

    def _lost(self, exc: BaseException, at: datetime) -> None:
        """The session is gone: closed, and a gap opened at the tick `at` unless one is open."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._open_gap is None:
            self._open_gap = dict(gap_opened(exc, at))

    def _close_gap(self, resumed_at: datetime) -> None:
        if self._open_gap is not None:
            self._open_gap["end"] = resumed_at.isoformat()
            self.gaps.append(self._open_gap)
            self._open_gap = None

    def _tick(self) -> None:
        started = time.perf_counter()
        now = _utcnow()
        rows: list[tuple[Any, ...]] | None = None
        try:
            rows = self._sample(now)
        except psycopg.Error as exc:
            # A session that answered the last tick and is gone at this one: most often the path
            # reset it while it idled between ticks (an idle cut-off shorter than the interval).
            # Then one fresh session at once keeps the tick; the loss is still a gap, however short.
            lost_since_last_tick = (
                self._conn is not None and self._open_gap is None and session_lost(self._conn, exc)
            )
            self._lost(exc, now)
            if lost_since_last_tick:
                try:
                    rows = self._sample(now)
                except psycopg.Error as again:
                    self._lost(again, now)
        if rows is None:
            self._ticks.append((now, None, False, 0, 0, (time.perf_counter() - started) * 1000))
            self._tell(now, None)
            return
        hidden = sum(1 for row in rows if row[2] is None)  # state is null for rows we may not see
        self._batches.append((now, rows))
        server_ts = rows[0][0] if rows else None
        self._ticks.append((now, server_ts, True, len(rows), hidden, (time.perf_counter() - started) * 1000))
        self._tell(now, rows)

    def _tell(self, now: datetime, rows: list[tuple[Any, ...]] | None) -> None:
        if self.on_tick is None:
            return
        tick = SampledTick(
            ts=now,
            elapsed_s=time.monotonic() - self._started,
            duration_s=self.duration,
            rows=rows,
            gaps=len(self.gaps) + (self._open_gap is not None),
        )
        try:
            self.on_tick(tick)
        except Exception as exc:  # a view that cannot draw must not cost the evidence
            self.on_tick = None
            warnings.warn(f"live view stopped: {type(exc).__name__}: {exc}", stacklevel=2)

    def _sample(self, now: datetime) -> list[tuple[Any, ...]]:
        """One query on the sampler's session, opened first when there is none: the open gap ends at
        this tick, `now` (a gap runs from the tick that lost the session to the first good one)."""
        if self._conn is None or self._conn.closed:
            if self._open_gap is not None:
                self._open_gap["reconnect_attempts"] += 1
            self._conn = self.target.connect()
            self._close_gap(resumed_at=now)
        with self._conn.cursor(binary=True) as cur:  # binary: cheaper to parse at 1,000 backends
            return cur.execute(ACTIVITY_SQL).fetchall()

    def run(self) -> ActivityEvidence:
        start = self._started = time.monotonic()
        end = start + self.duration
        with progress_bar("sampling pg_stat_activity", total=self.duration, enabled=self.progress) as advance:
            try:
                tick_until(
                    end, self.interval, self._tick, lambda: self._open_gap is not None, self._stopped, advance
                )
            except KeyboardInterrupt:
                if not self.keep_on_interrupt:
                    raise
                # The picture was clear before the window ended: what was sampled is the evidence.
                self.cut_short_s = round(time.monotonic() - start, 1)
            advance(self.duration)
        if self._open_gap is not None:
            self._open_gap["end"] = None  # still lost when the window closed
            self.gaps.append(self._open_gap)
        if self._conn is not None:
            self._conn.close()
        return self.evidence()

    def tick(self) -> None:
        """One sample now (`playbook watch` drives the ticks itself, between its segments)."""
        self._tick()

    @property
    def lost(self) -> bool:
        """Whether the session is lost (a gap is open): the clock backs off meanwhile."""
        return self._open_gap is not None

    def drain(self) -> ActivityEvidence:
        """The evidence sampled since the last drain, and an empty start for the next: the session
        stays open, and a gap still open is listed (end None) and stays open, so that the next
        drain lists it again, closed, under the same start."""
        if self._open_gap is not None:
            self.gaps.append(dict(self._open_gap))
        evidence = self.evidence()
        self._batches, self._ticks, self.gaps = [], [], []
        return evidence

    def close(self) -> None:
        """Close the session, if any (after the last drain)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def evidence(self) -> ActivityEvidence:
        frames = [
            pd.DataFrame(rows, columns=QUERY_COLUMNS).assign(tick_ts=now)
            for now, rows in self._batches
            if rows
        ]
        samples = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=QUERY_COLUMNS + ["tick_ts"])
        )
        for column in ("tick_ts", "ts", "backend_start", "xact_start", "query_start", "state_change"):
            samples[column] = pd.to_datetime(samples[column], utc=True)
        samples["state_age_s"] = (samples["ts"] - samples["state_change"]).dt.total_seconds()
        samples["xact_age_s"] = (samples["ts"] - samples["xact_start"]).dt.total_seconds()
        samples["conn_age_s"] = (samples["ts"] - samples["backend_start"]).dt.total_seconds()
        samples = samples[SAMPLE_COLUMNS]
        samples["pid"] = samples["pid"].astype("int64")
        hidden = int(samples["state"].isna().sum())
        samples["state"] = samples["state"].fillna(HIDDEN_STATE)
        ticks = pd.DataFrame(self._ticks, columns=TICK_COLUMNS)
        ticks["ts"] = pd.to_datetime(ticks["ts"], utc=True)
        ticks["server_ts"] = pd.to_datetime(ticks["server_ts"], utc=True)
        note = None
        if hidden:
            note = (
                f"{hidden} sampled rows belonged to roles this role may not see (state, query and ages "
                "hidden)"
            )
        return ActivityEvidence(
            samples=samples, ticks=ticks, gaps=self.gaps, hidden_note=note, cut_short_s=self.cut_short_s
        )

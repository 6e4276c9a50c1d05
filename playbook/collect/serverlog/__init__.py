"""Readers for PostgreSQL server logs: stderr (any log_line_prefix), csvlog and jsonlog.

`read_server_logs` streams every file in blocks of whole entries, in time order (a rotated set
may be passed in any order, plain or gzip/bzip2/xz): a parser keeps the rows that explain
sessions (playbook.collect.serverlog.stderr / .structured), the streaming state pairs logins
with their ends and keeps running totals (.state), and the summary is built from those totals
(.summary). Without frames (`frames=False`, what `playbook logs` asks for) memory stays flat
whatever the size of the logs; with them it grows only with the events that can explain a lost
session, which are all kept (session lines and sessions are capped: see .state). With
`jobs` > 1 blocks are parsed in worker processes while the state follows them in order; the
result is the same.

Modules: engine (the implementation, compiled or reference, chosen once at import), rules (what
is kept), sources (files, formats, order), language (other languages and encodings), prefix
(log_line_prefix), times (zones), stamps (times at fixed places), rows (what a parser keeps),
stderr and structured (the parsers), messages (what both read from messages and names),
arrow_buffers (pyarrow over numpy buffers), state (sessions and totals), summary.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from playbook.collect.serverlog import engine
from playbook.collect.serverlog.language import LogLanguage
from playbook.collect.serverlog.prefix import COMMON_PREFIXES, compile_prefix, detect_prefix
from playbook.collect.serverlog.rows import Rows
from playbook.collect.serverlog.sources import FORMATS, WHAT, PlannedFile, detect_format, open_log, plan_files
from playbook.collect.serverlog.state import EVENT_COLUMNS, SESSION_COLUMNS, SessionState
from playbook.collect.serverlog.stderr import StderrSpec, parse_block
from playbook.collect.serverlog.structured import parse_csv_block, parse_json_block
from playbook.collect.serverlog.summary import iso, summarise
from playbook.collect.serverlog.times import Clock, as_utc
from playbook.errors import PlaybookError
from playbook.evidence.zones import Zone

if TYPE_CHECKING:  # pandas loads where the frames are built: `playbook logs` builds none
    from concurrent.futures import Future

    import pandas as pd

__all__ = [
    "COMMON_PREFIXES",
    "EVENT_COLUMNS",
    "FORMATS",
    "SESSION_COLUMNS",
    "ServerLogEvidence",
    "compile_prefix",
    "detect_format",
    "detect_prefix",
    "read_server_logs",
]

BLOCK_SIZE = 4 << 20  # big enough that per-block overhead vanishes, small enough to stay flat


class _Frames:
    """The events and sessions frames of a read: built from its state once, on first use (a
    read that keeps frames asks at once; `playbook logs`, which keeps none, never asks, and
    never loads pandas)."""

    def __init__(self, state: SessionState) -> None:
        self._state: SessionState | None = state
        self._built: tuple[pd.DataFrame, pd.DataFrame] | None = None

    def get(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._built is None:
            assert self._state is not None
            self._built = (self._state.events_frame(), self._state.sessions_frame())
            self._state = None
        return self._built


@dataclass
class ServerLogEvidence:
    """What the server logs say about sessions; `summary` is JSON-serialisable. `events` and
    `sessions` are the frames (empty ones when the read kept none)."""

    frames: _Frames = field(repr=False)
    summary: dict[str, Any]
    bytes_read: int
    lines: int
    files: list[str]
    format: str
    prefix: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def events(self) -> pd.DataFrame:
        return self.frames.get()[0]

    @property
    def sessions(self) -> pd.DataFrame:
        return self.frames.get()[1]


def _parse(
    fmt: str, spec: StderrSpec | None, zone: Zone | None, what: str, buf: bytes, written: LogLanguage
) -> Rows:
    """One block in any process: its rows, with how its zone names were read. A block written
    in another language or encoding is rewritten into English UTF-8 first (serverlog.language)."""
    clock = Clock(zone, what)
    size = len(buf)
    if not written.plain:
        buf = written.to_english(buf, fmt)
    if fmt == "stderr":
        assert spec is not None
        # a log copied through Windows: "\r" would end every name and message. A lone byte is
        # looked for first (memchr, ~0.1 ms per 4 MB block; b"\r\n" alone costs ~4 ms)
        if b"\r" in buf and b"\r\n" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        rows = parse_block(buf, spec, clock, written.language)
    elif fmt == "csvlog":
        rows = parse_csv_block(buf, clock, written.language)
    else:
        rows = parse_json_block(buf, clock, written.language)
    rows.bytes_read = size
    rows.readings, rows.names_seen = clock.readings, clock.names_seen
    return rows


def _cut(fmt: str, buf: bytes) -> int:
    """Where the whole entries of `buf` end (0: none yet): after the last newline that is
    followed by a new entry (stderr: not a tab; csvlog: outside a quoted field)."""
    cut = buf.rfind(b"\n")
    if fmt == "stderr":
        while cut >= 0 and cut + 1 < len(buf) and buf[cut + 1] == 9:
            cut = buf.rfind(b"\n", 0, cut)
    elif fmt == "csvlog":
        records = engine.ENGINE.records
        if records is not None:
            return int(records.csv_cut(buf))
        quotes = buf.count(b'"', 0, cut) if cut >= 0 else 0  # counted once, then by difference
        while cut >= 0 and quotes % 2:
            before = buf.rfind(b"\n", 0, cut)
            quotes -= buf.count(b'"', max(before, 0), cut)
            cut = before
    return cut + 1


def _blocks(planned: PlannedFile, tick: Callable[[int], None]) -> Any:
    """Blocks of whole entries of one file, then its last piece."""
    with open_log(planned.path) as source:
        carry = b""
        while True:
            chunk = source.read(BLOCK_SIZE)
            if not chunk:
                break
            buf = carry + chunk if carry else chunk
            cut = _cut(planned.fmt, buf)
            if cut <= 0:
                carry = buf
                continue
            carry = buf[cut:]
            yield buf[:cut] if cut < len(buf) else buf
            tick(source.position())
        if carry:
            yield carry


def _progress_bar() -> AbstractContextManager[Any]:
    """A progress bar on stderr (rich, imported only when asked for)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _read_file(
    planned: PlannedFile,
    state: SessionState,
    spec: StderrSpec | None,
    log_tz: Zone | None,
    pool: Any,
    jobs: int,
    tick: Callable[[int], None],
    warnings: list[str],
) -> dict[str, Any]:
    """One file's blocks into `state` (parsed here, or in `pool`'s processes and consumed in
    order); returns how its zone names were read, and adds their warnings to `warnings`."""
    what = f"{WHAT} {planned.path}"
    readings: dict[str, Any] = {}
    seen: dict[str, int] = {}
    pending: deque[Future[Rows]] = deque()

    def take(rows: Rows) -> None:
        state.consume(rows)
        readings.update(rows.readings)
        for name, count in rows.names_seen.items():
            seen[name] = seen.get(name, 0) + count

    for buf in _blocks(planned, tick):
        if pool is None:
            take(_parse(planned.fmt, spec, log_tz, what, buf, planned.language))
        else:
            pending.append(pool.submit(_parse, planned.fmt, spec, log_tz, what, buf, planned.language))
            while len(pending) > 2 * jobs:
                take(pending.popleft().result())
        if state.past_until:
            break
    while pending:
        take(pending.popleft().result())
    for name in sorted(seen):
        if name in readings and readings[name].warning:
            warnings.append(str(readings[name].warning))
    return {
        "zone": log_tz.describe() if log_tz else None,
        "names": {name: readings[name].how for name in sorted(seen) if name in readings},
    }


def read_server_logs(
    paths: Sequence[str | Path],
    *,
    fmt: str = "auto",
    prefix: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: bool = False,
    log_tz: Zone | None = None,
    jobs: int = 1,
    frames: bool = True,
    language: str | None = None,
) -> ServerLogEvidence:
    """Read PostgreSQL server logs and classify what ended sessions.

    `paths` may be a rotated set in any order: files are read in the order of their first
    timestamp. `prefix` is the server's log_line_prefix for stderr logs (guessed among the
    common ones when None). `log_tz` is the zone the server's clock prints in (its
    log_timezone): printed abbreviations are read through it; without it only numeric offsets
    and UTC/GMT are exact, and anything else is read with an assumption the summary's
    "warnings" and "zones_assumed" state. `since`/`until` (naive: UTC) bound the events and
    sessions kept. `language` is the server's lc_messages language when known ('ru', from
    vocabulary.translations.language_of_locale); else each file's is recognised from its text,
    and the summary's "languages" says what was read how. `jobs` > 1 parses blocks in that
    many processes; the result is the same.
    The summary counts everything. The events frame holds every event that can explain a lost
    session; of the session lines (connection received / authorized, disconnection) it keeps
    the latest state.SESSION_LINE_ROWS per event, and the sessions frame the latest
    state.SESSION_ROWS (what was left out: the summary's "frame_rows_left_out"). With
    `frames=False` both frames are empty and memory stays flat whatever the log's size (the
    summary is the same; "frame_rows_left_out" is null). Bad input raises PlaybookError with
    one sentence.
    """
    planned, detected, prefix, warnings = plan_files([Path(p) for p in paths], fmt, prefix, language)
    if engine.ENGINE.note:
        warnings.append(engine.ENGINE.note)
    spec = StderrSpec(prefix or "") if detected == "stderr" else None
    state = SessionState(as_utc(since), as_utc(until), frames)
    zones_assumed: dict[str, Any] = {}
    total = sum(p.size for p in planned)
    engine.say_if_slow(total)  # a large log without the compiled reader: its speed, once

    bar = _progress_bar() if progress else nullcontext()
    pool = None
    if jobs > 1:  # imported here: multiprocessing costs every other run a few tens of ms
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=jobs)
    # Millions of short-lived objects would make the cyclic GC scan again and again; nothing
    # here builds cycles, so it stays off while reading.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with bar as shown:
            task = shown.add_task("reading logs", total=total) if shown is not None else None
            done_before = 0
            for planned_file in planned:
                base = done_before

                def tick(position: int, base: int = base) -> None:
                    if shown is not None and task is not None:
                        shown.update(task, completed=base + position)

                zones_assumed[str(planned_file.path)] = _read_file(
                    planned_file, state, spec, log_tz, pool, jobs, tick, warnings
                )
                done_before += planned_file.size
                if state.past_until:
                    break
        state.finish()
    except (UnicodeDecodeError, ValueError, OSError) as exc:
        if isinstance(exc, PlaybookError):
            raise
        raise PlaybookError(f"{WHAT} could not be read: {str(exc).splitlines()[0][:200]}") from exc
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if gc_was_enabled:
            gc.enable()

    return _evidence(state, planned, detected, prefix, as_utc(since), as_utc(until), zones_assumed, warnings)


def _evidence(
    state: SessionState,
    planned: list[PlannedFile],
    detected: str,
    prefix: str | None,
    since_utc: np.datetime64 | None,
    until_utc: np.datetime64 | None,
    zones_assumed: dict[str, Any],
    warnings: list[str],
) -> ServerLogEvidence:
    """The evidence of a finished read: its frames (built now when kept), summary and warnings."""
    frames_built = _Frames(state)
    if state.frames:
        frames_built.get()  # now, while the chunks are all that is held (they are emptied as it goes)
    files = [str(p.path) for p in planned]
    dropped = state.events_dropped()
    if dropped or state.session_chunks.dropped:
        warnings.append(
            "the frames keep every event that can explain a lost session but only the latest "
            "session lines and sessions "
            f"({sum(dropped.values()) + state.session_chunks.dropped:,} older rows left out); "
            "the summary's counts include every line"
        )
    warnings = sorted(set(warnings))
    summary = summarise(
        state,
        files,
        detected,
        prefix,
        None if since_utc is None else iso(int(since_utc.astype("datetime64[ms]").astype("int64"))),
        None if until_utc is None else iso(int(until_utc.astype("datetime64[ms]").astype("int64"))),
        zones_assumed,
        warnings,
    )
    summary["languages"] = {str(p.path): p.language.describe() for p in planned}
    return ServerLogEvidence(
        frames=frames_built,
        summary=summary,
        bytes_read=state.bytes_read,
        lines=state.lines,
        files=files,
        format=detected,
        prefix=prefix if detected == "stderr" else None,
        warnings=warnings,
    )

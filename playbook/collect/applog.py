"""Application logs: what the client side saw when its PostgreSQL sessions went away.

The reader streams each file line by line (plain, gzip, bzip2 or xz, told by its magic bytes; any
encoding damage replaced) and recognises the wordings of the common client stacks: psycopg 3 /
psycopg_pool, psycopg2, SQLAlchemy, asyncpg, node-postgres, Prisma, HikariCP / pgJDBC and
PgBouncer. The words (wordings, Prisma's error codes, class names, stack marks) live in
playbook.vocabulary.drivers, each with its source; tests/test_applog.py holds one real line per
wording.

One failure usually spans several lines (a log message, a Python traceback with its chained
exceptions, a Java stack trace with its "Caused by:" and "... n more", Node's printed error with
its "    at" frames and `{ code: ... }` properties, Prisma's "Invalid `prisma.x()` invocation"
with the caller's source lines before its message, a libpq message continued on the next line),
so lines are grouped into records: a line with its own timestamp, or one that does not look like
a continuation, starts a record. The record carries its first line's time, and its kind is
matched on every line of it: a record gives at most one event, of its most specific kind, so a
traceback that repeats the driver's text under SQLAlchemy's wrapper is counted once. The
exception line that ends a traceback continues its record whatever the class is called: the
drivers' own hierarchies name many classes that do not end in Error (psycopg's AdminShutdown,
QueryCanceled, ProtocolViolation, ...). A failure whose record has no time (Prisma's own
`prisma:error` lines on a bare stdout, a traceback printed without a log line) is never an
event without a time: it is counted and listed as unplaced, with its file and line.

Time: a numeric offset or UTC/GMT/Z printed beside a time is exact. A naive time (Python
logging's default asctime, most Java and Node loggers) is read in the application's zone
(`app_tz`, by default the zone of the machine running the playbook), and the summary states
which zone was assumed and why. A zone abbreviation (CST, IST, ...) is read through that zone
when it is one the zone uses; any other is read in the zone too, with a warning, never silently
as UTC. Syslog lines carry no year: they take the file's (its modification time, in that zone).
Lines nobody recognises are skipped.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from playbook.errors import PlaybookError
from playbook.evidence.logfiles import LogFile
from playbook.evidence.vocab import STACKS, UNKNOWN_STACK
from playbook.evidence.zones import Zone, fixed_offset, machine_zone, to_utc
from playbook.vocabulary import drivers, translations

__all__ = ["COLUMNS", "KINDS", "KIND_IDS", "STACKS", "UNKNOWN", "AppLogEvidence", "read_app_logs"]

UNKNOWN = UNKNOWN_STACK

_STACK_PRECEDENCE = drivers.STACK_PRECEDENCE

COLUMNS = ["ts", "kind", "stack", "line_no", "file", "text"]
TEXT_MAX = 300
LINE_MAX = 1 << 20  # bytes kept of one line; the rest of a giant line is dropped
RECORD_MAX_LINES = 400
UNPLACED_LISTED = 50  # unplaced records listed in the summary (all are counted)
UNPLACED_NAMED = 5  # ... and named in the file's warning
STACK_LOOKBACK_LINES = 20

_F = re.IGNORECASE


@dataclass(frozen=True)
class _Kind:
    kind: str
    pattern: re.Pattern[str]
    stack: str | None = None  # a wording only this stack produces is stack evidence too


# The drivers' wordings (vocabulary.drivers.WORDINGS, most specific first), then Prisma's codes:
# a record's event takes the best-ranked kind matching any of its lines.
KINDS: tuple[_Kind, ...] = (
    *(_Kind(w.kind, re.compile(w.pattern, _F), w.stack) for w in drivers.WORDINGS),
    *(
        _Kind(c.kind, re.compile(drivers.PRISMA_CODE_FIELD.replace(r"(P[12]\d{3})", c.code), _F), "prisma")
        for c in drivers.PRISMA_CODES
        if c.kind is not None
    ),
    *(
        _Kind(kind, re.compile(drivers.SQLSTATE_FIELD.replace("<SQLSTATE>", code), _F))
        for code, kind in drivers.SQLSTATE_KINDS.items()
    ),
)
KIND_IDS = drivers.KIND_IDS
_KIND_RANK = {kind: i for i, kind in enumerate(KIND_IDS)}
# Most lines of an application log are about something else: a plain-literal search for the
# vocabulary's trigger words on the lower-cased line decides cheaply which deserve the patterns.
_TRIGGERS = re.compile(
    "|".join([*(re.escape(word) for word in drivers.TRIGGER_WORDS), *drivers.TRIGGER_PATTERNS])
)
_PGBOUNCER_LINE = re.compile(drivers.PGBOUNCER_LINE)
_STACK_TRIGGERS = re.compile(drivers.STACK_TRIGGERS)
_STACK_MARKS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (m.stack, re.compile(m.pattern)) for m in drivers.STACK_MARKS
)
_POOL_FIGURES = re.compile(drivers.PRISMA_POOL_FIGURES, _F)
_PRISMA_CONTEXT = re.compile(drivers.PRISMA_CONTEXT_LINE)
_PRISMA_INVOCATION = re.compile(drivers.PRISMA_INVOCATION_LINE)
_NODE_ERROR_HEAD = re.compile(drivers.NODE_ERROR_HEAD)
NODE_MESSAGE_MAX_LINES = 40  # a Node error's message lines before its first frame, at most
# Colours a TTY-attached logger left in the file (Prisma's kleur, Node's inspect, Spring's banner).
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# -- timestamps ----------------------------------------------------------------------------
# A time is read as its wall-clock reading and the zone printed beside it, if any (`_Stamp`);
# each file's stamps are turned into UTC together once the file is read (`_resolve`), through
# zones.to_utc, so every reader of the playbook places a zone name the same way.
_Stamp = tuple[datetime, str | None]  # (naive wall-clock time, zone text printed with it)
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_HEAD = 80  # a line's timestamp sits in its first characters, after a bracket or a container name
_ISO = re.compile(
    r"(?<!\d)(\d{4})[-/](\d\d)[-/](\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
    # "+08" only when it touches the time: "12:00:00 -10 items" is not a zone
    r"(?:(?<=\d)([+-]\d\d)(?![:\d])|\s?(Z|[+-]\d\d:?\d\d|[A-Z]{2,5})(?![A-Za-z]))?"
)
_LOG4J_DATE = re.compile(
    r"(?<!\d)(\d\d) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d\d):(\d\d):(\d\d)"
    r"(?:[.,](\d{1,9}))?"
)
_JUL = re.compile(
    r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{1,2}), (\d{4}) (\d{1,2}):(\d\d):(\d\d) ([AP]M)\b"
)
_SYSLOG = re.compile(
    r"^(?:<\d+>)?(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)\b"
)
_JSON_TIME_KEYS = ("time", "timestamp", "ts", "@timestamp", "asctime", "date", "datetime")


@cache
def _world_abbreviations() -> frozenset[str]:
    """Every alphabetic zone abbreviation tzdata prints today, to tell "CST" from "ERROR" or "GET".

    Only decides whether a word after a time is a zone at all (so a foreign one is reported);
    what it means is always read through the application's zone. Built once, when a word that
    is not the application zone's own turns up (about 0.1 s).
    """
    from zoneinfo import ZoneInfo, available_timezones

    moments = [datetime(y, m, 15, 12, tzinfo=timezone.utc) for y in (2015, 2025) for m in (1, 7)]
    names: set[str] = set()
    for key in available_timezones():
        try:
            tz = ZoneInfo(key)
        except (OSError, ValueError):
            continue
        for moment in moments:
            name = moment.astimezone(tz).tzname()
            if name and name.isalpha() and name.isupper():
                names.add(name)
    return frozenset(names)


def _zone_abbreviations(zone: Zone) -> frozenset[str]:
    """The abbreviations `zone` itself prints, in standard and in summer time, now and lately."""
    names: set[str] = set()
    for year in (2015, 2020, datetime.now(timezone.utc).year):
        for month in range(1, 13):
            name = datetime(year, month, 15, 12, tzinfo=timezone.utc).astimezone(zone.tz).tzname()
            if name:
                names.add(name)
    return frozenset(names)


class _Clock:
    """Reads the time at the head of a line as a `_Stamp`, in one application zone."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self._own = _zone_abbreviations(zone)
        self._is_zone: dict[str, bool] = {}

    def zone_word(self, word: str | None) -> str | None:
        """`word` when it names a zone (an offset, UTC, an abbreviation), else None."""
        if not word:
            return None
        known = self._is_zone.get(word)
        if known is None:
            known = fixed_offset(word) is not None or word in self._own or word in _world_abbreviations()
            self._is_zone[word] = known
        return word if known else None

    def text(self, text: str, default_year: int | None = None) -> _Stamp | None:
        """The timestamp at the head of a text line, or None."""
        head = text[:_HEAD]
        if m := _ISO.search(head):
            y, mo, d, hh, mi, ss, frac, attached, word = m.groups()
            return _stamp(
                int(y), int(mo), int(d), int(hh), int(mi), int(ss), frac, attached or self.zone_word(word)
            )
        if m := _LOG4J_DATE.search(head):
            d, mon, y, hh, mi, ss, frac = m.groups()
            return _stamp(int(y), _MONTHS[mon], int(d), int(hh), int(mi), int(ss), frac, None)
        if m := _JUL.match(head):
            mon, d, y, hh, mi, ss, ampm = m.groups()
            hour = int(hh) % 12 + (12 if ampm == "PM" else 0)
            return _stamp(int(y), _MONTHS[mon], int(d), hour, int(mi), int(ss), None, None)
        if default_year is not None and (m := _SYSLOG.match(head)):
            mon, d, hh, mi, ss = m.groups()
            return _stamp(default_year, _MONTHS[mon], int(d), int(hh), int(mi), int(ss), None, None)
        return None

    def json_value(self, value: object) -> _Stamp | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            seconds = float(value)
            # epoch seconds, or ms/µs/ns told apart by magnitude (today is about 1.7e9 s)
            if abs(seconds) >= 1e17:
                seconds /= 1e9
            elif abs(seconds) >= 1e14:
                seconds /= 1e6
            elif abs(seconds) >= 1e11:
                seconds /= 1e3
            try:  # an epoch is exact: UTC
                return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None), "UTC"
            except (OverflowError, OSError, ValueError):
                return None
        if isinstance(value, str):
            return self.text(value)
        return None

    def line(self, text: str, syslog_year: int | None) -> _Stamp | None:
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                for key in _JSON_TIME_KEYS:
                    if key in obj and (ts := self.json_value(obj[key])) is not None:
                        return ts
                return None
        return self.text(text, syslog_year)


def _stamp(
    year: int, month: int, day: int, hh: int, mm: int, ss: int, frac: str | None, zone: str | None
) -> _Stamp | None:
    try:
        wall = datetime(year, month, day, hh, mm, ss, int((frac or "0")[:6].ljust(6, "0")))
    except ValueError:
        return None
    return wall, zone


def _resolve(stamps: Sequence[_Stamp | None], zone: Zone, warnings: list[str], what: str) -> list[Any]:
    """UTC pd.Timestamps (None where there was no time) for one file's stamps.

    An offset or UTC printed with the time is exact; a naive time or an abbreviation goes
    through zones.to_utc in `zone`, which warns about an abbreviation the zone never uses.
    to_utc works in milliseconds: the microseconds below are added back, as offsets are whole
    minutes they do not change.
    """
    out: list[Any] = [None] * len(stamps)
    naive: list[tuple[int, datetime]] = []
    named: list[tuple[int, datetime]] = []
    names: list[str] = []
    for i, stamp in enumerate(stamps):
        if stamp is None:
            continue
        wall, word = stamp
        if word is None:
            naive.append((i, wall))
        elif (offset := fixed_offset(word)) is not None:
            out[i] = pd.Timestamp(wall - offset, tz="UTC")
        else:
            named.append((i, wall))
            names.append(word)
    for rows, abbreviations in ((naive, None), (named, names)):
        if not rows:
            continue
        sub_ms = [wall.microsecond % 1000 for _, wall in rows]
        values = np.array(
            [wall - timedelta(microseconds=us) for (_, wall), us in zip(rows, sub_ms, strict=True)],
            dtype="datetime64[ms]",
        )
        utc = to_utc(values, abbreviations, zone, warnings, what)
        for (i, _), value, us in zip(rows, utc, sub_ms, strict=True):
            out[i] = pd.Timestamp(value).tz_localize("UTC") + pd.Timedelta(microseconds=us)
    return out


# -- records -------------------------------------------------------------------------------
_TRACEBACK_MARKS = drivers.TRACEBACK_MARKS
_ALWAYS_CONTINUES = drivers.ALWAYS_CONTINUES
_LIBPQ_SECOND_LINES = drivers.LIBPQ_SECOND_LINES
_PY_FRAME = re.compile(r'^\s+File "[^"]*", line \d+')
# The line that names an exception continues its record (the end of a traceback, or the driver's
# error relayed under a log line): a class name ending in Error/Exception/Warning, or one of the
# drivers' own classes named otherwise (vocabulary.drivers.DRIVER_CLASS_NAMES).
_DRIVER_CLASS_NAMES = drivers.DRIVER_CLASS_NAMES
_EXCEPTION_HEAD = re.compile(r"^(?:[A-Za-z_$][\w$]*\.)*(?P<name>[A-Za-z_$][\w$]*)(?::\s|:?$)")
_EXCEPTION_SUFFIX = re.compile(r"(?:Error|Exception|Warning)_?$")
_NODE_DATABASE_ERROR = drivers.NODE_DATABASE_ERROR
# asyncpg lets asyncio's TimeoutError through from pool.acquire(timeout=...), from connect() and
# from a query's timeout: which one it was shows only in the traceback's last asyncpg frame.
_TIMEOUT_ERROR = re.compile(
    r"^(?:builtins\.|asyncio\.(?:exceptions\.)?|concurrent\.futures\.(?:_base\.)?)?TimeoutError\b"
)
_ASYNCPG_FRAME = re.compile(r'asyncpg[/\\](\w+(?:[/\\]\w+)?)\.(?:py|pyx)", line \d+, in (\w+)')
_ASYNCPG_TIMEOUTS = {
    "pool": _Kind("pool_timeout", re.compile("TimeoutError"), "asyncpg"),
    "connect": _Kind("connect_timeout", re.compile("TimeoutError"), "asyncpg"),
    "query": _Kind("client_query_timeout", re.compile("TimeoutError"), "asyncpg"),
}


def _asyncpg_site(module: str, function: str) -> str | None:
    """What an asyncpg frame was doing, when a TimeoutError raised under it says which timeout."""
    module = module.replace("\\", "/")
    if module == "pool" and ("acquire" in function or function == "__aenter__"):
        return "pool"
    if module in ("connect_utils", "cluster") or function in ("connect", "_connect", "_get_new_connection"):
        return "connect"
    if module.startswith("protocol"):
        return "query"
    return None  # a compat wrapper (wait_for) or a pool method that went on to a deeper frame


def _is_exception_head(text: str) -> bool:
    m = _EXCEPTION_HEAD.match(text)
    if m is None:
        return False
    name = m.group("name")
    if "." not in text[: m.end("name")] and text[m.end("name") :][:1] != ":":
        return False  # a bare word on its own line is not an exception without a module or message
    return bool(_EXCEPTION_SUFFIX.search(name)) or name in _DRIVER_CLASS_NAMES


@dataclass
class _Record:
    file: str
    ts: _Stamp | None
    nlines: int = 0
    traceback: bool = False
    awaits_exception: bool = False  # inside a Python traceback: its first unindented line is the exception
    last_matched: bool = False
    last_libpq_second: bool = False
    awaits_message: bool = False  # Prisma puts its message after "Invalid `prisma.x()` invocation:"
    message_lines: int = -1  # lines since a Node error's head, until its first frame (-1: none open)
    after_frame: bool = False  # the line after a Python frame header is source code, not a message
    asyncpg_site: str | None = None  # what the latest asyncpg frame of this traceback was doing
    pool_figures: str | None = None  # what Prisma's P2024 says of its pool, wherever in the record
    stacks: set[str] = field(default_factory=set)
    best: tuple[int, str, int, str] | None = None  # (rank, kind, line_no, text)

    def continues_with(self, text: str) -> bool:
        if self.nlines >= RECORD_MAX_LINES:
            return False
        if not text.strip() or text[0] in " \t" or self.awaits_message:
            return True
        if 0 <= self.message_lines < NODE_MESSAGE_MAX_LINES and self.ts is not None:
            return True  # a dated Node error's message runs on until its "    at" frames
        if text.startswith(_ALWAYS_CONTINUES) or ("invocation" in text and _PRISMA_INVOCATION.search(text)):
            return True
        if self.awaits_exception:
            return True  # whatever the class is called (TimeoutError alone, a library's own name)
        if text.startswith(_LIBPQ_SECOND_LINES):
            return self.last_matched and not self.last_libpq_second
        if _is_exception_head(text) or text.startswith(_NODE_DATABASE_ERROR) or text.rstrip() == "}":
            # under a dated line or in a traceback: the error it logged, or the end of Node's
            # inspected error object; in an undated log such a line is a failure of its own
            return self.ts is not None or self.traceback
        return False

    def add(self, line_no: int, text: str, kinds: list[_Kind]) -> bool:
        """Take one line; True when it was recognised as a failure."""
        self.nlines += 1
        indented = text[:1] in (" ", "\t")
        if self.after_frame and indented:
            kinds = []  # `raise PoolTimeout(` in a traceback is code, the message comes later
        if text.startswith(_TRACEBACK_MARKS):
            self.traceback = True
            if text.startswith("Traceback"):
                self.awaits_exception = True
                self.asyncpg_site = None  # each chained traceback is read on its own
        elif self.awaits_exception and text.strip() and not indented:
            self.awaits_exception = False
            if self.asyncpg_site and _TIMEOUT_ERROR.match(text):
                kinds = [*kinds, _ASYNCPG_TIMEOUTS[self.asyncpg_site]]
        if _PGBOUNCER_LINE.match(text):
            self.stacks.add("pgbouncer")
        elif _STACK_TRIGGERS.search(text.lower()):
            for stack, mark in _STACK_MARKS:
                if stack not in self.stacks and mark.search(text):
                    self.stacks.add(stack)
        self.after_frame = bool(_PY_FRAME.match(text))
        if self.after_frame and (frame := _ASYNCPG_FRAME.search(text)):
            self.asyncpg_site = _asyncpg_site(*frame.groups()) or self.asyncpg_site
        for k in kinds:
            if k.stack:
                self.stacks.add(k.stack)
            rank = _KIND_RANK[k.kind]
            if self.best is None or rank < self.best[0]:
                self.best = (rank, k.kind, line_no, text.strip()[:TEXT_MAX])
        self.last_matched = bool(kinds)
        self.last_libpq_second = text.startswith(_LIBPQ_SECOND_LINES)
        if "invocation" in text and _PRISMA_INVOCATION.search(text):
            self.awaits_message = True
        elif self.awaits_message and _PRISMA_CONTEXT.match(text):
            pass  # the caller's file:line and numbered source lines come before Prisma's message
        elif text.strip():
            self.awaits_message = False
        if indented and text.lstrip().startswith("at ") or text.rstrip() == "}":
            self.message_lines = -1  # its frames (or the end of its properties) have come
        elif self.message_lines >= 0:
            self.message_lines += 1
        elif not indented and not self.traceback and "Error" in text and _NODE_ERROR_HEAD.search(text):
            self.message_lines = 0
        if self.pool_figures is None and (m := _POOL_FIGURES.search(text)):
            self.pool_figures = f"connection pool timeout: {m.group(1)} s, connection limit: {m.group(2)}"
        return bool(kinds)

    def stack(self) -> str | None:
        for stack in _STACK_PRECEDENCE:
            if stack in self.stacks:
                return stack
        return None


# -- reading -------------------------------------------------------------------------------
def _lines(path: Path, warnings: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; invalid UTF-8 is replaced, giant lines are cut.

    A compressed file that breaks off after some lines (a rotated log copied while it was being
    written, a download cut short) keeps what was read and says so in `warnings`; one that
    gives no line at all is a PlaybookError, like a missing or unreadable file.
    """
    with LogFile(path, "app log") as f:
        line_no = 0
        try:
            while True:
                chunk = f.readline(LINE_MAX)
                if not chunk:
                    break
                line_no += 1
                if not chunk.endswith(b"\n"):
                    # drop the rest of an overlong line, but keep counting lines right
                    while (rest := f.readline(LINE_MAX)) and not rest.endswith(b"\n"):
                        pass
                yield line_no, chunk.decode("utf-8", errors="replace").rstrip("\r\n")
        except PlaybookError as exc:
            if line_no == 0 or not f.compression:
                raise
            if isinstance(exc.__cause__, EOFError):
                warnings.append(f"{f.label} is truncated after line {line_no}; the rest was not read")
            else:
                warnings.append(
                    f"{f.label} is damaged after line {line_no} ({exc.__cause__}); the rest was not read"
                )


@dataclass
class AppLogEvidence:
    """What the application logs say: one row per failure, and the client stack behind them.

    `events` has COLUMNS: ts (UTC, never NaT), kind (KIND_IDS), stack (STACKS or "unknown"),
    line_no and file of the line that named the kind, text (that line, at most TEXT_MAX
    characters; a Prisma P2024 record's pool timeout and connection limit are in it). A failure
    whose record has no time of its own is not an event: it is in `unplaced` (file, line_no,
    kind, stack, text), counted and listed in the summary's "unplaced" and named in `warnings`.
    `zone` is the zone naive times were read in; `warnings` holds what the reader could not
    place or read (an unplaced failure, a foreign zone abbreviation, a truncated file).
    """

    events: pd.DataFrame
    stacks: dict[str, int]
    primary_stack: str
    summary: dict[str, Any]
    lines_read: int
    lines_matched: int
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    zone: Zone | None = None
    unplaced: list[dict[str, Any]] = field(default_factory=list)


def read_app_logs(paths: Sequence[str | Path] | str | Path, app_tz: Zone | None = None) -> AppLogEvidence:
    """Read application logs and recognise the session failures each client stack reports.

    Naive times, and times printed with a zone abbreviation, are read in `app_tz` (`--app-tz`);
    without it, in the zone of the machine running the playbook (zones.machine_zone()). The
    summary's "zone" says which zone was assumed and where it came from, and how many times were
    read in it. Raise PlaybookError (one sentence) for a path that is missing, a directory,
    unreadable or not valid for the compression it claims; a file with nothing recognised
    gives no events.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    zone = app_tz or machine_zone()
    clock = _Clock(zone)
    readers = [_FileReader(Path(p), clock) for p in paths]
    warnings: list[str] = []
    rows: list[dict[str, Any]] = []
    stack_counts: Counter[str] = Counter()
    unplaced: list[dict[str, Any]] = []
    for reader in readers:
        reader.read(warnings)
        rows.extend(reader.rows)
        unplaced.extend(reader.unplaced)
        stack_counts.update(reader.stack_counts)
        if reader.unplaced:
            warnings.append(_unplaced_warning(reader.path, reader.unplaced))
    lines_read = sum(r.lines_read for r in readers)
    lines_matched = sum(r.lines_matched for r in readers)
    files = [str(r.path) for r in readers]

    events = _frame(rows)
    stacks = dict(sorted(stack_counts.items(), key=lambda kv: (-kv[1], _STACK_PRECEDENCE.index(kv[0]))))
    primary = _primary_stack(stacks)
    summary = _summary(events, stacks, primary, files, lines_read, lines_matched, warnings)
    summary["undated_events"] = len(unplaced)
    summary["unplaced"] = {
        "count": len(unplaced),
        "kinds": dict(Counter(str(u["kind"]) for u in unplaced).most_common()),
        "records": [
            {
                "file": u["file"],
                "line_no": int(u["line_no"]),
                "kind": u["kind"],
                "stack": u["stack"],
                "text": u["text"],
            }
            for u in unplaced[:UNPLACED_LISTED]
        ],
    }
    summary["zone"] = {
        "name": zone.name,
        "source": zone.source,
        "description": zone.describe(),
        "times_read_in_zone": sum(r.zone_times for r in readers),
    }
    return AppLogEvidence(
        events=events,
        stacks=stacks,
        primary_stack=primary,
        summary=summary,
        lines_read=lines_read,
        lines_matched=lines_matched,
        files=files,
        warnings=warnings,
        zone=zone,
        unplaced=unplaced,
    )


def _unplaced_warning(path: Path, unplaced: list[dict[str, Any]]) -> str:
    """One sentence for a file's failures that carry no time: how many, where, and the remedy."""
    where = ", ".join(f"{u['kind']} at line {u['line_no']}" for u in unplaced[:UNPLACED_NAMED])
    more = f" and {len(unplaced) - UNPLACED_NAMED} more" if len(unplaced) > UNPLACED_NAMED else ""
    return (
        f"app log {path}: {len(unplaced)} failure record(s) carry no time and are left off the timeline "
        f"(unplaced): {where}{more}; log with a timestamp on each record's first line to place them"
    )


# A line in Latin letters may still relay a translated message (German, French, Spanish... are
# ASCII often enough): searched only when it says it reports an error.
_ERROR_WORDS = ("error", "fatal", "exception", "fehler", "erreur", "errore", "panic", "warn")


class _TranslatedWordings:
    """The server's messages in other languages, found inside an application's lines.

    A line is searched in the languages already found in this file first; the others are tried
    on a bounded number of lines (~0.1 ms each for all 16), so that a log that is simply written
    in another language costs little once it has said which one."""

    FULL_SEARCHES = 2000

    def __init__(self) -> None:
        self.found: list[str] = []
        self.searches_left = self.FULL_SEARCHES

    def find(self, text: str) -> str | None:
        for code in self.found:
            english = translations.language(code).find_english(text)
            if english is not None:
                return english
        if self.searches_left <= 0:
            return None
        self.searches_left -= 1
        for code in translations.languages():
            if code in self.found:
                continue
            english = translations.language(code).find_english(text)
            if english is not None:
                self.found.append(code)
                return english
        return None


class _FileReader:
    """One file's records turned into events."""

    def __init__(self, path: Path, clock: _Clock) -> None:
        self.path = path
        self.clock = clock
        self.rows: list[dict[str, Any]] = []
        self.stack_counts: Counter[str] = Counter()
        self.lines_read = 0
        self.lines_matched = 0
        self.unplaced: list[dict[str, Any]] = []  # failures with no time of their own
        self.zone_times = 0  # event times read through the application zone (naive or abbreviated)
        self._recent_stack: tuple[int, str] | None = None  # (line_no, stack) of the latest evidence
        self._syslog: tuple[int, datetime] | None = (
            None  # (year, mtime as wall clock) once a syslog line shows
        )
        self._translated = _TranslatedWordings()

    def read(self, warnings: list[str]) -> None:
        record: _Record | None = None
        for line_no, text in _lines(self.path, warnings):
            self.lines_read += 1
            if "\x1b" in text:
                text = _ANSI.sub("", text)
            ts = self._ts(text)
            lower = text.lower()
            kinds = [k for k in KINDS if k.pattern.search(text)] if _TRIGGERS.search(lower) else []
            maybe_translated = not text.isascii() or any(word in lower for word in _ERROR_WORDS)
            if not kinds and maybe_translated and (english := self._translated.find(text)):
                # the server's message relayed in its lc_messages (psycopg2, pgJDBC, node-postgres
                # print it as the server wrote it): read through PostgreSQL's own translation
                kinds = [k for k in KINDS if k.pattern.search(english)]
            if record is None or ts is not None or not record.continues_with(text):
                self._flush(record)
                record = _Record(file=str(self.path), ts=ts)
            if record.add(line_no, text, kinds):
                self.lines_matched += 1
            if record.best is None and (stack := record.stack()):
                self._recent_stack = (line_no, stack)
        self._flush(record)
        stamps = [row.pop("stamp") for row in self.rows]
        self.zone_times = sum(1 for st in stamps if st is not None and fixed_offset(st[1] or "") is None)
        placed: list[dict[str, Any]] = []
        for row, ts in zip(
            self.rows, _resolve(stamps, self.clock.zone, warnings, f"app log {self.path}"), strict=True
        ):
            if ts is None or pd.isna(ts):
                self.unplaced.append(row)  # a wall-clock time no zone can place
            else:
                row["ts"] = ts
                placed.append(row)
        self.rows = placed
        self.unplaced.sort(key=lambda row: int(row["line_no"]))

    def _ts(self, text: str) -> _Stamp | None:
        if self._syslog is None and _SYSLOG.match(text):
            # the year of the file's last write, on the application's wall clock
            mtime = datetime.fromtimestamp(self.path.stat().st_mtime, tz=self.clock.zone.tz).replace(
                tzinfo=None
            )
            self._syslog = (mtime.year, mtime)
        stamp = self.clock.line(text, self._syslog[0] if self._syslog else None)
        if (
            stamp is not None
            and self._syslog
            and _SYSLOG.match(text)
            and stamp[0] > self._syslog[1] + timedelta(days=1)
        ):
            # syslog has no year: a December line in a January file
            stamp = (stamp[0].replace(year=stamp[0].year - 1), stamp[1])
        return stamp

    def _flush(self, rec: _Record | None) -> None:
        if rec is None:
            return
        stack = rec.stack()
        if stack:
            self.stack_counts[stack] += 1
        if rec.best is None:
            return
        _, kind, line_no, text = rec.best
        recent = self._recent_stack
        if stack is None and recent and line_no - recent[0] <= STACK_LOOKBACK_LINES:
            stack = recent[1]  # e.g. a bare FATAL text logged between the stack's own lines
        if stack:
            self._recent_stack = (line_no, stack)
        if rec.pool_figures and "connection limit" not in text.lower():
            text = f"{text[: TEXT_MAX - len(rec.pool_figures) - 3]} ({rec.pool_figures})"
        row = {"stamp": rec.ts, "kind": kind, "stack": stack or UNKNOWN, "line_no": line_no, "file": rec.file}
        if rec.ts is None:
            # Never a row without a time (NaT breaks every time axis and window): counted and
            # listed instead, with its file and line, in the summary and the warnings.
            self.unplaced.append({k: v for k, v in row.items() if k != "stamp"} | {"text": text})
            return
        if self.rows and rec.ts is not None and row["stack"] == "pgbouncer":
            # one failure logged twice in a row with the same timestamp (PgBouncer's
            # "closing because: X" then "pooler error: X") is one event; an application's burst of
            # failures in one millisecond (a pool timing out its waiters) is as many events
            prev = self.rows[-1]
            same = all(prev[c] == row[c] for c in ("stamp", "kind", "stack"))
            if same and line_no - prev["line_no"] <= 3:
                return
        row["text"] = text
        self.rows.append(row)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["line_no"] = frame["line_no"].astype("int64")
    for col in ("kind", "stack", "file", "text"):
        frame[col] = frame[col].astype(object)
    return frame


def _primary_stack(stacks: dict[str, int]) -> str:
    """The application's own stack: PgBouncer sits in front of one, so it wins only alone."""
    app = {s: n for s, n in stacks.items() if s != "pgbouncer"}
    pool = app or stacks
    if not pool:
        return UNKNOWN
    return min(pool, key=lambda s: (-pool[s], _STACK_PRECEDENCE.index(s)))


def _iso(ts: Any) -> str | None:
    return None if ts is None or pd.isna(ts) else pd.Timestamp(ts).isoformat()


def _summary(
    events: pd.DataFrame,
    stacks: dict[str, int],
    primary: str,
    files: list[str],
    lines_read: int,
    lines_matched: int,
    warnings: list[str],
) -> dict[str, Any]:
    dated = events.dropna(subset=["ts"])
    by_kind: dict[str, Any] = {}
    timeline: dict[str, list[dict[str, Any]]] = {}
    for kind, group in events.groupby("kind", sort=False):
        g_dated = group.dropna(subset=["ts"])
        by_kind[str(kind)] = {
            "count": int(len(group)),
            "first_seen": _iso(g_dated["ts"].min()) if len(g_dated) else None,
            "last_seen": _iso(g_dated["ts"].max()) if len(g_dated) else None,
            "stacks": {str(s): int(n) for s, n in group["stack"].value_counts().items()},
        }
        if len(g_dated):
            per_minute = g_dated["ts"].dt.floor("min").value_counts().sort_index()
            timeline[str(kind)] = [{"minute": _iso(m), "count": int(n)} for m, n in per_minute.items()]
    order = sorted(by_kind, key=lambda k: (-by_kind[k]["count"], _KIND_RANK.get(k, 999)))
    return {
        "files": files,
        "lines_read": lines_read,
        "lines_matched": lines_matched,
        "events": int(len(events)),
        "undated_events": int(len(events) - len(dated)),
        "kinds": {k: by_kind[k]["count"] for k in order},
        "stacks": dict(stacks),
        "event_stacks": {str(s): int(n) for s, n in events["stack"].value_counts().items()},
        "primary_stack": primary,
        "first_seen": _iso(dated["ts"].min()) if len(dated) else None,
        "last_seen": _iso(dated["ts"].max()) if len(dated) else None,
        "by_kind": {k: by_kind[k] for k in order},
        "timeline": timeline,
        "warnings": list(warnings),
    }

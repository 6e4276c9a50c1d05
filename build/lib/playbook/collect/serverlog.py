"""Readers for PostgreSQL server logs: stderr (any log_line_prefix), csvlog and jsonlog.

The reader streams each file in large blocks and keeps only the lines that explain sessions:
the classified events of `log_events` and the session lines of log_connections /
log_disconnections. For stderr, one compiled regular expression built from the
log_line_prefix splits a whole block into entries in C; Python then only touches the
entries' first bytes to sort session lines from the rest, and parses the session lines of a
block together. Plain, gzip, bzip2 and xz files are read the same way; several files are
read in time order, so a rotated set can be passed in any order.
"""

from __future__ import annotations

import bz2
import csv
import gc
import gzip
import io
import json
import lzma
import math
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from playbook.collect import log_events
from playbook.errors import PlaybookError

BLOCK_SIZE = 8 << 20  # big enough that per-block overhead vanishes, small enough to stay flat
SAMPLE_SIZE = 256 << 10  # what format and prefix detection look at
FORMATS = ("auto", "stderr", "csvlog", "jsonlog")

EVENT_COLUMNS = [
    "ts",
    "event",
    "category",
    "level",
    "sqlstate",
    "user",
    "database",
    "application",
    "host",
    "pid",
    "message",
    "detail",
]
SESSION_COLUMNS = ["pid", "start", "end", "duration_s", "user", "database", "host", "application", "ended_by"]

# Prefixes tried, most specific first, when the caller does not give one.
COMMON_PREFIXES = (
    "%m [%p] %q%u@%d ",  # Debian / Ubuntu
    "%t [%p-%l] %q%u@%d ",  # Debian before 10
    "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ",  # pgBadger's recommendation
    "%m [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ",
    "%t [%p]: user=%u,db=%d,app=%a,client=%h ",
    "%m [%p] %q[user=%u,db=%d,app=%a] ",
    "%t:%r:%u@%d:[%p]:",  # Amazon RDS
    "%m:%r:%u@%d:[%p]:",
    "%m [%p] ",  # PostgreSQL's own default since 10
    "%t [%p] ",
    "%m ",
    "%t ",
)


@dataclass
class ServerLogEvidence:
    """What the server logs say about sessions; `summary` is JSON-serialisable."""

    events: pd.DataFrame
    sessions: pd.DataFrame
    summary: dict[str, Any]
    bytes_read: int
    lines: int
    files: list[str]
    format: str
    prefix: str | None = None
    warnings: list[str] = field(default_factory=list)


# -- log_line_prefix -> regular expression ------------------------------------------------------

_TS = rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) ([A-Za-z0-9+:\-]+)"
_TS_NOCAP = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? [A-Za-z0-9+:\-]+"
_TEXT = rb"[^\n]*?"

# escape -> (field name or None when not kept, regex, number of groups it captures)
_ESCAPES: dict[str, tuple[str | None, bytes]] = {
    "a": ("application", _TEXT),
    "u": ("user", _TEXT),
    "d": ("database", _TEXT),
    "r": ("host_port", rb"[^\s]*?"),
    "h": ("host", rb"[^\s]*?"),
    "L": (None, rb"[^\s]*?"),
    "b": (None, _TEXT),
    "p": ("pid", rb"\d+"),
    "P": (None, rb"\d*"),
    "t": ("ts", _TS),
    "m": ("ts", _TS),
    "n": ("epoch", rb"\d+(?:\.\d+)?"),
    "i": (None, _TEXT),
    "e": ("sqlstate", rb"[0-9A-Z]{5}"),
    "c": ("session_id", rb"[0-9a-f]+\.[0-9a-f]+"),
    "l": (None, rb"\d+"),
    "s": (None, _TS_NOCAP),
    "v": (None, rb"[^\s]*?"),
    "x": (None, rb"\d*"),
    "Q": (None, rb"-?\d*"),
}

_LEVEL_AND_MESSAGE = rb"([A-Z]+[0-9]?):  ([^\n]*(?:\n\t[^\n]*)*)"
_LEVEL_AND_LINE = rb"([A-Z]+[0-9]?):  ([^\n]*)"  # for blocks without continuation lines: faster


@dataclass
class _PrefixRegex:
    prefix: str
    regex: re.Pattern[bytes]
    fields: list[str]  # the name of each captured group, in order
    single_line: re.Pattern[bytes] | None = None  # the same, for blocks without tab-continued lines


def compile_prefix(prefix: str) -> _PrefixRegex:
    """The regex matching one stderr log line (from its leading newline) for `prefix`."""
    parts: list[bytes] = []
    fields: list[str] = []
    optional_from: int | None = None
    i = 0
    literal = bytearray()

    def flush() -> None:
        if literal:
            parts.append(re.escape(bytes(literal)))
            literal.clear()

    while i < len(prefix):
        ch = prefix[i]
        if ch != "%" or i + 1 >= len(prefix):
            literal.extend(ch.encode())
            i += 1
            continue
        j = i + 1
        padding = re.match(r"-?\d+", prefix[j:])
        if padding:
            j += padding.end()
        if j >= len(prefix):
            literal.extend(prefix[i:].encode())
            break
        esc = prefix[j]
        i = j + 1
        if esc == "%":
            literal.extend(b"%")
            continue
        flush()
        if esc == "q":
            optional_from = len(parts)
            continue
        if esc not in _ESCAPES:
            raise PlaybookError(f"the log_line_prefix {prefix!r} has an unknown escape %{esc}")
        name, pattern = _ESCAPES[esc]
        if name is None or name in fields or (name == "ts" and "epoch" in fields):
            # A second occurrence, or a field we do not keep: match it without capturing.
            pattern = re.sub(rb"\((?!\?)", b"(?:", pattern)
            parts.append(b" *" + pattern + b" *" if padding else pattern)
            continue
        if name != "ts":
            pattern = b"(" + pattern + b")"
        parts.append(b" *" + pattern + b" *" if padding else pattern)
        fields.append(name)
        if name == "ts":
            fields.append("tz")
    flush()
    if optional_from is not None:
        # After %q, non-session processes print nothing: the rest of the prefix is optional.
        parts[optional_from:] = [b"(?:" + b"".join(parts[optional_from:]) + b")?"]
    regex = re.compile(b"\n" + b"".join(parts) + _LEVEL_AND_MESSAGE)
    single = re.compile(b"\n" + b"".join(parts) + _LEVEL_AND_LINE)
    return _PrefixRegex(prefix, regex, [*fields, "level", "message"], single)


# -- time --------------------------------------------------------------------------------------

_TZ_ABBREV_HOURS = {
    "UTC": 0.0, "GMT": 0.0, "Z": 0.0, "UCT": 0.0, "WET": 0.0, "WEST": 1.0, "BST": 1.0, "IST": 5.5,
    "CET": 1.0, "CEST": 2.0, "MET": 1.0, "MEST": 2.0, "EET": 2.0, "EEST": 3.0, "MSK": 3.0,
    "EST": -5.0, "EDT": -4.0, "CST": -6.0, "CDT": -5.0, "MST": -7.0, "MDT": -6.0,
    "PST": -8.0, "PDT": -7.0, "AKST": -9.0, "AKDT": -8.0, "HST": -10.0,
    "JST": 9.0, "KST": 9.0, "SGT": 8.0, "HKT": 8.0, "AWST": 8.0, "ACST": 9.5, "ACDT": 10.5,
    "AEST": 10.0, "AEDT": 11.0, "NZST": 12.0, "NZDT": 13.0, "SAST": 2.0, "BRT": -3.0,
}  # fmt: skip
_TZ_NUMERIC_RE = re.compile(r"([+-])(\d\d):?(\d\d)?$")


def _tz_offset_ms(name: str) -> int | None:
    """The UTC offset of a %Z zone name in milliseconds, or None when unknown."""
    hours = _TZ_ABBREV_HOURS.get(name.upper())
    if hours is not None:
        return int(hours * 3_600_000)
    match = _TZ_NUMERIC_RE.match(name)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        return sign * (int(match.group(2)) * 3_600_000 + int(match.group(3) or 0) * 60_000)
    return None


def _to_utc(
    stamps: Sequence[bytes | str], zones: Sequence[bytes | str] | None, warnings: list[str]
) -> np.ndarray:
    """datetime64[ms] UTC from 'YYYY-MM-DD HH:MM:SS[.fff]' stamps and their zone names."""
    if not stamps:
        return np.array([], dtype="datetime64[ms]")
    try:
        values = np.array(stamps).astype("datetime64[ms]")
    except ValueError:
        values = pd.to_datetime(pd.Series([_text(s) for s in stamps]), errors="coerce").to_numpy(
            dtype="datetime64[ms]"
        )
    if zones is None:
        return values
    distinct = set(zones)
    offsets: dict[bytes | str, int] = {}
    for zone in distinct:
        offset = _tz_offset_ms(_text(zone))
        if offset is None:
            warnings.append(f"unknown time zone {_text(zone)!r} in the log: read as UTC")
            offset = 0
        offsets[zone] = offset
    if len(distinct) == 1:
        (only,) = distinct
        return values - np.timedelta64(offsets[only], "ms")
    shift = np.array([offsets[z] for z in zones], dtype="timedelta64[ms]")
    return values - shift


def _epoch_to_utc(values: Sequence[bytes | str]) -> np.ndarray:
    seconds = np.array(values).astype(np.float64)
    return (seconds * 1000).astype("int64").astype("datetime64[ms]")


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _as_utc(moment: datetime | None) -> np.datetime64 | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return np.datetime64(moment.astimezone(timezone.utc).replace(tzinfo=None), "ms")


# -- opening files -----------------------------------------------------------------------------


class _Source:
    """One log file opened for streaming, decompressing by its magic bytes, not its name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise PlaybookError(f"server log {path} does not exist")
        if path.is_dir():
            raise PlaybookError(f"server log {path} is a directory; pass the log files in it")
        try:
            self.raw: IO[bytes] = path.open("rb")
        except OSError as exc:
            raise PlaybookError(f"server log {path} is not readable: {exc.strerror or exc}") from exc
        self.size = path.stat().st_size
        magic = self.raw.read(6)
        self.raw.seek(0)
        self.stream: io.BufferedIOBase
        if magic.startswith(b"\x1f\x8b"):
            self.stream = gzip.GzipFile(fileobj=self.raw, mode="rb")
            self.compression = "gzip"
        elif magic.startswith(b"BZh"):
            self.stream = bz2.BZ2File(self.raw, mode="rb")
            self.compression = "bzip2"
        elif magic.startswith(b"\xfd7zXZ\x00"):
            self.stream = lzma.LZMAFile(self.raw, mode="rb")  # noqa: SIM115 (closed by close())
            self.compression = "xz"
        else:
            self.stream = self.raw
            self.compression = ""
        self.bytes_read = 0

    def read(self, size: int) -> bytes:
        try:
            data = self.stream.read(size)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            what = f"a valid {self.compression} file" if self.compression else "readable"
            raise PlaybookError(f"server log {self.path} is not {what}: {exc}") from exc
        self.bytes_read += len(data)
        return data

    def position(self) -> int:
        """Bytes of the file on disk consumed so far (compressed bytes for compressed files)."""
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self.stream.close()
        self.raw.close()


def _check_text(path: Path, sample: bytes) -> None:
    if not sample:
        return
    if b"\x00" in sample:
        raise PlaybookError(f"server log {path} is binary data, not a PostgreSQL log")
    controls = sum(sample.count(bytes([c])) for c in (*range(1, 9), *range(14, 32), 127))
    if controls > len(sample) * 0.05:
        raise PlaybookError(f"server log {path} is binary data, not a PostgreSQL log")


_CSV_START_RE = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? [A-Za-z0-9+:\-]+,")


def detect_format(path: Path, sample: bytes) -> str:
    """stderr, csvlog or jsonlog from the first lines of a file, by majority: a stderr file can
    start with a stray csvlog record (PostgreSQL writes one there when log_destination changes)."""
    votes = {"stderr": 0, "csvlog": 0, "jsonlog": 0}
    for line in sample.splitlines()[:50]:
        if not line.strip() or line.startswith(b"\t"):
            continue
        if line.startswith(b"{"):
            try:
                record = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue  # a torn last line of the sample
            if isinstance(record, dict) and ("error_severity" in record or "timestamp" in record):
                votes["jsonlog"] += 1
        elif _CSV_START_RE.match(line):
            votes["csvlog"] += 1
        else:
            votes["stderr"] += 1
    if not any(votes.values()):
        if not sample.strip():
            return "stderr"
        raise PlaybookError(f"could not recognise {path} as a PostgreSQL stderr, csvlog or jsonlog file")
    return max(votes, key=lambda name: votes[name])


def _count_matches(prefix_regex: _PrefixRegex, sample: bytes) -> int:
    return len(prefix_regex.regex.findall(b"\n" + sample))


def detect_prefix(sample: bytes) -> str | None:
    """The common log_line_prefix that matches most lines of the sample, or None."""
    best, best_count = None, 0
    for prefix in COMMON_PREFIXES:
        count = _count_matches(compile_prefix(prefix), sample)
        if count > best_count:
            best, best_count = prefix, count
    return best


# -- parsing session lines ---------------------------------------------------------------------

# Fast forms first (names without spaces, as PostgreSQL prints them); a block where any line
# does not fit is parsed again line by line with the lenient forms. The fast forms start with
# a literal, not ^, so the regex engine jumps from one candidate to the next.
_DISC_RE = re.compile(
    rb"disconnection: session time: (\d+):(\d+):(\d+(?:\.\d+)?)"
    rb" user=([^ \n]*) database=([^ \n]*) host=([^ \n]*)(?: port=([^ \n]*))?$",
    re.M,
)
_DISC_LENIENT_RE = re.compile(
    rb"^disconnection: session time: (\d+):(\d+):(\d+(?:\.\d+)?)"
    rb" user=(.*?) database=(.*?) host=(\S*?)(?: port=(\S*))?$"
)
_AUTH_RE = re.compile(
    rb"connection authorized: user=([^ \n]*)(?: database=([^ \n]*))?"
    rb"(?: application_name=([^\n]*))?$",
    re.M,
)
_AUTH_LENIENT_RE = re.compile(
    rb"^(?:replication )?connection authorized: user=(.*?)(?: database=(.*?))?"
    rb"(?: application_name=(.*?))?(?: SSL enabled \(.*| GSS \(.*)?$"
)
_TLS_SUFFIX_RE = re.compile(rb" (?:SSL enabled|GSS) \(.*$")
_RECV_RE = re.compile(rb"connection received: host=([^ \n]*)(?: port=([^ \n]*))?$", re.M)
_RECV_LENIENT_RE = re.compile(rb"^connection received: host=(\S*?)(?: port=(\S*))?$")


def _parse_all(
    fast: re.Pattern[bytes], lenient: re.Pattern[bytes], messages: list[bytes], groups: int
) -> list[tuple[bytes, ...]]:
    """Parse many one-line messages with one findall over their join; per line if any is odd."""
    if not messages:
        return []
    found = fast.findall(b"\n".join(messages))
    if len(found) == len(messages):
        return found
    empty = (b"",) * groups
    out: list[tuple[bytes, ...]] = []
    for message in messages:
        match = lenient.match(message)
        out.append(tuple(g or b"" for g in match.groups()) if match else empty)
    return out


# -- accumulating what we keep -----------------------------------------------------------------

_UNKNOWN = frozenset({"[unknown]", "unknown"})


def _host_of(host_port: str) -> str:
    """'10.0.0.1(5432)' -> '10.0.0.1' (the %r escape); csvlog's '10.0.0.1:5432' likewise."""
    paren = host_port.find("(")
    if paren > 0:
        return host_port[:paren]
    if host_port.count(":") == 1:
        return host_port.split(":", 1)[0]
    return host_port


class _Vocab:
    """Codes for a low-cardinality column (names repeat millions of times): one str per value."""

    def __init__(self, normalise: Callable[[str], str] | None = None) -> None:
        self.index: dict[bytes | str, int] = {"": 0}
        self.values: list[str] = [""]
        self.normalise = normalise

    def codes(self, values: Sequence[bytes | str]) -> np.ndarray:
        """Global codes for a column: factorize in C, then look up only its distinct values."""
        if len(values) > 64:
            local, distinct = pd.factorize(_objects(values))
            return self._lookup(list(distinct))[local]
        return self._lookup(values)

    def _lookup(self, values: Sequence[bytes | str]) -> np.ndarray:
        index = self.index
        for value in set(values) - index.keys():
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            text = "" if text in _UNKNOWN else text
            if self.normalise is not None:
                text = self.normalise(text)
            code = index.get(text)
            if code is None:
                code = index[text] = len(self.values)
                self.values.append(text)
            index[value] = code
        return np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=len(values))

    def code(self, value: str) -> int:
        return int(self.codes([value])[0])


_CODED = ("event", "level", "sqlstate", "user", "database", "application", "host", "session_id")


class _Part:
    """The rows kept from one block, columnar: coded names, numpy numbers, arrow text."""

    def __init__(self) -> None:
        self.seq: list[np.ndarray] = []
        self.pid: list[np.ndarray] = []
        self.ts: list[np.ndarray] = []
        self.session_s: list[np.ndarray] = []
        self.coded: dict[str, list[np.ndarray]] = {name: [] for name in _CODED}
        self.message: list[np.ndarray] = []  # object arrays of bytes (stderr) or str
        self.detail: list[np.ndarray] = []

    def add(
        self,
        seq: np.ndarray,
        ts: np.ndarray,
        pid: np.ndarray,
        coded: dict[str, np.ndarray],
        message: Sequence[bytes | str],
        detail: Sequence[bytes | str] | None = None,
        session_s: np.ndarray | None = None,
    ) -> None:
        n = len(seq)
        if not n:
            return
        self.seq.append(seq)
        self.ts.append(ts)
        self.pid.append(pid)
        self.session_s.append(session_s if session_s is not None else np.full(n, np.nan))
        for name in _CODED:
            self.coded[name].append(coded[name] if name in coded else np.zeros(n, dtype=np.int32))
        self.message.append(_objects(message))
        self.detail.append(_objects(detail) if detail is not None else np.full(n, b"", dtype=object))

    def __len__(self) -> int:
        return sum(len(s) for s in self.seq)

    def columns(self) -> dict[str, Any]:
        """The block's columns in log order (rows were added kind by kind)."""
        seq = np.concatenate(self.seq)
        order = np.argsort(seq, kind="stable")
        out: dict[str, Any] = {
            "seq": seq[order],
            "ts": np.concatenate(self.ts)[order],
            "pid": np.concatenate(self.pid)[order],
            "session_s": np.concatenate(self.session_s)[order],
            "message": _arrow_text(np.concatenate(self.message)[order]),
            "detail": _arrow_text(np.concatenate(self.detail)[order]),
        }
        for name in _CODED:
            out[name] = np.concatenate(self.coded[name])[order]
        return out


def _objects(values: Sequence[bytes | str]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _arrow_text(values: np.ndarray) -> pa.Array:
    """Arrow strings from bytes (or str) in C. A block with invalid UTF-8 gets its non-ASCII
    items decoded in Python, with replacement characters; checking the joined bytes first is
    cheaper than letting arrow's cast fail."""
    items = values.tolist()
    if items and isinstance(items[0], str):  # csvlog and jsonlog: decoded already
        return pa.array(items, type=pa.string())
    if not _valid_utf8(b"".join(items)):
        items = [v if v.isascii() else v.decode("utf-8", "replace").encode() for v in items]
    return pa.array(items, type=pa.binary()).cast(pa.string())


def _valid_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _pick(column: Sequence[Any], rows: Sequence[int]) -> list[Any]:
    """column[rows] for a tuple column and a list of positions, at C speed."""
    if not len(rows):
        return []
    if len(rows) == 1:
        return [column[rows[0]]]
    return list(itemgetter(*rows)(column))


# -- the reader --------------------------------------------------------------------------------


class _Reader:
    def __init__(self, since: datetime | None, until: datetime | None) -> None:
        self.since = _as_utc(since)
        self.until = _as_utc(until)
        self.parts: list[dict[str, Any]] = []
        self.vocab = {name: _Vocab(_host_of if name == "host" else None) for name in _CODED}
        self.lines = 0
        self.entries = 0
        self.bytes_read = 0
        self.seq = 0
        self.warnings: list[str] = []
        self.past_until = False

    def _keep(self, part: _Part) -> None:
        """A block's kept rows, filtered to the window, join the result."""
        if not len(part):
            return
        cols = part.columns()
        ts = cols["ts"]
        if self.since is not None or self.until is not None:
            mask = np.ones(len(ts), dtype=bool)
            if self.since is not None:
                mask &= ts >= self.since
            if self.until is not None:
                mask &= ts <= self.until
                valid = ts[~np.isnat(ts)]
                if len(valid) and valid.min() > self.until:
                    self.past_until = True  # files are read in time order: the rest is later still
            if not mask.all():
                keep = np.flatnonzero(mask)
                cols = {
                    k: (v.take(pa.array(keep)) if isinstance(v, pa.Array) else v[keep])
                    for k, v in cols.items()
                }
        if len(cols["seq"]):
            self.parts.append(cols)

    # -- stderr ----------------------------------------------------------------------------
    def stderr_file(self, source: _Source, prefix_regex: _PrefixRegex, tick: Callable[[], None]) -> None:
        regex = prefix_regex.regex
        single = prefix_regex.single_line or regex
        index = {name: i for i, name in enumerate(prefix_regex.fields)}
        carry = b"\n"
        matched_any = False
        lines_before = self.lines
        self.past_until = False
        while not self.past_until:
            chunk = source.read(BLOCK_SIZE)
            if not chunk:
                break
            buf = carry + chunk
            # Cut before the last line that starts an entry: continuation lines (a leading tab)
            # stay with their entry, and the possibly incomplete last line waits for more.
            cut = buf.rfind(b"\n")
            while cut > 0 and cut + 1 < len(buf) and buf[cut + 1] == 9:
                cut = buf.rfind(b"\n", 0, cut)
            if cut <= 0:
                carry = buf
                continue
            # Most connection-heavy blocks have no tab-continued line: the simpler regex is faster.
            block_regex = regex if buf.find(b"\n\t", 0, cut) >= 0 else single
            rows = block_regex.findall(buf, 0, cut)
            self.lines += buf.count(b"\n", 1, cut) + 1
            carry = buf[cut:]
            if rows:
                matched_any = True
                self._stderr_rows(rows, index)
            tick()
        if len(carry) > 1 and not self.past_until:
            rows = regex.findall(carry)
            self.lines += carry.count(b"\n", 1) + (0 if carry.endswith(b"\n") else 1)
            if rows:
                matched_any = True
                self._stderr_rows(rows, index)
        if not matched_any and self.lines > lines_before:
            raise PlaybookError(
                f"the log_line_prefix {prefix_regex.prefix!r} matches no line of {source.path}; "
                "pass the server's log_line_prefix with --prefix"
            )

    def _stderr_rows(self, rows: list[tuple[bytes, ...]], index: dict[str, int]) -> None:
        n = len(rows)
        self.entries += n
        base = self.seq
        self.seq += n
        cols = list(zip(*rows, strict=True))

        def col(name: str) -> tuple[bytes, ...] | None:
            return cols[index[name]] if name in index else None

        messages: tuple[bytes, ...] = cols[index["message"]]
        levels: tuple[bytes, ...] = cols[index["level"]]
        pids, states = col("pid"), col("sqlstate")
        users, dbs, apps, sids = col("user"), col("database"), col("application"), col("session_id")
        hosts = col("host") or col("host_port")
        vocab = self.vocab

        # Whole-block conversions are cheaper than per-row ones.
        pid_all = np.array(pids).astype(np.int64) if pids else np.zeros(n, dtype=np.int64)
        if "ts" in index:
            zones = cols[index["tz"]]
            ts_all = _to_utc(cols[index["ts"]], zones, self.warnings)
        elif "epoch" in index:
            ts_all = _epoch_to_utc(cols[index["epoch"]])
        else:
            ts_all = np.full(n, np.datetime64("NaT"), dtype="datetime64[ms]")

        # The first 17 bytes tell session lines apart; numpy compares them all in C.
        firsts = np.array(messages, dtype="S17")
        kinds = np.zeros(n, dtype=np.int8)
        for head, code in _SESSION_HEADS.items():
            kinds[firsts == head] = code
        part = _Part()
        log_code = vocab["level"].code("LOG")

        def prefix_codes(name: str, column: tuple[bytes, ...] | None, rows_: Sequence[int]) -> np.ndarray:
            if column is None:
                return np.zeros(len(rows_), dtype=np.int32)
            return vocab[name].codes(_pick(column, rows_))

        def session_rows(kind: int, event: str) -> tuple[np.ndarray, list[int], list[bytes]]:
            at = np.flatnonzero(kinds == kind)
            rows_ = at.tolist()
            return at, rows_, _pick(messages, rows_)

        def no_text(rows_: list[int]) -> list[bytes]:
            # A session line's content lives on in its coded columns: keeping its text too would make
            # memory grow with the log (about 2.5 MB per MB of a connection-heavy log).
            return [b""] * len(rows_)

        def common(at: np.ndarray, rows_: list[int], event: str) -> dict[str, np.ndarray]:
            k = len(rows_)
            return {
                "event": np.full(k, vocab["event"].code(event), dtype=np.int32),
                "level": np.full(k, log_code, dtype=np.int32),
                "sqlstate": prefix_codes("sqlstate", states, rows_),
                "session_id": prefix_codes("session_id", sids, rows_),
            }

        # Session lines: each kind's messages of the whole block are parsed at once.
        at, rows_, msgs = session_rows(_DISC, "disconnection")
        if rows_:
            h, m, s, user, db, host, _port = zip(
                *_parse_all(_DISC_RE, _DISC_LENIENT_RE, msgs, 7), strict=True
            )
            seconds = _seconds(h, m, s)
            coded = common(at, rows_, "disconnection")
            coded.update(user=vocab["user"].codes(user), database=vocab["database"].codes(db))
            coded.update(host=vocab["host"].codes(host), application=prefix_codes("application", apps, rows_))
            part.add(at + base, ts_all[at], pid_all[at], coded, no_text(rows_), session_s=seconds)
        at, rows_, msgs = session_rows(_AUTH, "connection_authorized")
        if rows_:
            user, db, app = zip(*_parse_all(_AUTH_RE, _AUTH_LENIENT_RE, msgs, 3), strict=True)
            if any(b" SSL enabled (" in a or b" GSS (" in a for a in set(app)):
                app = tuple(_TLS_SUFFIX_RE.sub(b"", a) for a in app)
            coded = common(at, rows_, "connection_authorized")
            coded.update(user=vocab["user"].codes(user), database=vocab["database"].codes(db))
            coded.update(application=vocab["application"].codes(app), host=prefix_codes("host", hosts, rows_))
            part.add(at + base, ts_all[at], pid_all[at], coded, no_text(rows_))
        at, rows_, msgs = session_rows(_RECV, "connection_received")
        if rows_:
            host, _port = zip(*_parse_all(_RECV_RE, _RECV_LENIENT_RE, msgs, 2), strict=True)
            coded = common(at, rows_, "connection_received")
            coded.update(host=vocab["host"].codes(host))
            part.add(at + base, ts_all[at], pid_all[at], coded, no_text(rows_))

        # Everything else is rare in a connection-heavy log: classify it line by line.
        picked: list[int] = []
        events: list[str] = []
        texts: list[bytes] = []
        details: list[bytes] = []
        last = -2
        for i in np.flatnonzero(kinds == 0).tolist():
            level = levels[i]
            if last == i - 1 and level in _SECONDARY:
                if level == b"DETAIL" and not details[-1]:
                    details[-1] = messages[i].replace(b"\n\t", b"\n")
                last = i  # DETAIL, HINT, CONTEXT, STATEMENT follow their entry
                continue
            if level not in _INTERESTING_BYTES:
                continue
            text = _decode(messages[i])
            kind = log_events.classify(
                text.split("\n\t", 1)[0], level.decode(), _decode(states[i]) if states else None
            )
            if kind is None:
                continue
            picked.append(i)
            events.append(kind.id)
            texts.append(messages[i].replace(b"\n\t", b"\n"))
            details.append(b"")
            last = i
        if picked:
            at = np.array(picked, dtype=np.int64)
            coded = {
                "event": vocab["event"].codes(events),
                "level": vocab["level"].codes(_pick(levels, picked)),
                "sqlstate": prefix_codes("sqlstate", states, picked),
                "session_id": prefix_codes("session_id", sids, picked),
                "user": prefix_codes("user", users, picked),
                "database": prefix_codes("database", dbs, picked),
                "application": prefix_codes("application", apps, picked),
                "host": prefix_codes("host", hosts, picked),
            }
            part.add(at + base, ts_all[at], pid_all[at], coded, texts, details)
        self._keep(part)

    # -- csvlog and jsonlog: one record at a time ---------------------------------------------
    def records(self, source: _Source, parse: Callable[[IO[str]], Iterator[tuple[str, ...]]]) -> None:
        counting = _CountingReader(source)
        text = io.TextIOWrapper(
            io.BufferedReader(counting, BLOCK_SIZE), encoding="utf-8", errors="replace", newline=""
        )
        batch: list[tuple[str, ...]] = []
        self.past_until = False
        for record in parse(text):
            self.entries += 1
            message, level = record[8], record[7]
            session = log_events.session_kind(message)
            if session is not None:
                event = session.id
            elif level in log_events.INTERESTING_LEVELS:
                kind = log_events.classify(message.split("\n", 1)[0], level, record[6])
                if kind is None:
                    continue
                event = kind.id
            else:
                continue
            batch.append((event, *record))
            if len(batch) >= 50_000:
                self._record_batch(batch)
                batch = []
                if self.past_until:
                    break
        self._record_batch(batch)
        self.lines += counting.newlines

    def _record_batch(self, batch: list[tuple[str, ...]]) -> None:
        if not batch:
            return
        n = len(batch)
        event, ts, pid, user, db, app, host, state, level, message, detail, sid = (
            list(c) for c in zip(*batch, strict=True)
        )
        seconds = np.full(n, np.nan)
        for i, (ev, text) in enumerate(zip(event, message, strict=True)):
            if ev == "disconnection":
                seconds[i] = log_events.session_seconds(text) or np.nan
                match = _DISC_LENIENT_RE.match(text.encode("utf-8", "replace"))
                if match:
                    user[i] = user[i] or _decode(match.group(4))
                    db[i] = db[i] or _decode(match.group(5))
                    host[i] = host[i] or _decode(match.group(6))
            elif ev == "connection_authorized":
                # the record's application_name is not set yet when this line is written
                match = _AUTH_LENIENT_RE.match(text.encode("utf-8", "replace"))
                if match:
                    user[i] = user[i] or _decode(match.group(1))
                    db[i] = db[i] or _decode(match.group(2))
                    app[i] = _decode(match.group(3)) or app[i]
            elif ev == "connection_received" and not host[i]:
                match = _RECV_LENIENT_RE.match(text.encode("utf-8", "replace"))
                host[i] = _decode(match.group(1)) if match else ""
        stamps, zones = zip(*(t.rpartition(" ")[::2] for t in ts), strict=True)
        vocab = self.vocab
        coded = {
            "event": vocab["event"].codes(event),
            "level": vocab["level"].codes(level),
            "sqlstate": vocab["sqlstate"].codes(state),
            "user": vocab["user"].codes(user),
            "database": vocab["database"].codes(db),
            "application": vocab["application"].codes(app),
            "host": vocab["host"].codes(host),
            "session_id": vocab["session_id"].codes(sid),
        }
        seq = np.arange(self.seq, self.seq + n, dtype=np.int64)
        self.seq += n
        pids = np.array([int(p) if p.isdigit() else 0 for p in pid], dtype=np.int64)
        part = _Part()
        part.add(seq, _to_utc(stamps, zones, self.warnings), pids, coded, message, detail, seconds)
        self._keep(part)


_DISC, _RECV, _AUTH, _SKIP = 1, 2, 3, 4
_SESSION_HEADS = {
    b"disconnection: se": _DISC,
    b"connection receiv": _RECV,
    b"connection author": _AUTH,
    b"replication conne": _AUTH,
    b"connection authen": _SKIP,  # nothing the sessions need
    b"connection ready:": _SKIP,  # 18's setup_durations line
}


def _decode(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


def _seconds(hours: Sequence[bytes], minutes: Sequence[bytes], seconds: Sequence[bytes]) -> np.ndarray:
    """'H', 'MM', 'SS.mmm' columns of disconnection lines -> seconds (NaN where unparsed)."""

    def num(values: Sequence[bytes]) -> np.ndarray:
        arr = np.array(values)
        out = np.full(len(arr), np.nan)
        ok = arr != b""
        out[ok] = arr[ok].astype(np.float64)
        return out

    return np.round(num(hours) * 3600 + num(minutes) * 60 + num(seconds), 3)  # the log has ms


class _CountingReader(io.RawIOBase):
    """A raw stream over a _Source that counts lines as blocks go by."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.newlines = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(min(len(buffer), BLOCK_SIZE))
        self.newlines += data.count(b"\n")
        buffer[: len(data)] = data
        return len(data)


_INTERESTING_BYTES = frozenset(level.encode() for level in log_events.INTERESTING_LEVELS)
_SECONDARY = frozenset({b"DETAIL", b"HINT", b"CONTEXT", b"STATEMENT", b"QUERY", b"LOCATION"})

# csvlog columns (9.0-12: 23, 13: 24 with backend_type, 14+: 26 with leader_pid and query_id)
_CSV_TIME, _CSV_USER, _CSV_DB, _CSV_PID, _CSV_FROM, _CSV_SID = 0, 1, 2, 3, 4, 5
_CSV_LEVEL, _CSV_STATE, _CSV_MESSAGE, _CSV_DETAIL, _CSV_APP = 11, 12, 13, 14, 22


def _csv_records(text: IO[str]) -> Iterator[tuple[str, ...]]:
    for row in csv.reader(text):
        if len(row) < 23:
            continue  # not a csvlog record (or a torn last line)
        yield (
            row[_CSV_TIME],
            row[_CSV_PID],
            row[_CSV_USER],
            row[_CSV_DB],
            row[_CSV_APP],
            row[_CSV_FROM].rsplit(":", 1)[0] if row[_CSV_FROM] else "",
            row[_CSV_STATE],
            row[_CSV_LEVEL],
            row[_CSV_MESSAGE],
            row[_CSV_DETAIL],
            row[_CSV_SID],
        )


def _json_records(text: IO[str]) -> Iterator[tuple[str, ...]]:
    for line in text:
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        yield (
            str(record.get("timestamp", "")),
            str(record.get("pid", "")),
            str(record.get("user", "")),
            str(record.get("dbname", "")),
            str(record.get("application_name", "")),
            str(record.get("remote_host", "")),
            str(record.get("state_code", "")),
            str(record.get("error_severity", "")),
            str(record.get("message", "")),
            str(record.get("detail", "")),
            str(record.get("session_id", "")),
        )


# -- putting it together -----------------------------------------------------------------------


def _first_timestamp(sample: bytes) -> str:
    match = re.search(rb"(?:^|\n|\"timestamp\":\")(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)", sample)
    if match:
        return match.group(1).decode()
    match = re.search(rb"(?:^|\n)(\d{9,10}(?:\.\d+)?) ", sample)
    if match:
        return datetime.fromtimestamp(float(match.group(1)), timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return ""


def read_server_logs(
    paths: Sequence[str | Path],
    *,
    fmt: str = "auto",
    prefix: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: bool = False,
) -> ServerLogEvidence:
    """Read PostgreSQL server logs and classify what ended sessions.

    `paths` may be a rotated set in any order: files are read in the order of their first
    timestamp. `prefix` is the server's log_line_prefix for stderr logs (guessed among the
    common ones when None). Bad input raises PlaybookError with one sentence.
    """
    if fmt not in FORMATS:
        raise PlaybookError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not paths:
        raise PlaybookError("no server log given")
    plan: list[tuple[str, int, Path, str]] = []
    formats: set[str] = set()
    for n, raw_path in enumerate(paths):
        path = Path(raw_path)
        source = _Source(path)
        try:
            sample = source.read(SAMPLE_SIZE)
        finally:
            source.close()
        _check_text(path, sample)
        file_fmt = detect_format(path, sample) if fmt == "auto" else fmt
        formats.add(file_fmt)
        plan.append((_first_timestamp(sample), n, path, file_fmt))
        if file_fmt == "stderr" and prefix is None and sample.strip():
            prefix = detect_prefix(sample)
            if prefix is None:
                raise PlaybookError(
                    f"could not recognise the log_line_prefix of {path}; pass the server's one with --prefix"
                )
    plan.sort(key=lambda p: (p[0] == "", p[0], p[1]))
    if len(formats) > 1:
        raise PlaybookError(
            f"the logs mix formats ({', '.join(sorted(formats))}); read each format on its own"
        )
    detected = formats.pop() if formats else "stderr"
    prefix_regex = compile_prefix(prefix or "") if detected == "stderr" else None

    reader = _Reader(since, until)
    total = sum(p[2].stat().st_size for p in plan)
    bar: AbstractContextManager[Any]
    if progress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
    else:
        bar = nullcontext()
    # Millions of short-lived tuples would make the cyclic GC scan again and again; nothing
    # here builds cycles, so it stays off while reading (about a third of the time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _read_all(plan, reader, prefix_regex, bar, total)
    finally:
        if gc_was_enabled:
            gc.enable()

    events, sessions = _frames(reader)
    summary = _summarise(events, sessions, reader, [str(p[2]) for p in plan], detected, prefix, since, until)
    return ServerLogEvidence(
        events=events,
        sessions=sessions,
        summary=summary,
        bytes_read=reader.bytes_read,
        lines=reader.lines,
        files=[str(p[2]) for p in plan],
        format=detected,
        prefix=prefix if detected == "stderr" else None,
        warnings=sorted(set(reader.warnings)),
    )


def _read_all(
    plan: list[tuple[str, int, Path, str]],
    reader: _Reader,
    prefix_regex: _PrefixRegex | None,
    bar: AbstractContextManager[Any],
    total: int,
) -> None:
    done_before = 0
    with bar as shown:
        task = shown.add_task("reading logs", total=total) if shown is not None else None
        for _, _, path, file_fmt in plan:
            source = _Source(path)

            def tick(source: _Source = source, base: int = done_before) -> None:
                if shown is not None:
                    shown.update(task, completed=base + source.position())

            try:
                if file_fmt == "stderr":
                    assert prefix_regex is not None
                    reader.stderr_file(source, prefix_regex, tick)
                elif file_fmt == "csvlog":
                    reader.records(source, _csv_records)
                else:
                    reader.records(source, _json_records)
            finally:
                reader.bytes_read += source.bytes_read
                source.close()
            done_before += source.size
            tick()


_CATEGORICAL = ["event", "category", "level", "sqlstate", "user", "database", "application", "host"]
_WHO = ("user", "database", "application", "host")


def _frames(reader: _Reader) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The events frame (log order) and the sessions built from it."""
    parts = reader.parts
    if parts:
        # Blocks were read in order and each is in log order already.
        def joined(name: str) -> Any:
            if isinstance(parts[0][name], pa.Array):
                return pa.chunked_array([p[name] for p in parts])
            return np.concatenate([p[name] for p in parts])

        columns = {name: joined(name) for name in ("ts", "pid", "session_s", "message", "detail", *_CODED)}
    else:
        columns = {
            "ts": np.array([], dtype="datetime64[ms]"),
            "pid": np.array([], dtype=np.int64),
            "session_s": np.array([], dtype=np.float64),
            "message": pa.array([], type=pa.string()),
            "detail": pa.array([], type=pa.string()),
            **{name: np.array([], dtype=np.int32) for name in _CODED},
        }
    raw = pd.DataFrame(
        {
            "ts": pd.to_datetime(columns["ts"]).tz_localize("UTC"),
            "pid": columns["pid"],
            "session_s": columns["session_s"],
            "message": pd.array(columns["message"], dtype="str"),  # zero-copy from arrow
            "detail": pd.array(columns["detail"], dtype="str"),
        }
    )
    for name in _CODED:
        raw[name] = _categorical(columns[name], reader.vocab[name].values)
    # The category follows from the event: map codes to codes instead of strings per row.
    names = ["", *log_events.CATEGORIES]
    of_event = np.array(
        [names.index(log_events.category(e)) for e in reader.vocab["event"].values], dtype=np.int32
    )
    raw["category"] = _categorical(of_event[columns["event"]], names)
    sessions = _sessions(raw)
    raw = _backfill(raw, sessions)
    return raw[EVENT_COLUMNS].reset_index(drop=True), sessions


def _categorical(codes: np.ndarray, values: list[str]) -> pd.Categorical:
    """Codes into the values actually used, sorted: the same log gives the same frame however
    it was split or ordered (bincount, not np.unique: no sort of a million codes)."""
    used = (
        np.flatnonzero(np.bincount(codes, minlength=len(values))) if len(codes) else np.array([], dtype=int)
    )
    names = [values[i] for i in used]
    order = sorted(range(len(names)), key=names.__getitem__)
    remap = np.full(len(values), -1, dtype=np.int32)
    remap[used[order]] = np.arange(len(order), dtype=np.int32)
    categories = pd.Index([names[i] for i in order], dtype=object)
    return pd.Categorical.from_codes(remap[codes], categories=categories, validate=False)


def _sessions(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per session: disconnection lines paired with the authorized line of their pid.

    A disconnection line has the session's length, so its start is exact; the latest
    authorized line of the same pid before it adds the application (a pid is reused only after
    its session ended). Authorized lines with no disconnection are sessions still open at the
    end of the log, or ended by a crash: their end is unknown.
    """
    event = raw["event"]
    auth = raw.loc[event == "connection_authorized", ["ts", "pid", "user", "database", "application"]]
    disc = raw.loc[event == "disconnection", ["ts", "pid", "user", "database", "host", "session_s"]]
    recv = raw.loc[event == "connection_received", ["ts", "pid", "host"]]
    if auth.empty and disc.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SESSION_COLUMNS})

    if not (raw["pid"] > 0).any():
        # No %p in the prefix: nothing ties an authorized line to its disconnection.
        auth = auth.iloc[:0]
    auth = auth.rename(columns={"ts": "auth_ts"}).assign(auth_row=np.arange(len(auth)))
    disc = disc.rename(columns={"ts": "end"})
    disc["start"] = (disc["end"] - pd.to_timedelta(disc["session_s"].fillna(0), unit="s")).dt.as_unit("ms")
    paired = pd.merge_asof(
        disc.sort_values("end", kind="stable"),
        auth[["auth_ts", "pid", "application", "auth_row"]].sort_values("auth_ts", kind="stable"),
        left_on="end", right_on="auth_ts", by="pid", direction="backward",
    )  # fmt: skip
    # An authorized line older than the session's start belongs to an earlier session of that pid.
    stale = paired["auth_ts"].notna() & (paired["auth_ts"] < paired["start"] - pd.Timedelta(seconds=2))
    paired.loc[stale, "auth_row"] = np.nan
    application = paired["application"].copy()
    application[stale.to_numpy() | application.isna().to_numpy()] = ""
    # Series, not .to_numpy(): tz-aware columns would become objects one Timestamp at a time.
    ended = pd.DataFrame(
        {
            "pid": paired["pid"],
            "start": paired["start"],
            "end": paired["end"],
            "duration_s": paired["session_s"],
            "user": paired["user"],
            "database": paired["database"],
            "host": paired["host"],
            "application": application,
        }
    )
    used = paired["auth_row"].dropna().to_numpy(dtype=np.int64)
    unpaired = np.ones(len(auth), dtype=bool)
    unpaired[used] = False
    still = auth[unpaired].reset_index(drop=True)
    host = pd.Series(
        pd.Categorical.from_codes(np.zeros(len(still), dtype=np.int32), categories=raw["host"].cat.categories)
    )
    opened = pd.DataFrame(
        {
            "pid": still["pid"],
            "start": still["auth_ts"],
            "end": pd.Series(pd.NaT, index=still.index, dtype=still["auth_ts"].dtype),
            "duration_s": np.full(len(still), np.nan),
            "user": still["user"],
            "database": still["database"],
            "host": host,
            "application": still["application"],
        }
    )
    if len(opened) and len(recv):
        found = pd.merge_asof(
            opened[["start", "pid"]].reset_index().sort_values("start", kind="stable"),
            recv.rename(columns={"host": "recv_host"}).sort_values("ts", kind="stable"),
            left_on="start", right_on="ts", by="pid", direction="backward",
        )  # fmt: skip
        found = found[found["recv_host"].notna()]
        opened.loc[found["index"].to_numpy(), "host"] = found["recv_host"].to_numpy()
    sessions = pd.concat([ended, opened], ignore_index=True)
    sessions["start"] = pd.to_datetime(sessions["start"], utc=True).dt.as_unit("ms")
    sessions["end"] = pd.to_datetime(sessions["end"], utc=True).dt.as_unit("ms")
    sessions = sessions.sort_values("start", kind="stable").reset_index(drop=True)
    sessions["ended_by"] = _ended_by(raw, sessions)
    return sessions[SESSION_COLUMNS]


def _ended_by(raw: pd.DataFrame, sessions: pd.DataFrame) -> pd.Series:
    """The last classified event of the session's pid within a second before its end.

    ERROR lines (statement_timeout, lock_timeout) end a statement, not the session: not a cause.
    """
    causes = raw.loc[(raw["category"] != "") & (raw["level"] != "ERROR"), ["ts", "pid", "event"]]
    causes = causes.sort_values("ts", kind="stable")
    ended = sessions.loc[sessions["end"].notna(), ["end", "pid"]]
    result = pd.Series("", index=sessions.index, dtype=object)
    if causes.empty or ended.empty:
        return result
    found = pd.merge_asof(
        ended.reset_index().sort_values("end"), causes, left_on="end", right_on="ts", by="pid",
        direction="backward", tolerance=pd.Timedelta(seconds=1),
    )  # fmt: skip
    found = found.dropna(subset=["event"])
    result.loc[found["index"].to_numpy()] = found["event"].to_numpy()
    return result


def _backfill(raw: pd.DataFrame, sessions: pd.DataFrame) -> pd.DataFrame:
    """Fill user/database/application/host of classified events from the session of their pid.

    A prefix without %u/%d/%a, or csvlog's empty fields on some lines, leaves them blank; the
    session's authorized or disconnection line knows them.
    """
    names = ["user", "database", "application", "host"]
    blank = np.zeros(len(raw), dtype=bool)
    for name in names:
        blank |= (raw[name] == "").to_numpy()
    missing = (raw["category"] != "").to_numpy() & blank & (raw["pid"] > 0).to_numpy()
    if not missing.any() or sessions.empty:
        return raw
    rows = raw.loc[missing, ["ts", "pid"]].reset_index().sort_values("ts", kind="stable")
    known = sessions.loc[sessions["start"].notna(), ["start", "end", "pid", *names]].sort_values("start")
    found = pd.merge_asof(rows, known, left_on="ts", right_on="start", by="pid", direction="backward")
    # The event must fall inside that session (or the session has no known end).
    inside = found["start"].notna() & (
        found["end"].isna() | (found["ts"] <= found["end"] + pd.Timedelta(seconds=1))
    )
    found = found[inside]
    for name in names:
        current = raw.loc[found["index"], name].astype(object).to_numpy()
        filled = np.where(current == "", found[name].astype(object).fillna("").to_numpy(), current)
        raw.loc[found["index"], name] = filled
    return raw


# -- summary -----------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).isoformat()


def _top(series: pd.Series, n: int = 10) -> dict[str, int]:
    counts = series.value_counts()
    return {str(k): int(v) for k, v in counts.head(n + 1).items() if v and k != ""}


def _summarise(
    events: pd.DataFrame,
    sessions: pd.DataFrame,
    reader: _Reader,
    files: list[str],
    fmt: str,
    prefix: str | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    # Without the text columns: grouping would copy them for nothing.
    ev = events[["ts", "event", "category", *_WHO]]
    classified = ev[(ev["category"] != "").to_numpy()]
    classified = classified.assign(
        **{name: classified[name].astype(object) for name in ("event", "category", *_WHO)}
    )
    per_event: dict[str, Any] = {}
    for event_id, group in ev.groupby("event", sort=False, observed=True):
        kind = log_events.CATALOG.get(str(event_id))
        per_event[str(event_id)] = {
            "count": len(group),
            "category": kind.category if kind else "",
            "meaning": kind.meaning if kind else "",
            "first_seen": _iso(group["ts"].min()),
            "last_seen": _iso(group["ts"].max()),
            "users": _top(group["user"]),
            "databases": _top(group["database"]),
            "applications": _top(group["application"]),
            "hosts": _top(group["host"]),
        }
    per_event = dict(sorted(per_event.items(), key=lambda item: -item[1]["count"]))
    categories = {c: int((classified["category"] == c).sum()) for c in log_events.CATEGORIES}

    def by(column: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for value, group in classified.groupby(column, sort=False):
            if value == "":
                continue
            out[str(value)] = {
                "total": len(group),
                "events": {str(k): int(v) for k, v in group["event"].value_counts().items() if v},
            }
        return dict(sorted(out.items(), key=lambda item: -item[1]["total"])[:50])

    # Per minute: the five categories, plus logins and disconnections (the churn a pool causes).
    timeline: list[dict[str, Any]] = []
    if len(ev) and ev["ts"].notna().any():
        series: dict[str, pd.Series] = {}
        if len(classified):
            minute = classified["ts"].dt.floor("min")
            for name, group in classified.groupby("category", sort=False):
                series[str(name)] = minute[group.index].value_counts()
        for event_id, label in (
            ("connection_authorized", "connections"),
            ("disconnection", "disconnections"),
        ):
            rows = ev["ts"][(ev["event"] == event_id).to_numpy()]
            if len(rows):
                series[label] = rows.dt.floor("min").value_counts()
        table = pd.DataFrame(series).fillna(0).astype(np.int64).sort_index()
        for stamp, row in zip(table.index, table.to_dict("records"), strict=True):
            timeline.append({"minute": _iso(stamp), **{str(k): int(v) for k, v in row.items() if v}})

    durations = sessions["duration_s"].dropna() if len(sessions) else pd.Series(dtype=float)
    buckets = [0, 1, 10, 60, 600, 3600, 86400, math.inf]
    labels = ["<1s", "1-10s", "10-60s", "1-10min", "10-60min", "1-24h", ">24h"]
    histogram = (
        pd.cut(durations, buckets, labels=labels, right=False).value_counts().reindex(labels).fillna(0)
    )
    session_summary = {
        "count": len(sessions),
        "ended": int(sessions["end"].notna().sum()) if len(sessions) else 0,
        "open_or_unknown_end": int(sessions["end"].isna().sum()) if len(sessions) else 0,
        "duration_s": {
            name: (round(float(value), 3) if len(durations) else None)
            for name, value in [
                ("min", durations.min() if len(durations) else 0),
                ("p50", durations.quantile(0.5) if len(durations) else 0),
                ("p90", durations.quantile(0.9) if len(durations) else 0),
                ("p99", durations.quantile(0.99) if len(durations) else 0),
                ("max", durations.max() if len(durations) else 0),
                ("mean", durations.mean() if len(durations) else 0),
            ]
        },
        "histogram": {str(k): int(v) for k, v in histogram.items()},
        "ended_by": _top(sessions["ended_by"].astype(str), 20) if len(sessions) else {},
    }
    return {
        "schema": "pg-session-playbook/serverlog/v1",
        "format": fmt,
        "prefix": prefix if fmt == "stderr" else None,
        "files": files,
        "bytes_read": reader.bytes_read,
        "lines": reader.lines,
        "entries": reader.entries,
        "window": {
            "since": _iso(since),
            "until": _iso(until),
            "first": _iso(ev["ts"].min()) if len(ev) else None,
            "last": _iso(ev["ts"].max()) if len(ev) else None,
        },
        "categories": categories,
        "events": per_event,
        "by_user": by("user"),
        "by_database": by("database"),
        "by_application": by("application"),
        "by_host": by("host"),
        "timeline": timeline,
        "sessions": session_summary,
        "warnings": sorted(set(reader.warnings)),
    }

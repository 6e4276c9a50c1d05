"""stderr logs (any log_line_prefix): one block of whole entries into the rows worth keeping.

Most entries cannot end a session (statement durations, checkpoints), so nothing is parsed
before it is known to matter (the prefilter). numpy finds the entries (lines not starting with
a tab), pyarrow finds each entry's ':  ' after the level, and numpy compares the level word
(one integer compare per level) and the first bytes of the message against the few that
count: session lines of log_connections and log_disconnections, and entries at FATAL, ERROR,
PANIC, WARNING or a LOG wording that is not known to be harmless.

Only the kept entries are split, and without per-row Python:
- time, zone and pid: with numpy at fixed byte places when the prefix starts '%m [%p' or
  '%t [%p' (any literal between zone and pid; `_Head`), else with RE2 through pyarrow;
- names (%u, %d, %a, %h, %e): RE2 through pyarrow, only on the entries whose names the
  frames use (session lines carry theirs in the message), the lenient Python regex for the
  entries RE2 misses (names with odd characters, %q lines of non-session processes);
- session lines: their messages split on spaces in C and checked token by token, the lenient
  regex for the odd ones;
- other messages: classified once per distinct (message, level, SQLSTATE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from playbook.collect import log_events
from playbook.collect.serverlog.prefix import (
    FastPrefix,
    FieldProgram,
    PrefixRegex,
    compile_prefix,
    fast_prefix,
    field_program,
)
from playbook.collect.serverlog.rows import AUTH, DISC, EVENT, RECV, Coded, Rows, clean_name, host_of
from playbook.collect.serverlog.times import Clock, epoch_to_utc
from playbook.vocabulary.levels import EVENT_LEVELS, SECONDARY_LABELS
from playbook.vocabulary.translations import ENGLISH

try:  # the compiled loops (setup.py builds them); the numpy code below is their reference
    from playbook.collect.serverlog import _scan
except ImportError:  # a checkout used without installing it: the numpy code alone
    _scan = None  # type: ignore[assignment]

# The level words the reader codes (1..5) and the labels of secondary lines (6..11), from the
# vocabulary; _scan.c spells the same list (RULES), compared at import below.
_LEVELS = tuple(word.encode() for word in EVENT_LEVELS)
_SECONDARY = tuple(word.encode() for word in SECONDARY_LABELS)
_L_LOG, _L_DETAIL = 1, 6  # index+1 into _LEVELS + _SECONDARY
_ALL_LEVELS = _LEVELS + _SECONDARY
_WINDOW = 10  # bytes before ':  ' that hold the level word (STATEMENT is 9)

_SESSION_HEADS = {
    b"disconnection: se": DISC,
    b"connection receiv": RECV,
    b"connection author": AUTH,
    b"replication conne": AUTH,
    b"connection authen": -1,  # nothing the sessions need
    b"connection ready:": -1,  # 18's setup_durations line
}
# LOG wordings known to explain nothing: the bulk of a busy log. Anything else at LOG is
# classified (once per distinct text), so a wording this list forgets costs time, never an event.
_HARMLESS_LOG = (
    b"duration", b"statemen", b"checkpoi", b"automati", b"temporar", b"execute ", b"parse <u",
    b"bind <un", b"process ", b"restartp", b"listenin", b"logical ", b"starting",
)  # fmt: skip
_HARMLESS_EXCEPT = (b"starting PostgreSQL",)  # server_start begins like "starting logical ..."

# The compiled loops spell these rules in C; they run only while both spellings agree (a rule
# changed here alone turns them off rather than giving other rows). Tests set COMPILED to None
# to compare with the numpy code.
_RULES = {
    "levels": _ALL_LEVELS,
    "session_heads": _SESSION_HEADS,
    "harmless_log": _HARMLESS_LOG,
    "harmless_except": tuple(t[:17] for t in _HARMLESS_EXCEPT),
}
COMPILED = _scan if _scan is not None and _scan.RULES == _RULES else None

_DISC_LENIENT = re.compile(
    rb"^disconnection: session time: (\d+):(\d+):(\d+(?:\.\d+)?)"
    rb" user=(.*?) database=(.*?) host=(\S*?)(?: port=(\S*))?$"
)
_AUTH_LENIENT = re.compile(
    rb"^(?:replication )?connection authorized: user=(.*?)(?: database=(.*?))?"
    rb"(?: application_name=(.*?))?(?: SSL enabled \(.*| GSS \(.*)?$"
)
_RECV_LENIENT = re.compile(rb"^connection received: host=(\S*?)(?: port=(\S*))?$")


@dataclass
class StderrSpec:
    """What the stderr parser needs to know about a file's prefix; picklable for --jobs."""

    prefix: str
    lenient: PrefixRegex = field(init=False)
    fast: FastPrefix = field(init=False)
    head: _Head | None = field(init=False)
    names: FastPrefix | None = field(init=False)
    names_program: FieldProgram | None = field(init=False)
    names_on_session_lines: bool = field(init=False)

    def __post_init__(self) -> None:
        self.lenient = compile_prefix(self.prefix)
        self.fast = fast_prefix(self.prefix)
        self.head = _head_of(self.prefix)
        # where the head is read with numpy, the regexes capture the names alone
        self.names = fast_prefix(self.prefix, frozenset({"ts", "pid"})) if self.head else None
        # the same names read without a regex where the prefix allows it (compiled loops only)
        self.names_program = field_program(self.prefix, frozenset({"ts", "pid"})) if self.head else None
        names = {name for _, group in self.fast.passes for name in group}
        # session lines carry user, database (and host) in their message; only these prefix
        # fields are theirs alone
        self.names_on_session_lines = bool(names & {"application", "host", "host_port", "sqlstate"})

    def __getstate__(self) -> dict[str, str]:
        return {"prefix": self.prefix}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.prefix = state["prefix"]
        self.__post_init__()


@dataclass(frozen=True)
class _Head:
    """A prefix that starts with %m or %t, then a literal that starts with a space, then %p
    ('%m [%p] ...', '%t [%p-%l] ...'): time, zone and pid are read with numpy at fixed places,
    no regex."""

    millis: bool  # %m: '.mmm' after the seconds
    between: bytes  # the literal between the zone name and the pid


def _head_of(prefix: str) -> _Head | None:
    for esc, millis in (("%m", True), ("%t", False)):
        if not prefix.startswith(esc):
            continue
        rest = prefix[len(esc) :]
        at = rest.find("%p")
        between = rest[:at] if at > 0 else ""
        if between.startswith(" ") and len(between) <= 8 and "%" not in between:
            return _Head(millis, between.encode())
    return None


def _fast_head(
    arr: np.ndarray, starts: np.ndarray, limits: np.ndarray, head: _Head, zone_ends: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bytes], np.ndarray]:
    """(ok, naive ms since the epoch, zone codes, zone names, pid) of the entries starting at
    `starts` whose level begins at `limits`; rows not ok are left to the regexes. One gather
    per byte place: no window matrix. With `zone_ends` (csvlog and jsonlog times) the zone
    name ends there and nothing follows it (pid 0)."""
    k = len(starts)
    if COMPILED is not None and len(arr):
        return _fast_head_compiled(arr, starts, limits, head, zone_ends)
    last = len(arr) - 1

    def byte(offset: np.ndarray | int) -> np.ndarray:
        return arr[np.minimum(starts + offset, last)].astype(np.int64)

    ok = np.ones(k, dtype=bool)

    def num(*places: int) -> np.ndarray:
        nonlocal ok
        out = np.zeros(k, dtype=np.int64)
        for place in places:
            d = byte(place) - 48
            ok &= (d >= 0) & (d <= 9)
            out = out * 10 + d
        return out

    # 'YYYY-MM-DD HH:MM:SS' (then '.mmm' for %m)
    year, month, day = num(0, 1, 2, 3), num(5, 6), num(8, 9)
    hour, minute, second = num(11, 12), num(14, 15), num(17, 18)
    millis = num(20, 21, 22) if head.millis else np.zeros(k, dtype=np.int64)
    for place, sep in ((4, 45), (7, 45), (10, 32), (13, 58), (16, 58)) + (((19, 46),) if head.millis else ()):
        ok &= byte(place) == sep
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (hour < 24) & (minute < 60)
    ok &= second < 60
    months = (np.where(ok, year, 1970) - 1970) * 12 + np.where(ok, month, 1) - 1
    days = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + day - 1
    ms = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + millis
    # a space, the zone name (1 to 8 bytes, as one integer), the literal, the pid's digits
    tz_at = 24 if head.millis else 20
    ok &= byte(tz_at - 1) == 32
    key = np.zeros(k, dtype=np.uint64)
    if zone_ends is not None:
        tz_len = zone_ends - starts - tz_at
        ok &= (tz_len >= 1) & (tz_len <= 8)
        for j in range(8):
            key |= np.where(j < tz_len, byte(tz_at + j), 0).astype(np.uint64) << np.uint64(8 * j)
        uniq, inverse = np.unique(key, return_inverse=True)
        names = [int(u).to_bytes(8, "little").rstrip(b"\0") for u in uniq.tolist()]
        ok &= key != 0
        return ok, ms, inverse.astype(np.int32), names, np.zeros(k, dtype=np.int64)
    tz_len = np.full(k, -1, dtype=np.int64)
    for j in range(9):
        b = byte(tz_at + j)
        ends_here = (tz_len < 0) & (b == 32)
        tz_len[ends_here] = j
        if j < 8:
            key |= np.where(tz_len < 0, b, 0).astype(np.uint64) << np.uint64(8 * j)
    ok &= tz_len >= 1
    lit_at = tz_at + np.maximum(tz_len, 0)
    for j, lit in enumerate(head.between):
        ok &= byte(lit_at + j) == lit
    pid_at = lit_at + len(head.between)
    pid = np.zeros(k, dtype=np.int64)
    pid_len = np.zeros(k, dtype=np.int64)
    going = np.ones(k, dtype=bool)
    for j in range(10):
        d = byte(pid_at + j) - 48
        going &= (d >= 0) & (d <= 9)
        pid = np.where(going, pid * 10 + d, pid)
        pid_len += going
    ok &= (pid_len >= 1) & ~going & (starts + pid_at + pid_len <= limits)
    uniq, inverse = np.unique(key, return_inverse=True)
    names = [int(u).to_bytes(8, "little").rstrip(b"\0") for u in uniq.tolist()]
    return ok, ms, inverse.astype(np.int32), names, pid


def _fast_head_compiled(
    arr: np.ndarray, starts: np.ndarray, limits: np.ndarray, head: _Head, zone_ends: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bytes], np.ndarray]:
    """`_fast_head` in one compiled loop per entry (the same bytes read, the same answers)."""
    assert COMPILED is not None
    k = len(starts)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    ok = np.empty(k, dtype=np.uint8)
    ms = np.empty(k, dtype=np.int64)
    key = np.empty(k, dtype=np.uint64)
    pid = np.zeros(k, dtype=np.int64)
    if zone_ends is None:
        limits = np.ascontiguousarray(limits, dtype=np.int64)
        COMPILED.head(arr, starts, limits, head.millis, head.between, ok, ms, key, pid)
    else:
        COMPILED.stamp(arr, starts, np.ascontiguousarray(zone_ends, dtype=np.int64), ok, ms, key)
    uniq, inverse = np.unique(key, return_inverse=True)
    names = [int(u).to_bytes(8, "little").rstrip(b"\0") for u in uniq.tolist()]
    return ok.view(bool), ms, inverse.astype(np.int32), names, pid


_Scanned = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]


def _entries_compiled(buf: bytes, arr: np.ndarray) -> _Scanned:
    """`_entries` in one compiled pass (playbook/collect/serverlog/_scan.c)."""
    assert COMPILED is not None
    lines, entry_count, *columns = COMPILED.scan(buf)
    starts, ends, at = (np.frombuffer(c, dtype=np.int64) for c in columns[:3])
    level, kind = (np.frombuffer(c, dtype=np.int8) for c in columns[3:])
    return lines, starts, ends, at, level, kind, entry_count


def _entries(buf: bytes, arr: np.ndarray) -> _Scanned:
    """(lines, and per entry: start, end without its final newline, the place of its ':  '
    (0: none), level code, kind; entries whose ':  ' follows a capital or a digit) of a
    non-empty block. Entries are the lines not starting with a tab (a continuation) or a
    newline; kind is a _SESSION_HEADS code for LOG session lines, EVENT for entries that may be
    events (FATAL, ERROR, PANIC, WARNING, a LOG wording not known to be harmless), else 0."""
    size = len(buf)
    newlines = np.flatnonzero(arr == 10)
    lines = len(newlines) + (0 if buf[-1] == 10 else 1)
    starts = np.concatenate((np.zeros(1, dtype=np.int64), newlines + 1))
    starts = starts[starts < size]
    first = arr[starts]
    starts = starts[(first != 9) & (first != 10)]  # tab: a continuation line; newline: empty
    n = len(starts)
    if not n:
        empty = np.zeros(0, dtype=np.int64)
        return lines, empty, empty, empty, np.zeros(0, np.int8), np.zeros(0, np.int8), 0
    bounds = np.append(starts, size)
    ends = bounds[1:].copy()
    ends[arr[ends - 1] == 10] -= 1  # without the newline that ends the entry
    entries = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(bounds.astype(np.int32)), pa.py_buffer(buf)]
    )
    pos = _arr(pc.find_substring(entries, ":  ")).astype(np.int64)
    has = (pos > 0) & (starts + pos + 3 <= ends)
    at = np.where(has, starts + pos, 0)

    # The level: the word right before ':  ', not preceded by another capital.
    before = arr[np.clip(at[:, None] - _WINDOW + np.arange(_WINDOW), 0, size - 1)]
    level = np.zeros(n, dtype=np.int8)
    # the last 8 bytes before ':  ' as one integer: a level word is its top len(word) bytes
    key8 = np.ascontiguousarray(before[:, _WINDOW - 8 :]).view("<u8").ravel()
    for code, word in enumerate(_ALL_LEVELS, start=1):
        k = len(word)
        if k <= 8:
            same = (key8 >> np.uint64(8 * (8 - k))) == np.uint64(int.from_bytes(word, "little"))
        else:
            same = (key8 == np.uint64(int.from_bytes(word[-8:], "little"))) & (
                before[:, _WINDOW - k] == word[0]
            )
        prev = before[:, _WINDOW - k - 1]
        same &= (prev < 65) | (prev > 90)
        level[same & has & (level == 0)] = code
    upper = before[:, -1]
    entry_count = int((has & (((upper >= 65) & (upper <= 90)) | ((upper >= 48) & (upper <= 57)))).sum())

    # The first bytes of the message decide what kind of line it is.
    head = arr[np.clip(at[:, None] + 3 + np.arange(17), 0, size - 1)]
    heads = np.ascontiguousarray(head).view("S17").ravel()
    is_log = level == _L_LOG
    kind = np.zeros(n, dtype=np.int8)
    for text, code in _SESSION_HEADS.items():
        kind[is_log & (heads == text)] = code
    head8 = np.ascontiguousarray(head[:, :8]).view("S8").ravel()
    harmless = np.isin(head8, np.array(_HARMLESS_LOG, dtype="S8"))
    for text in _HARMLESS_EXCEPT:
        harmless &= ~np.char.startswith(heads, text[:17])
    candidate = ((level >= 2) & (level <= 5)) | (is_log & (kind == 0) & ~harmless)
    kind[candidate] = EVENT
    return lines, starts, ends, at, level, kind, entry_count


_classified: dict[tuple[bytes, int, bytes, str], tuple[str | None, str]] = {}
_auth_cache: dict[bytes, tuple[str, str, str]] = {}


def _classify(message: bytes, level: int, sqlstate: bytes, language: str) -> tuple[str | None, str]:
    """(event id or None, text) for one entry, cached by its first line, level, SQLSTATE and
    the language it is written in."""
    head = message.split(b"\n\t", 1)[0]
    key = (message if len(message) < 300 else head, level, sqlstate, language)
    found = _classified.get(key)
    if found is None:
        if len(_classified) > 50_000:  # messages with ids in them: stay bounded
            _classified.clear()
        level_text = _ALL_LEVELS[level - 1].decode()
        kind = log_events.classify(
            head.decode("utf-8", "replace"), level_text, sqlstate.decode() or None, language
        )
        text = message.replace(b"\n\t", b"\n").decode("utf-8", "replace") if kind else ""
        found = _classified[key] = (kind.id if kind else None, text)
    if found[0] is not None and len(message) >= 300:
        return found[0], message.replace(b"\n\t", b"\n").decode("utf-8", "replace")
    return found


def _auth(message: bytes) -> tuple[str, str, str]:
    found = _auth_cache.get(message)
    if found is None:
        if len(_auth_cache) > 50_000:
            _auth_cache.clear()
        text = message.rstrip(b"\n")
        match = _AUTH_LENIENT.match(text)
        groups = match.groups() if match else (b"", b"", b"")
        u, d, a = (clean_name(g) for g in groups)
        found = _auth_cache[message] = (u, d, a)
    return found


# a "(" that opens a group: after an even number of backslashes (re.escape writes a prefix's
# literal backslash as two), not followed by "?"
_GROUP = re.compile(r"(?<!\\)((?:\\\\)*)\((?!\?)")


def _named(pattern: str) -> str:
    """pyarrow's extract_regex wants named groups: (x) -> (?P<g0>x)."""
    count = iter(range(100))
    return _GROUP.sub(lambda m: f"{m.group(1)}(?P<g{next(count)}>", pattern)


def _arr(values: pa.Array) -> np.ndarray:
    """A pyarrow array as numpy. Integers, floats and booleans without nulls are read from the
    array's buffers: pyarrow's own conversions (to_numpy, pa.array, scalars) load pandas on
    first use, which `playbook logs` on a stderr log otherwise never needs (half a second)."""
    kind = values.type
    if values.null_count == 0 and len(values):
        first, n = values.offset, len(values)
        data = values.buffers()[1]
        if pa.types.is_boolean(kind):
            bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=first + n, bitorder="little")
            return bits[first:].astype(bool)
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            letter = "f" if pa.types.is_floating(kind) else "i" if pa.types.is_signed_integer(kind) else "u"
            return np.frombuffer(data, dtype=f"<{letter}{kind.bit_width // 8}")[first : first + n]
    return np.asarray(values.to_numpy(zero_copy_only=False))


def _bools(values: np.ndarray) -> pa.Array:
    """pa.array(values) for a numpy bool array, built from buffers (see _arr)."""
    bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _binaries(values: list[bytes | None]) -> pa.Array:
    """pa.array(values, pa.binary()), built from buffers (see _arr)."""
    valid = np.array([v is not None for v in values], dtype=bool)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(v) if v is not None else 0 for v in values])
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    data = pa.py_buffer(b"".join(v for v in values if v is not None))
    return pa.Array.from_buffers(pa.binary(), len(values), [validity, pa.py_buffer(offsets), data])


def _scalar(value: bytes | None) -> pa.Scalar:
    """pa.scalar(value, pa.binary()), taken from an array built from buffers (see _arr)."""
    return _binaries([value])[0]


def _indices(values: np.ndarray, nulls: np.ndarray | None = None) -> pa.Array:
    """pa.array(values, mask=nulls) for int64 positions, built from buffers (see _arr)."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    validity = None
    if nulls is not None and nulls.any():
        validity = pa.py_buffer(np.packbits(~nulls, bitorder="little"))
    return pa.Array.from_buffers(pa.int64(), len(data), [validity, pa.py_buffer(data)])


def _pids(values: pa.Array | None, n: int) -> np.ndarray:
    """Process ids of a binary column (int64): 1 to 18 digits, else 0. A longer run of digits
    is no pid, and casting it would overflow and abort the whole read."""
    pid = np.zeros(n, dtype=np.int64)
    if values is None or not n:
        return pid
    digits = _arr(pc.match_substring_regex(values, r"^[0-9]{1,18}$").fill_null(_bools(np.zeros(1, bool))[0]))
    if digits.any():
        pid[digits] = _arr(pc.cast(values.filter(_bools(digits)).cast(pa.string()), pa.int64()))
    return pid


def _coded(values: pa.Array | None, n: int, host: bool = False) -> Coded:
    """A binary column (nulls as "") as codes into its distinct values."""
    if values is None:
        return Coded.constant("", n)
    if COMPILED is not None and len(values):
        # hashed and cleaned in C straight from the column's buffers; a null reads as ""
        _, offsets, data = values.buffers()
        first = values.offset
        bounds = np.frombuffer(offsets, dtype=np.int32)[first : first + len(values) + 1].astype(np.int64)
        starts, ends = bounds[:-1], bounds[1:]
        if values.null_count:
            ends = np.where(_arr(values.is_valid()), ends, starts)
        codes, names = COMPILED.encode(data if data is not None else b"", starts, ends, 2 if host else 1)
        return Coded(np.frombuffer(codes, dtype=np.int32), names or [""])
    encoded = pc.dictionary_encode(values.fill_null(_scalar(b"")))
    return Coded(_arr(encoded.indices).astype(np.int32), _names(encoded.dictionary.to_pylist(), host) or [""])


def _names(raw: list[bytes], host: bool = False) -> list[str]:
    """Distinct raw names as the frames show them (clean_name; then host_of for hosts), each
    worked out once per process (the same few names fill every block)."""
    cache = _HOSTS if host else _NAMES
    if len(cache) > 200_000:  # names with ids in them: stay bounded
        cache.clear()
    get = cache.get
    names = []
    for v in raw:
        name = get(v)
        if name is None:
            name = cache[v] = host_of(clean_name(v)) if host else clean_name(v)
        names.append(name)
    return names


class _Messages:
    """The kept entries' messages (buf[starts[i]:ends[i]]) and what is read from them: the
    compiled loops when there are, else pyarrow over one binary column (the reference)."""

    def __init__(self, buf: bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        self.buf, self.starts, self.ends = buf, starts, ends
        self.column: pa.Array | None = None
        if COMPILED is None:
            # one binary array over the block's buffer: every other slice of [0, s0, e0, s1, ...]
            k = len(starts)
            bounds = np.empty(2 * k + 2, dtype=np.int32)
            bounds[0], bounds[-1] = 0, len(buf)
            bounds[1:-1:2], bounds[2:-1:2] = starts, ends
            buffers = [None, pa.py_buffer(bounds), pa.py_buffer(buf)]
            column = pa.Array.from_buffers(pa.binary(), 2 * k + 1, buffers)
            self.column = column.take(_indices(np.arange(1, 2 * k + 1, 2)))

    def distinct(self, rows: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
        """(int64 codes, distinct messages in order of first appearance) of `rows`."""
        if self.column is not None:
            return _distinct(self.column.take(_indices(rows)))
        assert COMPILED is not None
        codes, values = COMPILED.encode(self.buf, self.starts[rows], self.ends[rows], 0)
        return np.frombuffer(codes, dtype=np.int32).astype(np.int64), values

    def _text(self, row: int) -> bytes:
        return self.buf[int(self.starts[row]) : int(self.ends[row])].rstrip(b"\n")

    def _encoded(
        self, starts: np.ndarray, ends: np.ndarray, patch: dict[int, bytes], host: bool = False
    ) -> Coded:
        """The slices as a Coded column of names (cleaned in C, as _names would), rows in
        `patch` taking the raw value given there."""
        assert COMPILED is not None
        starts, ends = np.ascontiguousarray(starts), np.ascontiguousarray(ends)
        raw, values = COMPILED.encode(self.buf, starts, ends, 2 if host else 1)
        codes = np.frombuffer(raw, dtype=np.int32)  # a bytearray's: writable
        if patch:
            first = len(values)
            index: dict[bytes, int] = {}
            for j, value in patch.items():
                codes[j] = first + index.setdefault(value, len(index))
            values += _names(list(index), host)
        return Coded(codes, values or [""])

    def received(self, rows: np.ndarray) -> Coded:
        """The hosts of 'connection received' lines (the lenient regex for odd ones)."""
        if self.column is not None:
            (hosts,) = _session_fields(self.column.take(_indices(rows)), False, _RECV_LENIENT, (1,))
            return _coded(hosts, len(rows), True)
        assert COMPILED is not None
        ok, _, fields = COMPILED.session_fields(self.buf, self.starts[rows], self.ends[rows], False)
        bounds = np.frombuffer(fields, dtype=np.int64).reshape(-1, 2)
        patch = {}
        for j in np.flatnonzero(np.frombuffer(ok, dtype=np.uint8) == 0).tolist():
            match = _RECV_LENIENT.match(self._text(int(rows[j])))
            patch[j] = (match.group(1) or b"") if match else b""
        return self._encoded(bounds[:, 0], bounds[:, 1], patch, host=True)

    def disconnected(self, rows: np.ndarray) -> tuple[tuple[np.ndarray, ...], tuple[Coded, Coded, Coded]]:
        """((hours, minutes, seconds), (user, database, host)) of disconnection lines (NaN
        where the lenient regex finds no time either)."""
        if self.column is not None:
            got = _session_fields(self.column.take(_indices(rows)), True, _DISC_LENIENT, (1, 2, 3, 4, 5, 6))
            n = len(rows)
            return tuple(_floats(col) for col in got[:3]), (
                _coded(got[3], n),
                _coded(got[4], n),
                _coded(got[5], n, True),
            )
        assert COMPILED is not None
        ok, raw_hms, fields = COMPILED.session_fields(self.buf, self.starts[rows], self.ends[rows], True)
        hms = np.frombuffer(raw_hms, dtype=np.float64).reshape(-1, 3)  # writable
        bounds = np.frombuffer(fields, dtype=np.int64).reshape(-1, 6)
        patches: tuple[dict[int, bytes], ...] = ({}, {}, {})
        for j in np.flatnonzero(np.frombuffer(ok, dtype=np.uint8) == 0).tolist():
            match = _DISC_LENIENT.match(self._text(int(rows[j])))
            groups = [(match.group(g) or b"") if match else b"" for g in range(1, 7)]
            hms[j] = [float(g) if g else np.nan for g in groups[:3]]
            for patch, value in zip(patches, groups[3:], strict=True):
                patch[j] = value
        names = tuple(
            self._encoded(bounds[:, 2 * i], bounds[:, 2 * i + 1], patches[i], host=i == 2) for i in range(3)
        )
        return (hms[:, 0], hms[:, 1], hms[:, 2]), (names[0], names[1], names[2])


_NAMES: dict[bytes, str] = {}
_HOSTS: dict[bytes, str] = {}


def parse_block(buf: bytes, spec: StderrSpec, clock: Clock, language: str = ENGLISH) -> Rows:
    """The rows worth keeping from `buf`, which holds whole entries (the file's last piece may
    lack its final newline). Counts every line and every entry for the summary. `language`:
    what the messages are written in (the level words and session lines are English already:
    serverlog.language rewrote them)."""
    size = len(buf)
    if not size:
        return Rows.empty()
    arr = np.frombuffer(buf, dtype=np.uint8)
    lines, starts, ends, at, level, kind, entry_count = (_entries if COMPILED is None else _entries_compiled)(
        buf, arr
    )
    n = len(starts)
    if not n:
        rows = Rows.empty()
        rows.lines, rows.bytes_read = lines, size
        return rows
    bounds = np.append(starts, size)
    entries = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(bounds.astype(np.int32)), pa.py_buffer(buf)]
    )
    keep = np.flatnonzero(kind > 0)

    # Prefix fields of the kept entries: time, zone and pid with numpy where the prefix allows
    # it (spec.head), the names with RE2 on the entries whose names the frames use.
    kinds = kind[keep]
    k = len(keep)
    fast_ok = np.zeros(k, dtype=bool)
    if spec.head is not None and k:
        fast_ok, fast_ms, tz_codes, tz_names, fast_pid = _fast_head(arr, starts[keep], at[keep], spec.head)
    need = ~fast_ok
    if not spec.names_on_session_lines:
        # a connection received is logged before the startup packet names anyone ("[unknown]"
        # for %u and %d): its host comes from the message, and only events need the names
        need |= kinds == EVENT
    else:
        need[:] = True
    ok = fast_ok.copy()
    scatter = np.full(k, -1, dtype=np.int64)
    pieces: list[tuple[dict[str, pa.Array | None], int]] = []  # (regex columns, rows)
    done = 0
    for rows_at, passes, program in (
        (
            np.flatnonzero(need & fast_ok),
            spec.names.passes if spec.names is not None else [],
            spec.names_program,
        ),
        (np.flatnonzero(need & ~fast_ok), spec.fast.passes, None),
    ):
        if not len(rows_at):
            continue
        got, got_ok = _prefix_fields(entries, keep[rows_at], buf, starts, ends, spec, passes, program)
        ok[rows_at] = got_ok
        scatter[rows_at] = done + np.arange(len(rows_at))
        done += len(rows_at)
        pieces.append((got, len(rows_at)))
    # every regex column at full length (null where the regex did not run)
    index = _indices(scatter, nulls=scatter < 0)
    fields: dict[str, pa.Array | None] = {}
    for name in (n for _, g in spec.fast.passes for n in g):
        if all(got.get(name) is None for got, _ in pieces):
            fields[name] = None
            continue
        parts: list[pa.Array] = []
        for got, size_ in pieces:
            column = got.get(name)
            parts.append(column.cast(pa.binary()) if column is not None else pa.nulls(size_, pa.binary()))
        fields[name] = pa.concat_arrays(parts).take(index)
    sel = np.flatnonzero(ok)
    keep = keep[sel]
    k = len(keep)
    take_sel = _indices(sel)
    fields = {name: (col.take(take_sel) if col is not None else None) for name, col in fields.items()}
    kinds = kinds[sel]
    fast = fast_ok[sel]
    ts_col = fields.get("ts")
    if spec.head is not None or ts_col is not None:
        if ts_col is not None:
            naive = _arr(pc.cast(ts_col.cast(pa.string()), pa.timestamp("ms"))).astype("datetime64[ms]")
            zones = _coded(fields["tz"], k)
        else:
            naive = np.full(k, np.datetime64("NaT"), dtype="datetime64[ms]")
            zones = Coded.constant("", k)
        if spec.head is not None and fast.any():
            naive[fast] = fast_ms[sel][fast].astype("datetime64[ms]")
            codes = zones.codes.copy()
            codes[fast] = tz_codes[sel][fast] + len(zones.values)
            zones = Coded(codes, zones.values + [clean_name(n) for n in tz_names])
        ts = clock.to_utc(naive, zones)
    elif "epoch" in fields and fields["epoch"] is not None:
        ts = epoch_to_utc(_arr(pc.cast(fields["epoch"].cast(pa.string()), pa.float64())))
    else:
        ts = np.full(k, np.datetime64("NaT"), dtype="datetime64[ms]")
    pid = _pids(fields.get("pid"), k)
    if spec.head is not None and fast.any():
        pid[fast] = fast_pid[sel][fast]
    sqlstate_col = fields.get("sqlstate")
    user = _coded(fields.get("user"), k)
    database = _coded(fields.get("database"), k)
    application = _coded(fields.get("application"), k)
    host = _coded(fields.get("host") if fields.get("host") is not None else fields.get("host_port"), k, True)
    sqlstate = _coded(sqlstate_col, k)

    # Messages: bytes after ':  ' up to the entry's end (continuation lines included)
    messages = _Messages(buf, at[keep] + 3, ends[keep])
    levels = level[keep]
    event = Coded.constant("", k)
    message = Coded.constant("", k)
    detail: dict[int, str] = {}  # row -> its DETAIL: most rows have none
    session_s = np.full(k, np.nan)
    drop = np.zeros(k, dtype=bool)
    user_v, db_v, app_v, host_v = (list(c.values) for c in (user, database, application, host))
    user_c, db_c, app_c, host_c = (c.codes.copy() for c in (user, database, application, host))
    ev_codes, ev_values = event.codes.copy(), list(event.values)
    msg_codes, msg_values = message.codes.copy(), list(message.values)

    def put(codes: np.ndarray, values: list[str], rows_: np.ndarray, column: Coded) -> None:
        """Rows `rows_` take their names from `column` (a dictionary appended to `values`)."""
        codes[rows_] = column.codes + len(values)
        values.extend(column.values)

    # Entries that may be events: classified once per distinct (message, level, SQLSTATE).
    ev = np.flatnonzero(kinds == EVENT)
    if len(ev):
        text_codes, text_values = messages.distinct(ev)
        state_codes = sqlstate.codes[ev].astype(np.int64)
        key = (text_codes.astype(np.int64) * 8 + levels[ev]) * (len(sqlstate.values) + 1) + state_codes
        uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        found = [
            _classify(
                text_values[text_codes[f]],
                int(levels[ev[f]]),
                sqlstate.values[state_codes[f]].encode() if sqlstate_col is not None else b"",
                language,
            )
            for f in first.tolist()
        ]
        ids = [f[0] for f in found]
        unknown = np.array([i is None for i in ids], dtype=bool)[inverse]
        drop[ev[unknown]] = True
        put(ev_codes, ev_values, ev, Coded(inverse.astype(np.int32), [i or "" for i in ids]))
        put(msg_codes, msg_values, ev, Coded(inverse.astype(np.int32), [f[1] for f in found]))
    auth = np.flatnonzero(kinds == AUTH)
    if len(auth):
        text_codes, text_values = messages.distinct(auth)
        parsed = [_auth(t) for t in text_values]
        codes32 = text_codes.astype(np.int32)
        put(ev_codes, ev_values, auth, Coded.constant("connection_authorized", len(auth)))
        for codes, values, j in ((user_c, user_v, 0), (db_c, db_v, 1), (app_c, app_v, 2)):
            put(codes, values, auth, Coded(codes32, [p[j] for p in parsed] or [""]))
    recv = np.flatnonzero(kinds == RECV)
    if len(recv):
        put(ev_codes, ev_values, recv, Coded.constant("connection_received", len(recv)))
        put(host_c, host_v, recv, messages.received(recv))
    disc = np.flatnonzero(kinds == DISC)
    if len(disc):
        (h, m, sec), (d_user, d_db, d_host) = messages.disconnected(disc)
        session_s[disc] = np.round(h * 3600 + m * 60 + sec, 3)  # the log has milliseconds
        put(ev_codes, ev_values, disc, Coded.constant("disconnection", len(disc)))
        put(user_c, user_v, disc, d_user)
        put(db_c, db_v, disc, d_db)
        put(host_c, host_v, disc, d_host)
    # every host value went through host_of (_names)
    ev_rows = ev.tolist()

    # A DETAIL belongs to the entry before it when only secondary lines come between.
    details = np.flatnonzero(level == _L_DETAIL)
    if len(details) and ev_rows:
        secondary = level > len(_LEVELS)
        last_primary = np.maximum.accumulate(np.where(secondary, -1, np.arange(n)))
        row_of = {int(keep[j]): j for j in ev_rows}
        for d in details.tolist():
            j = row_of.get(int(last_primary[d]), -1)
            if j >= 0 and not drop[j] and not detail.get(j):
                text = buf[int(at[d]) + 3 : int(ends[d])]
                detail[j] = text.replace(b"\n\t", b"\n").decode("utf-8", "replace")

    level_names = ["", *(w.decode() for w in _ALL_LEVELS)]
    rows = Rows(
        kind=kinds,
        ts=ts,
        pid=pid,
        session_s=session_s,
        coded={
            "event": Coded(ev_codes, ev_values),
            "level": Coded(levels.astype(np.int32), level_names),
            "sqlstate": sqlstate,
            "user": Coded(user_c, user_v),
            "database": Coded(db_c, db_v),
            "application": Coded(app_c, app_v),
            "host": Coded(host_c, host_v or [""]),
            "message": Coded(msg_codes, msg_values),
            "detail": _details(detail, k),
        },
    )
    if drop.any():
        rows = rows.take(np.flatnonzero(~drop))
    rows.lines, rows.entries, rows.bytes_read = lines, entry_count, size
    return rows


def _details(detail: dict[int, str], k: int) -> Coded:
    """The detail column of k rows from the few that have one (Coded.texts of the full list)."""
    codes = np.zeros(k, dtype=np.int32)
    index = {"": 0}
    for j, text in detail.items():
        codes[j] = index.setdefault(text, len(index))
    return Coded(codes, list(index))


def _prefix_fields(
    entries: pa.Array,
    at: np.ndarray,
    buf: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    spec: StderrSpec,
    passes: list[tuple[str, list[str]]],
    program: FieldProgram | None = None,
) -> tuple[dict[str, pa.Array | None], np.ndarray]:
    """Prefix fields of the entries at `at` (the block's binary entries, which span
    buf[starts[i]:ends[i]]) by `passes`, and which of them the prefix matched (the lenient regex
    for those the passes miss). With a `program` for the same fields and the compiled loops, the
    program reads the entries from `buf` and the passes only those it cannot: their copy as a
    binary column is made only then."""
    k = len(at)
    first, last = starts[at], ends[at]
    names = [name for _, group in passes for name in group]
    columns: dict[str, pa.Array | None] = {name: None for name in names}
    if not k:
        return columns, np.zeros(0, dtype=bool)
    if program is not None and COMPILED is not None and list(program.names) == names:
        raw_ok, pairs = COMPILED.prefix_fields(buf, first, last, program.ops, len(program.names))
        ok = np.frombuffer(raw_ok, dtype=np.uint8).astype(bool)
        for name, (offsets, data) in zip(program.names, pairs, strict=True):
            buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
            columns[name] = pa.Array.from_buffers(pa.binary(), k, buffers)
        missed = np.flatnonzero(~ok)
        if len(missed):
            got, got_ok = _prefix_fields(entries, at[missed], buf, starts, ends, spec, passes)
            mask = _bools(~ok)
            for name in names:
                column, read = columns[name], got[name]
                assert column is not None and read is not None
                columns[name] = pc.replace_with_mask(column, mask, read.cast(pa.binary()))
            ok[missed] = got_ok
        return columns, ok
    sub = entries.take(_indices(at))
    ok = np.ones(k, dtype=bool)
    for pattern, group in passes:
        found = pc.extract_regex(sub, _named(pattern))
        ok &= _arr(found.is_valid())
        for j, name in enumerate(group):
            columns[name] = found.field(j)
    missed = np.flatnonzero(~ok)
    if len(missed):
        # Entries of processes that print no session part (%q), or names with odd characters.
        patch: dict[str, list[bytes | None]] = {name: [None] * len(missed) for name in names}
        fixed = np.zeros(len(missed), dtype=bool)
        lenient_names = spec.lenient.fields
        for j, e in enumerate(missed.tolist()):
            match = spec.lenient.regex.match(b"\n" + buf[int(first[e]) : int(last[e])])
            if match is None:
                continue
            fixed[j] = True
            for name, value in zip(lenient_names, match.groups(), strict=True):
                if name in patch:
                    patch[name][j] = value
        mask = np.zeros(k, dtype=bool)
        mask[missed] = True
        for name in names:
            column = columns[name]
            assert column is not None
            columns[name] = pc.replace_with_mask(column, _bools(mask), _binaries(patch[name]))
        ok[missed[fixed]] = True
    return columns, ok


def _floats(values: pa.Array) -> np.ndarray:
    """Numbers of a binary column; empty or null: NaN."""
    text = pc.if_else(pc.equal(values, _scalar(b"")), _scalar(None), values).cast(pa.string())
    nan = pa.Array.from_buffers(pa.float64(), 1, [None, pa.py_buffer(np.array([np.nan]))])[0]
    return _arr(pc.cast(text, pa.float64()).fill_null(nan)).astype(np.float64)


def _distinct(values: pa.Array) -> tuple[np.ndarray, list[bytes]]:
    """(codes, distinct values) of a binary column, hashed in C."""
    encoded = pc.dictionary_encode(values)
    return _arr(encoded.indices).astype(np.int64), encoded.dictionary.to_pylist()


_TIME = r"^\d+:\d+:\d+(?:\.\d+)?$"


def _split_fields(texts: pa.Array, disconnection: bool) -> tuple[list[pa.Array], np.ndarray]:
    """'connection received: host=H[ port=P]' -> [H]; 'disconnection: session time: H:M:S
    user=U database=D host=H[ port=P]' -> [H, M, S, U, D, H]; and which rows had that shape."""
    n = len(texts)
    parts = pc.split_pattern(texts, " ")
    offsets = _arr(parts.offsets)[:-1].astype(np.int64)
    counts = _arr(pc.list_value_length(parts)).astype(np.int64)
    values = parts.values
    shape: tuple[tuple[int, bytes, bool], ...]
    if disconnection:
        shape = ((0, b"disconnection:", True), (1, b"session", True), (2, b"time:", True),
                 (4, b"user=", False), (5, b"database=", False), (6, b"host=", False))  # fmt: skip
        ok = (counts == 7) | (counts == 8)
    else:
        shape = ((0, b"connection", True), (1, b"received:", True), (2, b"host=", False))
        ok = counts >= 3
    if not len(values):
        return [pa.nulls(n, pa.binary())] * (6 if disconnection else 1), np.zeros(n, dtype=bool)
    last = np.maximum(offsets + counts - 1, 0)

    def token(i: int) -> pa.Array:
        return values.take(_indices(np.minimum(offsets + i, last)))

    fields: list[pa.Array] = []
    for i, text, exact in shape:
        t = token(i)
        if exact:
            ok &= _arr(pc.equal(t, _scalar(text)))
        else:
            ok &= _arr(pc.starts_with(t, text))
            fields.append(pc.binary_slice(t, len(text), 1 << 30))
    if not disconnection:
        return fields, ok
    port = token(7)
    ok &= (counts == 7) | _arr(pc.starts_with(port, b"port="))
    clock = token(3)
    ok &= _arr(pc.match_substring_regex(clock, _TIME))
    hms = pc.split_pattern(pc.if_else(_bools(ok), clock, _scalar(b"0:0:0")), ":")
    flat = hms.values
    start = _arr(hms.offsets)[:-1].astype(np.int64)
    return [flat.take(_indices(start + j)) for j in range(3)] + fields, ok


def _session_fields(
    texts: pa.Array, disconnection: bool, lenient: re.Pattern[bytes], groups: tuple[int, ...]
) -> list[pa.Array]:
    """Fields of session lines (their messages) as binary columns: split on spaces (what the
    lenient regex would take, checked token by token), the lenient regex on the odd ones
    (names with spaces)."""
    columns, ok = _split_fields(texts, disconnection)
    missed = np.flatnonzero(~ok)
    if len(missed):
        patch: list[list[bytes | None]] = [[None] * len(missed) for _ in columns]
        for j, e in enumerate(missed.tolist()):
            match = lenient.match(texts[e].as_py().rstrip(b"\n"))
            for col, g in zip(patch, groups, strict=False):
                col[j] = (match.group(g) or b"") if match else b""
        mask = np.zeros(len(texts), dtype=bool)
        mask[missed] = True
        columns = [
            pc.replace_with_mask(col, _bools(mask), _binaries(values))
            for col, values in zip(columns, patch, strict=False)
        ]
    return columns

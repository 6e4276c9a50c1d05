"""stderr logs (any log_line_prefix): one block of whole entries into the rows worth keeping.

Most entries cannot end a session (statement durations, checkpoints), so nothing is parsed
before it is known to matter (the prefilter): the entries (lines not starting with a tab), each
entry's ':  ' after the level, the level word and the first bytes of the message are compared
against the few that count (serverlog.rules): session lines of log_connections and
log_disconnections, and entries at FATAL, ERROR, PANIC, WARNING or a LOG wording not known to be
harmless. The engine (serverlog.engine) does this in one C pass (_scan.scan), or with numpy and
pyarrow (`_entries`, the reference).

Only the kept entries are split:
- time, zone and pid: at fixed byte places when the prefix starts '%m [%p' or '%t [%p' (any
  literal between zone and pid; serverlog.stamps), else with RE2 through pyarrow;
- names (%u, %d, %a, %h, %e): a field program in C or RE2 through pyarrow, only on the entries
  whose names the frames use (session lines carry theirs in the message), the lenient Python
  regex for the entries they miss (names with odd characters, %q lines of non-session processes);
- session lines and other messages: serverlog.messages (events classified once per distinct
  message, level and SQLSTATE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from playbook.collect.serverlog import engine
from playbook.collect.serverlog.arrow_buffers import as_numpy, binary_array, bool_array, index_array
from playbook.collect.serverlog.messages import Messages, classify_message, coded_names, login_names, pids_of
from playbook.collect.serverlog.prefix import (
    FastPrefix,
    FieldProgram,
    PrefixRegex,
    compile_prefix,
    fast_prefix,
    field_program,
)
from playbook.collect.serverlog.rows import AUTH, CODED, DISC, EVENT, RECV, TEXT, Coded, Rows, clean_name
from playbook.collect.serverlog.rules import (
    ALL_LEVEL_WORDS,
    HARMLESS_EXCEPT,
    HARMLESS_LOG,
    LEVEL_DETAIL,
    LEVEL_LOG,
    LEVEL_WINDOW,
    LEVEL_WORDS,
    SESSION_HEADS,
)
from playbook.collect.serverlog.stamps import FixedHead, read_fixed_heads
from playbook.collect.serverlog.times import Clock, epoch_to_utc
from playbook.vocabulary.translations import ENGLISH


@dataclass
class StderrSpec:
    """What the stderr parser needs to know about a file's prefix; picklable for --jobs."""

    prefix: str
    lenient: PrefixRegex = field(init=False)
    fast: FastPrefix = field(init=False)
    head: FixedHead | None = field(init=False)
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


def _head_of(prefix: str) -> FixedHead | None:
    for esc, millis in (("%m", True), ("%t", False)):
        if not prefix.startswith(esc):
            continue
        rest = prefix[len(esc) :]
        at = rest.find("%p")
        between = rest[:at] if at > 0 else ""
        if between.startswith(" ") and len(between) <= 8 and "%" not in between:
            return FixedHead(millis, between.encode())
    return None


class _Scanned(NamedTuple):
    """A block's entries: per entry its start, its end (without the final newline), the place
    of its ':  ' (0: none), its level code and kind; and the block's line and entry counts."""

    lines: int
    starts: np.ndarray
    ends: np.ndarray
    at: np.ndarray
    level: np.ndarray
    kind: np.ndarray
    entry_count: int


def _entries_compiled(buf: bytes, arr: np.ndarray) -> _Scanned:
    """`_entries` in one compiled pass (playbook/collect/serverlog/_scan.c)."""
    compiled = engine.ENGINE.scan
    assert compiled is not None
    lines, entry_count, *columns = compiled.scan(buf)
    starts, ends, at = (np.frombuffer(c, dtype=np.int64) for c in columns[:3])
    level, kind = (np.frombuffer(c, dtype=np.int8) for c in columns[3:])
    return _Scanned(lines, starts, ends, at, level, kind, entry_count)


def _entries(buf: bytes, arr: np.ndarray) -> _Scanned:
    """(lines, and per entry: start, end without its final newline, the place of its ':  '
    (0: none), level code, kind; entries whose ':  ' follows a capital or a digit) of a
    non-empty block, entry by entry (the reference of _scan.scan). Entries are the lines not
    starting with a tab (a continuation) or a newline; kind is a SESSION_HEADS code for LOG
    session lines, EVENT for entries that may be events (FATAL, ERROR, PANIC, WARNING, a LOG
    wording not known to be harmless), else 0. Bytes read past either end of the block read its
    first or last byte (the C loop reads the same)."""
    size = len(buf)
    lines = buf.count(b"\n") + (0 if buf[-1] == 10 else 1)
    line_starts = [0]
    newline = buf.find(b"\n")
    while newline >= 0:
        line_starts.append(newline + 1)
        newline = buf.find(b"\n", newline + 1)
    starts = [s for s in line_starts if s < size and buf[s] not in (9, 10)]  # tab: continuation
    ends, ats, levels, kinds = [], [], [], []
    entry_count = 0

    def near(at: int, length: int) -> bytes:
        if at >= 0 and at + length <= size:
            return buf[at : at + length]
        return bytes(buf[min(max(i, 0), size - 1)] for i in range(at, at + length))

    for start, bound in zip(starts, [*starts[1:], size], strict=True):
        end = bound - 1 if buf[bound - 1] == 10 else bound  # without the newline that ends it
        found = buf.find(b":  ", start, bound)
        at = found if found > start and found + 3 <= end else 0
        level = kind = 0
        if at:
            # the level: the word right before ':  ', not preceded by another capital
            before = near(at - LEVEL_WINDOW, LEVEL_WINDOW)
            for code, word in enumerate(ALL_LEVEL_WORDS, start=1):
                if before.endswith(word) and not 65 <= before[-len(word) - 1] <= 90:
                    level = code
                    break
            entry_count += before[-1] in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            # the first bytes of the message decide what kind of line it is
            head = near(at + 3, 17)
            harmless = head[:8] in HARMLESS_LOG and not any(head.startswith(t[:17]) for t in HARMLESS_EXCEPT)
            if level == LEVEL_LOG:
                kind = SESSION_HEADS.get(head, 0) or (0 if harmless else EVENT)
            elif 2 <= level <= 5:
                kind = EVENT
        ends.append(end)
        ats.append(at)
        levels.append(level)
        kinds.append(kind)
    return _Scanned(
        lines,
        np.array(starts, dtype=np.int64),
        np.array(ends, dtype=np.int64),
        np.array(ats, dtype=np.int64),
        np.array(levels, dtype=np.int8),
        np.array(kinds, dtype=np.int8),
        entry_count,
    )


# a "(" that opens a group: after an even number of backslashes (re.escape writes a prefix's
# literal backslash as two), not followed by "?"
_GROUP = re.compile(r"(?<!\\)((?:\\\\)*)\((?!\?)")


def _named(pattern: str) -> str:
    """pyarrow's extract_regex wants named groups: (x) -> (?P<g0>x)."""
    count = iter(range(100))
    return _GROUP.sub(lambda m: f"{m.group(1)}(?P<g{next(count)}>", pattern)


class _Heads(NamedTuple):
    """Time, zone and pid of kept entries read at fixed places (stamps.read_fixed_heads);
    the regexes read the rows not `ok`."""

    ok: np.ndarray
    ms: np.ndarray
    zone_codes: np.ndarray
    zone_names: list[bytes]
    pid: np.ndarray

    def take(self, rows: np.ndarray) -> _Heads:
        return _Heads(self.ok[rows], self.ms[rows], self.zone_codes[rows], self.zone_names, self.pid[rows])


def parse_block(buf: bytes, spec: StderrSpec, clock: Clock, language: str = ENGLISH) -> Rows:
    """The rows worth keeping from `buf`, which holds whole entries (the file's last piece may
    lack its final newline). Counts every line and every entry for the summary. `language`:
    what the messages are written in (the level words and session lines are English already:
    serverlog.language rewrote them)."""
    size = len(buf)
    if not size:
        return Rows.empty()
    arr = np.frombuffer(buf, dtype=np.uint8)
    scanned = (_entries if engine.ENGINE.scan is None else _entries_compiled)(buf, arr)
    lines, starts, ends, at, level, kind, entry_count = scanned
    if not len(starts):
        rows = Rows.empty()
        rows.lines, rows.bytes_read = lines, size
        return rows
    keep, fields, heads = _prefix_fields_of_kept(buf, arr, scanned, spec)
    k = len(keep)
    ts = _times(fields, heads, spec, clock, k)
    pid = pids_of(fields.get("pid"), k)
    if heads is not None and heads.ok.any():
        pid[heads.ok] = heads.pid[heads.ok]
    host = fields.get("host") if fields.get("host") is not None else fields.get("host_port")
    sqlstate = coded_names(fields.get("sqlstate"), k)
    rows = Rows(
        kind=kind[keep],
        ts=ts,
        pid=pid,
        session_s=np.full(k, np.nan),
        coded={
            "level": Coded(level[keep].astype(np.int32), ["", *(w.decode() for w in ALL_LEVEL_WORDS)]),
            "sqlstate": sqlstate,
            "user": coded_names(fields.get("user"), k),
            "database": coded_names(fields.get("database"), k),
            "application": coded_names(fields.get("application"), k),
            "host": coded_names(host, k, True),
        },
    )
    has_sqlstate = fields.get("sqlstate") is not None
    drop = _read_messages(rows, Messages(buf, at[keep] + 3, ends[keep]), has_sqlstate, language)
    rows.coded["detail"] = _details(buf, scanned, keep, drop)
    rows.coded = {name: rows.coded[name] for name in (*CODED, *TEXT)}
    if drop.any():
        rows = rows.take(np.flatnonzero(~drop))
    rows.lines, rows.entries, rows.bytes_read = lines, entry_count, size
    return rows


def _prefix_fields_of_kept(
    buf: bytes, arr: np.ndarray, scanned: _Scanned, spec: StderrSpec
) -> tuple[np.ndarray, dict[str, pa.Array | None], _Heads | None]:
    """(the kept entries the prefix matched, their prefix fields, their fixed-place heads): time,
    zone and pid at fixed places where the prefix allows it (spec.head), the names with RE2 (or
    a field program) on the entries whose names the frames use."""
    _, starts, ends, at, _, kind, _ = scanned
    keep = np.flatnonzero(kind > 0)
    kinds = kind[keep]
    k = len(keep)
    heads = None
    fast_ok = np.zeros(k, dtype=bool)
    if spec.head is not None and k:
        heads = _Heads(*read_fixed_heads(arr, starts[keep], at[keep], spec.head))
        fast_ok = heads.ok
    need = ~fast_ok
    if not spec.names_on_session_lines:
        # a connection received is logged before the startup packet names anyone ("[unknown]"
        # for %u and %d): its host comes from the message, and only events need the names
        need |= kinds == EVENT
    else:
        need[:] = True
    entries = pa.Array.from_buffers(
        pa.binary(),
        len(starts),
        [None, pa.py_buffer(np.append(starts, len(buf)).astype(np.int32)), pa.py_buffer(buf)],
    )
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
    # every regex column at the kept entries the prefix matched (null where no regex ran)
    sel = np.flatnonzero(ok)
    index = index_array(scatter[sel], nulls=scatter[sel] < 0)
    fields: dict[str, pa.Array | None] = {}
    for name in (n for _, g in spec.fast.passes for n in g):
        if all(got.get(name) is None for got, _ in pieces):
            fields[name] = None
            continue
        parts: list[pa.Array] = []
        for got, size in pieces:
            column = got.get(name)
            parts.append(column.cast(pa.binary()) if column is not None else pa.nulls(size, pa.binary()))
        fields[name] = pa.concat_arrays(parts).take(index)
    return keep[sel], fields, None if heads is None else heads.take(sel)


def _times(
    fields: dict[str, pa.Array | None], heads: _Heads | None, spec: StderrSpec, clock: Clock, k: int
) -> np.ndarray:
    """UTC times of k kept entries: from the fixed-place heads or the %m/%t field read through
    the clock (zone names), else from %n (epoch seconds); NaT without any."""
    ts_col = fields.get("ts")
    if spec.head is None and ts_col is None:
        epoch = fields.get("epoch")
        if epoch is not None:
            return epoch_to_utc(as_numpy(pc.cast(epoch.cast(pa.string()), pa.float64())))
        return np.full(k, np.datetime64("NaT"), dtype="datetime64[ms]")
    if ts_col is not None:
        naive = as_numpy(pc.cast(ts_col.cast(pa.string()), pa.timestamp("ms"))).astype("datetime64[ms]")
        zones = coded_names(fields["tz"], k)
    else:
        naive = np.full(k, np.datetime64("NaT"), dtype="datetime64[ms]")
        zones = Coded.constant("", k)
    if heads is not None and heads.ok.any():
        fast = heads.ok
        naive[fast] = heads.ms[fast].astype("datetime64[ms]")
        codes = zones.codes.copy()
        codes[fast] = heads.zone_codes[fast] + len(zones.values)
        zones = Coded(codes, zones.values + [clean_name(n) for n in heads.zone_names])
    return clock.to_utc(naive, zones)


def _put(column: Coded, rows: np.ndarray, values: Coded) -> Coded:
    """`column` with its rows `rows` taken from `values` (a dictionary appended to its own)."""
    codes = column.codes.copy()
    codes[rows] = values.codes + len(column.values)
    return Coded(codes, [*column.values, *values.values])


def _read_messages(rows: Rows, messages: Messages, has_sqlstate: bool, language: str) -> np.ndarray:
    """Fill the event, message and session columns of `rows` from their messages (bytes after
    ':  ' up to the entry's end, continuation lines included); returns the rows to drop (events
    the catalog does not explain). Events are classified once per distinct (message, level,
    SQLSTATE); session lines give their names and session time."""
    k = len(rows)
    kinds, levels, sqlstate = rows.kind, rows.coded["level"].codes, rows.coded["sqlstate"]
    coded = rows.coded
    coded["event"], coded["message"] = Coded.constant("", k), Coded.constant("", k)
    drop = np.zeros(k, dtype=bool)
    ev = np.flatnonzero(kinds == EVENT)
    if len(ev):
        text_codes, text_values = messages.distinct(ev)
        state_codes = sqlstate.codes[ev].astype(np.int64)
        key = (text_codes.astype(np.int64) * 8 + levels[ev]) * (len(sqlstate.values) + 1) + state_codes
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        found = [
            classify_message(
                text_values[text_codes[f]],
                int(levels[ev[f]]),
                sqlstate.values[state_codes[f]].encode() if has_sqlstate else b"",
                language,
            )
            for f in first.tolist()
        ]
        drop[ev[np.array([f[0] is None for f in found], dtype=bool)[inverse]]] = True
        coded["event"] = _put(
            coded["event"], ev, Coded(inverse.astype(np.int32), [f[0] or "" for f in found])
        )
        coded["message"] = _put(coded["message"], ev, Coded(inverse.astype(np.int32), [f[1] for f in found]))
    auth = np.flatnonzero(kinds == AUTH)
    if len(auth):
        text_codes, text_values = messages.distinct(auth)
        parsed = [login_names(t) for t in text_values]
        codes32 = text_codes.astype(np.int32)
        coded["event"] = _put(coded["event"], auth, Coded.constant("connection_authorized", len(auth)))
        for j, name in enumerate(("user", "database", "application")):
            coded[name] = _put(coded[name], auth, Coded(codes32, [p[j] for p in parsed] or [""]))
    recv = np.flatnonzero(kinds == RECV)
    if len(recv):
        coded["event"] = _put(coded["event"], recv, Coded.constant("connection_received", len(recv)))
        coded["host"] = _put(coded["host"], recv, messages.received(recv))
    disc = np.flatnonzero(kinds == DISC)
    if len(disc):
        (h, m, sec), names = messages.disconnected(disc)
        rows.session_s[disc] = np.round(h * 3600 + m * 60 + sec, 3)  # the log has milliseconds
        coded["event"] = _put(coded["event"], disc, Coded.constant("disconnection", len(disc)))
        for name, values in zip(("user", "database", "host"), names, strict=True):
            coded[name] = _put(coded[name], disc, values)
    return drop


def _details(buf: bytes, scanned: _Scanned, keep: np.ndarray, drop: np.ndarray) -> Coded:
    """The detail column of the kept rows: a DETAIL belongs to the event before it when only
    secondary lines come between (the first DETAIL of an event kept)."""
    _, _, ends, at, level, kind, _ = scanned
    codes = np.zeros(len(keep), dtype=np.int32)
    index = {"": 0}
    details = np.flatnonzero(level == LEVEL_DETAIL)
    events = np.flatnonzero(kind[keep] == EVENT)
    if len(details) and len(events):
        secondary = level > len(LEVEL_WORDS)
        last_primary = np.maximum.accumulate(np.where(secondary, -1, np.arange(len(level))))
        row_of = {int(keep[j]): j for j in events.tolist()}
        for d in details.tolist():
            j = row_of.get(int(last_primary[d]), -1)
            if j >= 0 and not drop[j] and not codes[j]:
                text = buf[int(at[d]) + 3 : int(ends[d])].replace(b"\n\t", b"\n").decode("utf-8", "replace")
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
    compiled = engine.ENGINE.scan
    if program is not None and compiled is not None and list(program.names) == names:
        raw_ok, pairs = compiled.prefix_fields(buf, first, last, program.ops, len(program.names))
        ok = np.frombuffer(raw_ok, dtype=np.uint8).astype(bool)
        for name, (offsets, data) in zip(program.names, pairs, strict=True):
            buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
            columns[name] = pa.Array.from_buffers(pa.binary(), k, buffers)
        missed = np.flatnonzero(~ok)
        if len(missed):
            got, got_ok = _prefix_fields(entries, at[missed], buf, starts, ends, spec, passes)
            mask = bool_array(~ok)
            for name in names:
                column, read = columns[name], got[name]
                assert column is not None and read is not None
                columns[name] = pc.replace_with_mask(column, mask, read.cast(pa.binary()))
            ok[missed] = got_ok
        return columns, ok
    sub = entries.take(index_array(at))
    ok = np.ones(k, dtype=bool)
    for pattern, group in passes:
        found = pc.extract_regex(sub, _named(pattern))
        ok &= as_numpy(found.is_valid())
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
            columns[name] = pc.replace_with_mask(column, bool_array(mask), binary_array(patch[name]))
        ok[missed[fixed]] = True
    return columns, ok

"""The streaming state: rows in log order become paired sessions, events and running totals.

Memory stays flat whatever the log's size. Per pid only what is still open is kept (the login
of a session whose end has not come yet, a connection received whose login has not, the last
cause of the last second), in records sorted by pid (`_Carry`); counts, first and last times, who was
hit and the per-minute timeline are totals updated block by block.

Frames and their caps (the summary's figures are exact whatever the frames leave out):
- the events frame keeps EVERY event that can explain a lost session (every event except the
  session lines connection_received, connection_authorized and disconnection): they are rare
  in real logs and the diagnosis needs each one, so their frame rows are never capped;
- of the session lines, the bulk of a log with log_connections and log_disconnections on, it
  keeps the latest `SESSION_LINE_ROWS` rows of each;
- the sessions frame keeps the latest `SESSION_ROWS` sessions.
What was left out is counted per event (and for sessions) in the summary's
"frame_rows_left_out"; counts must be read from the summary ("events"[id]["count"],
"sessions"["count"]), never from a frame's length. With `frames=False` (`playbook logs`) no
frame row is kept at all: the summary alone, in flat memory.

Each block is handled with numpy and no per-row Python: rows are grouped by pid in log order
(a stable argsort), and for every row the last session line, connection received and cause
before it in its pid come from running maxima; what earlier blocks left open joins through one
searchsorted per block.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa

from playbook.collect import log_events
from playbook.collect.serverlog import engine
from playbook.collect.serverlog.rows import AUTH, CODED, DISC, EVENT, RECV, TEXT, Coded, Rows

if TYPE_CHECKING:  # pandas loads where frames are built: `playbook logs` builds none
    import pandas as pd

SESSION_LINE_ROWS = 20_000  # per session-line event: the latest ones
SESSION_ROWS = 50_000
SESSION_LINE_EVENTS = ("connection_received", "connection_authorized", "disconnection")
_NAT = np.iinfo(np.int64).min
_STALE_MS = 2000  # a login this much older than a session's start belongs to an earlier session
_CAUSE_MS = 1000  # a cause this close before a disconnection ended that session

EVENT_COLUMNS = [
    "ts", "event", "category", "level", "sqlstate", "user", "database", "application", "host", "pid",
    "message", "detail",
]  # fmt: skip
SESSION_COLUMNS = ["pid", "start", "end", "duration_s", "user", "database", "host", "application", "ended_by"]
_WHO = ("user", "database", "application", "host")


class Vocab:
    """Global codes for one low-cardinality column; code 0 is ""."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}
        self.values: list[str] = [""]

    def remap(self, coded: Coded) -> np.ndarray:
        """Global codes of a block's coded column. New values get the next codes in the order
        they first appear in the rows (whatever the order of the block's dictionary), so codes,
        and the summary's order among equal counts, follow the log alone.

        Compiled (_scan.remap): a block brings thousands of new hosts, and the loop below
        spent ~0.1 s per 100 MB of log on them. The loop stays as the reference
        (`remap_reference`, compared with the compiled one in tests/test_serverlog_compiled.py)
        and for a machine without the extension."""
        if not len(coded.codes):
            return np.zeros(0, dtype=np.int32)
        compiled = engine.ENGINE.scan
        if compiled is None:
            return self.remap_reference(coded)
        codes = np.ascontiguousarray(coded.codes, dtype=np.int32)
        out = np.empty(len(codes), dtype=np.int32)
        block = coded.values if isinstance(coded.values, list) else list(coded.values)
        compiled.remap(self.index, self.values, block, codes, out)
        return out

    def remap_reference(self, coded: Coded) -> np.ndarray:
        """`remap` in Python and numpy (same contract)."""
        if not len(coded.codes):
            return np.zeros(0, dtype=np.int32)
        index, values = self.index, self.values
        get = index.get
        found = [get(v, -1) for v in coded.values]
        if -1 in found:
            used, first = np.unique(coded.codes, return_index=True)
            for c in used[np.argsort(first, kind="stable")].tolist():
                if found[c] < 0:  # plain lists and dicts here: a block may bring ~10k new hosts
                    value = coded.values[c]
                    code = get(value)
                    if code is None:
                        code = index[value] = len(values)
                        values.append(value)
                    found[c] = code
        return np.array(found, dtype=np.int32)[coded.codes]

    def code(self, value: str) -> int:
        found = self.index.get(value)
        if found is None:
            found = self.index[value] = len(self.values)
            self.values.append(value)
        return found


@dataclass
class _Chunks:
    """Column chunks of one frame, trimmed to the latest `cap` rows (None: every row)."""

    cap: int | None
    parts: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    dropped: int = 0

    def add(self, columns: dict[str, np.ndarray], n: int) -> None:
        if not n:
            return
        self.parts.append(columns)
        self.rows += n
        if self.cap is None:
            if len(self.parts) >= 2 * _MERGE and all(_len(p) < (1 << 20) for p in self.parts[-_MERGE:]):
                # fewer, bigger arrays; only the latest small ones are copied (no spike)
                self.parts[-_MERGE:] = [_joined(self.parts[-_MERGE:])]
            return
        while self.parts and self.rows - _len(self.parts[0]) >= self.cap:
            gone = _len(self.parts.pop(0))
            self.rows -= gone
            self.dropped += gone

    def columns(self) -> dict[str, np.ndarray] | None:
        if not self.parts:
            return None
        out = _joined(self.parts)
        extra = self.rows - self.cap if self.cap is not None else 0
        if extra > 0:
            self.dropped += extra
            self.rows -= extra
            out = {k: v[extra:] for k, v in out.items()}
        self.parts = [out]
        return out


_MERGE = 32


def _joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _len(columns: dict[str, Any]) -> int:
    return len(next(iter(columns.values())))


_CARRY_DTYPE = np.dtype(
    [
        ("open_has", bool), ("open_seq", np.int64), ("open_ts", np.int64), ("open_user", np.int32),
        ("open_database", np.int32), ("open_application", np.int32), ("open_host", np.int32),
        ("recv_has", bool), ("recv_host", np.int32), ("cause_has", bool), ("cause_ts", np.int64),
        ("cause_event", np.int32),
    ]
)  # fmt: skip
_FLAGS = ("open_has", "recv_has", "cause_has")


def _carry_default() -> np.ndarray:
    """The record of a pid with nothing open: times NaT, everything else 0 / False."""
    record = np.zeros((), dtype=_CARRY_DTYPE)
    for name in _CARRY_DTYPE.names or ():
        if name.endswith("_ts"):
            record[name] = _NAT
    return record


_CARRY_NOTHING = _carry_default()
_CARRY_RAW = np.dtype((np.void, _CARRY_DTYPE.itemsize))


def _raw(records: np.ndarray) -> np.ndarray:
    """`records` (contiguous) as opaque bytes per record: numpy gathers, masks and assigns
    structured records field by field, but these whole (~20x faster)."""
    return records.view(_CARRY_RAW)


class _Carry:
    """Per pid, what the next block needs, as records sorted by pid: the open login (its time,
    names and the order it was left open in), a connection received not yet authorized (its
    host) and the latest cause (its time and event). Pids with none of the three are dropped.

    The record columns live in one structured array (`records`), not one array per column: a
    block's lookup, overwrite, insertion and compaction are one gather or copy each instead of
    twelve, which is most of what carrying costs once the carry holds ~50k pids. Every copy
    of whole records goes through `_raw`."""

    def __init__(self) -> None:
        self.pid = np.zeros(0, dtype=np.int64)
        self.records = np.zeros(0, dtype=_CARRY_DTYPE)
        self.next_seq = 0

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The records' columns by name (views, not copies)."""
        return {name: self.records[name] for name in _CARRY_DTYPE.names or ()}

    def _find(self, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(insertion points, clipped points, hit) of `pids` (sorted, unique) in `self.pid`."""
        at = np.searchsorted(self.pid, pids)
        if not len(self.pid):
            return at, at, np.zeros(len(pids), dtype=bool)
        atc = np.minimum(at, len(self.pid) - 1)
        return at, atc, self.pid[atc] == pids

    def lookup(self, pids: np.ndarray) -> dict[str, np.ndarray]:
        """The carried columns for `pids` (sorted, unique); defaults (nothing open) elsewhere.
        The columns are views into one fresh record array: writing to them never touches the
        carry."""
        _, atc, hit = self._find(pids)
        if len(self.pid):
            out = _raw(self.records)[atc].view(_CARRY_DTYPE)
            _raw(out)[~hit] = _raw(_CARRY_NOTHING.reshape(1))[0]
        else:
            out = np.full(len(pids), _CARRY_NOTHING, dtype=_CARRY_DTYPE)
        return {name: out[name] for name in _CARRY_DTYPE.names or ()}

    def update(
        self, pids: np.ndarray, new: dict[str, np.ndarray], was_open: np.ndarray | None = None
    ) -> None:
        """Replace the rows of `pids` (sorted, unique) with `new`; logins newly left open are
        numbered after every earlier one, in pid order."""
        was_open = was_open if was_open is not None else self.lookup(pids)["open_has"]
        fresh = new["open_has"] & ~was_open
        new["open_seq"] = np.where(fresh, self.next_seq + np.cumsum(fresh) - 1, new["open_seq"])
        self.next_seq += int(fresh.sum())
        records = np.empty(len(pids), dtype=_CARRY_DTYPE)
        for name in _CARRY_DTYPE.names or ():
            records[name] = new[name]
        keep_new = new["open_has"] | new["recv_has"] | new["cause_has"]
        # pids already here: overwritten in place (a row with no flag left stays until the next
        # compaction: nothing reads a row's values without its flag); new ones: inserted
        at, atc, hit = self._find(pids)
        if hit.any():
            _raw(self.records)[atc[hit]] = _raw(records)[hit]
        insert = ~hit & keep_new
        if insert.any():
            # np.insert's result, with the places worked out once: `at` is sorted (pids are),
            # so the i-th new row lands at at[i] + i
            where = at[insert]
            placed = where + np.arange(len(where))
            old = np.ones(len(self.pid) + len(where), dtype=bool)
            old[placed] = False

            def inserted(column: np.ndarray, values: np.ndarray) -> np.ndarray:
                out = np.empty(len(old), dtype=column.dtype)
                out[placed] = values
                out[old] = column
                return out

            self.pid = inserted(self.pid, pids[insert])
            self.records = inserted(_raw(self.records), _raw(records)[insert]).view(_CARRY_DTYPE)
        flagged = self._flagged()
        if 2 * int(flagged.sum()) < len(flagged):
            self._drop_empty(flagged)

    def _flagged(self) -> np.ndarray:
        r = self.records
        return r["open_has"] | r["recv_has"] | r["cause_has"]

    def count(self, flag: str) -> int:
        return int(self.records[flag].sum())

    def prune_causes(self, oldest: int) -> None:
        self.records["cause_has"] &= self.records["cause_ts"] >= oldest
        self._drop_empty()

    def clear(self, flag: str) -> None:
        self.records[flag] = False
        self._drop_empty()

    def _drop_empty(self, flagged: np.ndarray | None = None) -> None:
        keep = self._flagged() if flagged is None else flagged
        if not keep.all():
            self.pid = self.pid[keep]
            self.records = _raw(self.records)[keep].view(_CARRY_DTYPE)

    def open_sessions(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Pids and columns of the logins still open, in the order they were left open."""
        rows = np.flatnonzero(self.records["open_has"])
        rows = rows[np.argsort(self.records["open_seq"][rows], kind="stable")]
        taken = _raw(self.records)[rows].view(_CARRY_DTYPE)
        return self.pid[rows], {name: taken[name] for name in _CARRY_DTYPE.names or ()}


def _ms(seconds: np.ndarray) -> np.ndarray:
    """A session time in seconds as whole milliseconds (NaN: 0)."""
    return np.round(np.nan_to_num(seconds, nan=0.0) * 1000).astype(np.int64)


def _next_after(mask: np.ndarray, new_group: np.ndarray) -> np.ndarray:
    """Per position: the next later position of its group in `mask`, or -1."""
    n = len(mask)
    position = np.arange(n)
    nxt = np.minimum.accumulate(np.where(mask, position, n)[::-1])[::-1]
    after = np.empty(n, dtype=np.int64)
    after[:-1] = nxt[1:]
    after[-1] = n
    group_end = np.append(np.flatnonzero(new_group)[1:] - 1, n - 1)[np.cumsum(new_group) - 1]
    return np.where(after <= group_end, after, -1)


class _Login(NamedTuple):
    """Per row of a block (grouped by pid): the login still open when the row was written, in
    the block or left open by an earlier one (`has` False: none)."""

    has: np.ndarray
    ts: np.ndarray
    user: np.ndarray
    database: np.ndarray
    application: np.ndarray
    host: np.ndarray


class _ByPid(NamedTuple):
    """One block's rows grouped by pid, in log order within a pid (a stable sort), with what
    the session tracker asks of each row: the last session line, connection received and cause
    of its pid before it. pid 0 (no %p) pairs nothing. Positions are into this order; -1: none."""

    order: np.ndarray  # position here -> row of the block
    kind: np.ndarray  # RECV, AUTH, DISC or EVENT
    ts: np.ndarray  # ms since the epoch (_NAT: none)
    pid: np.ndarray
    session_s: np.ndarray  # the session time of disconnections
    user: np.ndarray  # global codes (0: blank)
    database: np.ndarray
    application: np.ndarray
    host: np.ndarray
    event: np.ndarray
    cause: np.ndarray  # an event that can end a session
    paired: np.ndarray  # the row has a pid
    new_pid: np.ndarray  # the first row of its pid
    group: np.ndarray  # per row: its pid's group
    group_start: np.ndarray  # per group: its first and last position
    group_end: np.ndarray
    last_session_line: np.ndarray  # per row: the last earlier login or disconnection of its pid
    last_received: np.ndarray  # ... connection received
    last_cause: np.ndarray  # ... cause

    @classmethod
    def of(cls, rows: Rows, ts: np.ndarray, codes: dict[str, np.ndarray], cause: np.ndarray) -> _ByPid:
        order = np.argsort(rows.pid, kind="stable")
        pid = rows.pid.astype(np.int64)[order]
        n = len(order)
        new_pid = np.ones(n, dtype=bool)
        new_pid[1:] = pid[1:] != pid[:-1]
        group_start = np.flatnonzero(new_pid)
        kind, paired, cause_here = rows.kind[order], pid != 0, cause[order]
        group = np.cumsum(new_pid) - 1
        position = np.arange(n)

        def last_before(mask: np.ndarray) -> np.ndarray:
            acc = np.maximum.accumulate(np.where(mask & paired, position, -1))
            prev = np.empty(n, dtype=np.int64)
            prev[0] = -1
            prev[1:] = acc[:-1]
            return np.where(prev >= group_start[group], prev, -1)

        return cls(
            order=order, kind=kind, ts=ts[order], pid=pid, session_s=rows.session_s[order],
            user=codes["user"][order], database=codes["database"][order],
            application=codes["application"][order], host=codes["host"][order],
            event=codes["event"][order], cause=cause_here, paired=paired, new_pid=new_pid, group=group,
            group_start=group_start, group_end=np.append(group_start[1:] - 1, n - 1),
            last_session_line=last_before((kind == AUTH) | (kind == DISC)),
            last_received=last_before(kind == RECV), last_cause=last_before(cause_here),
        )  # fmt: skip

    def last_of_pid(self, mask: np.ndarray) -> np.ndarray:
        """Per pid: the position of its last row in `mask`, or -1."""
        position = np.arange(len(mask))
        found = np.maximum.accumulate(np.where(mask & self.paired, position, -1))[self.group_end]
        return np.where(found >= self.group_start, found, -1)

    def in_log_order(self, column: np.ndarray) -> np.ndarray:
        restored = np.empty(len(column), dtype=column.dtype)
        restored[self.order] = column
        return restored

    def login_hosts(self, carried: dict[str, np.ndarray]) -> np.ndarray:
        """Per row: its host, except for logins: the host of the connection received just
        before it in its pid (in this block, or carried from an earlier one) when there is one."""
        is_auth = (self.kind == AUTH) & self.paired
        received, session_line = self.last_received, self.last_session_line
        host = self.host.copy()
        from_recv = is_auth & (received >= 0) & (received > session_line)
        host[from_recv] = self.host[received[from_recv]]
        from_carry = is_auth & (session_line < 0) & (received < 0) & carried["recv_has"]
        host[from_carry] = carried["recv_host"][from_carry]
        return host

    def open_logins(self, carried: dict[str, np.ndarray], login_host: np.ndarray) -> _Login:
        """Per row: the open session of its pid, the login before it in the block, else the
        one an earlier block left open."""
        before = self.last_session_line
        at = np.maximum(before, 0)
        in_block = (before >= 0) & (self.kind[at] == AUTH)
        from_before = (before < 0) & self.paired & carried["open_has"]

        def pick(column: np.ndarray, name: str) -> np.ndarray:
            return np.where(in_block, column[at], carried[f"open_{name}"])

        return _Login(
            in_block | from_before, pick(self.ts, "ts"), pick(self.user, "user"),
            pick(self.database, "database"), pick(self.application, "application"), pick(login_host, "host"),
        )  # fmt: skip

    def with_names_filled(self, login: _Login) -> _ByPid:
        """Events with blank names take them from the open session of their pid, else from a
        disconnection later in the block whose session (by its duration) had begun by then."""
        blank = (self.user == 0) | (self.database == 0) | (self.application == 0) | (self.host == 0)
        fill = (self.kind == EVENT) & self.paired & blank
        if not fill.any():
            return self
        after = _next_after((self.kind == AUTH) | (self.kind == DISC), self.new_pid)
        at = np.maximum(after, 0)
        began = self.ts[at] - _ms(self.session_s[at])
        from_end = fill & ~login.has & (after >= 0) & (self.kind[at] == DISC) & (began <= self.ts)
        from_open = fill & login.has
        filled = {}
        for name, opened, ended in (
            ("user", login.user, self.user[at]),
            ("database", login.database, self.database[at]),
            ("application", login.application, np.zeros(len(at), dtype=np.int32)),
            ("host", login.host, self.host[at]),
        ):
            column = getattr(self, name).copy()
            empty = column == 0
            column[from_open & empty] = opened[from_open & empty]
            column[from_end & empty] = ended[from_end & empty]
            filled[name] = column
        return self._replace(**filled)

    def causes_of_ends(self, carried: dict[str, np.ndarray]) -> np.ndarray:
        """Per row: the event of the cause its pid logged at most _CAUSE_MS before it (in the
        block, else carried from an earlier one); 0: none."""
        before = self.last_cause
        at = np.maximum(before, 0)
        gap = self.ts - self.ts[at]
        by = np.where((before >= 0) & (gap >= 0) & (gap <= _CAUSE_MS), self.event[at], 0)
        carried_gap = self.ts - carried["cause_ts"]
        by_carried = (before < 0) & self.paired & carried["cause_has"]
        by_carried &= (carried_gap >= 0) & (carried_gap <= _CAUSE_MS)
        return np.where(by_carried, carried["cause_event"], by).astype(np.int32)


class SessionState:
    """Consumes `Rows` in log order; `events_frame`, `sessions_frame` and `totals` at the end.
    With `frames` False no frame row is kept (the totals are the same)."""

    def __init__(self, since: np.datetime64 | None, until: np.datetime64 | None, frames: bool = True) -> None:
        self.since = None if since is None else int(since.astype("datetime64[ms]").astype(np.int64))
        self.until = None if until is None else int(until.astype("datetime64[ms]").astype(np.int64))
        self.frames = frames
        self.vocab = {name: Vocab() for name in (*CODED, *TEXT)}
        for event_id in log_events.CATALOG:
            self.vocab["event"].code(event_id)
        self.session_line_codes = np.array(
            [self.vocab["event"].code(e) for e in SESSION_LINE_EVENTS], dtype=np.int32
        )
        self.category_of = np.zeros(0, dtype=np.int8)
        self.carry = _Carry()
        self.seq = 0
        self.past_until = False
        self.event_chunks: dict[int, _Chunks] = {}  # session-line events, capped
        self.rare_chunks = _Chunks(None)  # every other event, never capped
        self.session_chunks = _Chunks(SESSION_ROWS)
        # totals
        self.count: Counter[int] = Counter()
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        # (keys, counts, first seen) per block, merged now and then; ties in the summary's
        # rankings keep the order names were first seen in
        self.who_parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
            name: [] for name in _WHO
        }
        self.timeline: Counter[tuple[int, str]] = Counter()
        self.durations: list[np.ndarray] = []
        self.sessions = 0
        self.sessions_ended = 0
        self.ended_by: Counter[str] = Counter()
        self.lines = 0
        self.entries = 0
        self.bytes_read = 0

    # -- one block ---------------------------------------------------------------------------
    def consume(self, rows: Rows) -> None:
        """One block's rows, in log order, after every earlier block's."""
        self.lines += rows.lines
        self.entries += rows.entries
        self.bytes_read += rows.bytes_read
        if not len(rows):
            return
        codes = {name: self.vocab[name].remap(rows.coded[name]) for name in CODED}
        self._categories()
        ts = rows.ts.astype("datetime64[ms]").astype(np.int64)
        category = self.category_of[codes["event"]]
        cause = (rows.kind == EVENT) & (category > 0) & (codes["level"] != self.vocab["level"].code("ERROR"))
        block = _ByPid.of(rows, ts, codes, cause)
        carried_per_pid = self.carry.lookup(block.pid[block.group_start])  # what earlier blocks left open
        carried = {name: column[block.group] for name, column in carried_per_pid.items()}  # per row
        login_host = block.login_hosts(carried)
        login = block.open_logins(carried, login_host)
        block = block.with_names_filled(login)
        self._carry_over(block, carried_per_pid, login_host, ts)
        for name in _WHO:
            codes[name] = block.in_log_order(getattr(block, name))
        self._emit_events(rows, ts, rows.pid.astype(np.int64), codes, category)
        self._end_sessions(block, login, carried)

    def _end_sessions(self, block: _ByPid, login: _Login, carried: dict[str, np.ndarray]) -> None:
        """A disconnection ends the open login of its pid; a second login leaves the first one's
        end unknown, and so does a login older than a disconnection's start."""
        is_disc = block.kind == DISC
        end = block.ts
        start = np.where(end != _NAT, end - _ms(block.session_s), _NAT)
        stale = is_disc & login.has & (login.ts != _NAT) & (start != _NAT) & (login.ts < start - _STALE_MS)
        application = np.where(is_disc & login.has & ~stale, login.application, 0).astype(np.int32)
        by = block.causes_of_ends(carried)
        ended = np.flatnonzero(is_disc)
        unknown = np.flatnonzero(((block.kind == AUTH) & block.paired & login.has) | stale)
        self._emit_sessions(
            (
                block.pid[ended], start[ended], end[ended], block.session_s[ended], block.user[ended],
                block.database[ended], block.host[ended], application[ended], by[ended],
            ),
            (
                block.pid[unknown], login.ts[unknown], login.user[unknown], login.database[unknown],
                login.application[unknown], login.host[unknown],
            ),
        )  # fmt: skip

    def _carry_over(
        self, block: _ByPid, carried: dict[str, np.ndarray], login_host: np.ndarray, ts: np.ndarray
    ) -> None:
        """What the next block needs, per pid: the open login, a connection received and not
        yet authorized, the latest cause."""
        last_line = block.last_of_pid((block.kind == AUTH) | (block.kind == DISC))
        last_received = block.last_of_pid(block.kind == RECV)
        last_cause = block.last_of_pid(block.cause)
        has_line, has_received, has_cause = last_line >= 0, last_received >= 0, last_cause >= 0
        line_at, received_at, cause_at = (np.maximum(p, 0) for p in (last_line, last_received, last_cause))
        new = {name: column.copy() for name, column in carried.items()}
        login = has_line & (block.kind[line_at] == AUTH)
        new["open_has"] = np.where(has_line, login, carried["open_has"])
        for name, column in (
            ("ts", block.ts), ("user", block.user), ("database", block.database),
            ("application", block.application), ("host", login_host),
        ):  # fmt: skip
            new[f"open_{name}"] = np.where(login, column[line_at], carried[f"open_{name}"])
        pending = has_received & (last_received > last_line)
        new["recv_has"] = np.where(pending, True, np.where(has_line, False, carried["recv_has"]))
        new["recv_host"] = np.where(pending, block.host[received_at], carried["recv_host"])
        new["cause_has"] = carried["cause_has"] | has_cause
        new["cause_ts"] = np.where(has_cause, block.ts[cause_at], carried["cause_ts"])
        new["cause_event"] = np.where(has_cause, block.event[cause_at], carried["cause_event"])
        self.carry.update(block.pid[block.group_start], new, carried["open_has"])
        if self.carry.count("cause_has") > 10_000 or self.carry.count("recv_has") > 100_000:
            newest = int(ts.max())
            self.carry.prune_causes(newest - _CAUSE_MS)
            if self.carry.count("recv_has") > 100_000:
                self.carry.clear("recv_has")  # connections that never logged in: nothing to pair

    def _in_window(self, ts: np.ndarray) -> np.ndarray | None:
        if self.since is None and self.until is None:
            return None
        valid = ts != _NAT
        keep = valid.copy()
        if self.since is not None:
            keep &= ts >= self.since
        if self.until is not None:
            keep &= ts <= self.until
            if valid.any() and ts[valid].min() > self.until:
                self.past_until = True  # files are read in time order: the rest is later still
        return keep

    def _emit_events(
        self, rows: Rows, ts: np.ndarray, pid: np.ndarray, codes: dict[str, np.ndarray], category: np.ndarray
    ) -> None:
        n = len(ts)
        seq = np.arange(self.seq, self.seq + n, dtype=np.int64)
        self.seq += n
        keep = self._in_window(ts)
        index = np.arange(n) if keep is None else np.flatnonzero(keep)
        if not len(index):
            return
        event = codes["event"][index]
        t = ts[index]
        valid = t != _NAT
        # totals
        counts = np.bincount(event, minlength=len(self.vocab["event"].values))
        for code in np.flatnonzero(counts).tolist():
            self.count[code] += int(counts[code])
            these = t[(event == code) & valid]
            if len(these):
                lo, hi = int(these.min()), int(these.max())
                self.first[code] = min(self.first.get(code, lo), lo)
                self.last[code] = max(self.last.get(code, hi), hi)
        width = np.int64(1 << 32)
        for name in _WHO:
            key = event.astype(np.int64) * width + codes[name][index]
            parts = self.who_parts[name]
            uniq, cnt = np.unique(key, return_counts=True)
            parts.append((uniq, cnt, np.full(len(uniq), self.seq, dtype=np.int64)))
            if len(parts) >= 32:  # bounded by the distinct (event, name) pairs
                parts[:] = [_merge_counts(parts)]
        # the timeline: categories per minute, plus logins and disconnections
        minute = np.where(valid, t // 60_000, -1)
        cat = category[index]
        labels = ["", *log_events.CATEGORIES]
        for mask, label_of in (
            ((cat > 0) & valid, None),
            ((rows.kind[index] == AUTH) & valid, "connections"),
            ((rows.kind[index] == DISC) & valid, "disconnections"),
        ):
            if not mask.any():
                continue
            if label_of is None:
                key = minute[mask] * 8 + cat[mask]
                uniq, cnt = np.unique(key, return_counts=True)
                for k, c in zip(uniq.tolist(), cnt.tolist(), strict=True):
                    self.timeline[(k // 8, labels[k % 8])] += c
            else:
                uniq, cnt = np.unique(minute[mask], return_counts=True)
                for k, c in zip(uniq.tolist(), cnt.tolist(), strict=True):
                    self.timeline[(k, label_of)] += c
        # frame rows: the session lines per event (capped), every other event in one place
        if not self.frames:
            return
        is_line = np.isin(event, self.session_line_codes)
        text = {name: self.vocab[name].remap(rows.coded[name])[index] for name in TEXT}

        def columns(sel: np.ndarray) -> dict[str, np.ndarray]:
            at = index[sel]
            return {
                "seq": seq[at],
                "ts": ts[at],
                "pid": pid[at],
                **{name: codes[name][at] for name in CODED},
                **{name: text[name][sel] for name in TEXT},
            }

        rare = np.flatnonzero(~is_line)
        self.rare_chunks.add(columns(rare), len(rare))
        for code in np.unique(event[is_line]).tolist():
            sel = np.flatnonzero(event == code)
            chunks = self.event_chunks.setdefault(code, _Chunks(SESSION_LINE_ROWS))
            chunks.add(columns(sel), len(sel))

    def _emit_sessions(self, ended: tuple[np.ndarray, ...], unknown: tuple[np.ndarray, ...]) -> None:
        """Sessions of one block: those a disconnection ended (in the window by their end), then
        those whose end is unknown (by their start)."""
        pid_e, start_e, end_e, secs_e, u_e, d_e, h_e, a_e, by_e = ended
        keep = self._window_mask(end_e)
        pid_u, start_u, u_u, d_u, a_u, h_u = unknown
        keep_u = self._window_mask(start_u)
        m = len(pid_u)
        self._add_sessions(
            np.concatenate((pid_e[keep], pid_u[keep_u])),
            np.concatenate((start_e[keep], start_u[keep_u])),
            np.concatenate((end_e[keep], np.full(m, _NAT, dtype=np.int64)[keep_u])),
            np.concatenate((secs_e[keep], np.full(m, np.nan)[keep_u])),
            np.concatenate((u_e[keep], u_u[keep_u])),
            np.concatenate((d_e[keep], d_u[keep_u])),
            np.concatenate((h_e[keep], h_u[keep_u])),
            np.concatenate((a_e[keep], a_u[keep_u])),
            np.concatenate((by_e[keep], np.zeros(m, dtype=np.int32)[keep_u])),
        )

    def _window_mask(self, t: np.ndarray) -> np.ndarray:
        if self.since is None and self.until is None:
            return np.ones(len(t), dtype=bool)
        keep = t != _NAT
        if self.since is not None:
            keep &= t >= self.since
        if self.until is not None:
            keep &= t <= self.until
        return keep

    def _add_sessions(
        self,
        pid: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        seconds: np.ndarray,
        user: np.ndarray,
        database: np.ndarray,
        host: np.ndarray,
        application: np.ndarray,
        ended_by: np.ndarray,
    ) -> None:
        n = len(pid)
        if not n:
            return
        secs = np.asarray(seconds, dtype=np.float64)
        self.sessions += n
        self.sessions_ended += int((end != _NAT).sum())
        self.durations.append(secs[~np.isnan(secs)])
        by = np.asarray(ended_by, dtype=np.int64)
        counts = np.bincount(by, minlength=1)
        values = self.vocab["event"].values
        for code in np.flatnonzero(counts[1:]).tolist():
            self.ended_by[values[code + 1]] += int(counts[code + 1])
        if not self.frames:
            return
        self.session_chunks.add(
            {
                "pid": pid.astype(np.int64),
                "start": start.astype(np.int64),
                "end": end.astype(np.int64),
                "duration_s": secs,
                "user": user.astype(np.int32),
                "database": database.astype(np.int32),
                "host": host.astype(np.int32),
                "application": application.astype(np.int32),
                "ended_by": by.astype(np.int32),
            },
            n,
        )

    def finish(self) -> None:
        """Logins still open at the end of the log: sessions whose end is unknown (in the order
        they were first left open)."""
        pid, columns = self.carry.open_sessions()
        keep = self._window_mask(columns["open_ts"])
        m = int(keep.sum())
        self.carry = _Carry()
        self._add_sessions(
            pid[keep],
            columns["open_ts"][keep],
            np.full(m, _NAT, dtype=np.int64),
            np.full(m, np.nan),
            columns["open_user"][keep],
            columns["open_database"][keep],
            columns["open_host"][keep],
            columns["open_application"][keep],
            np.zeros(m, dtype=np.int32),
        )

    def _categories(self) -> None:
        values = self.vocab["event"].values
        if len(self.category_of) != len(values):
            names = ["", *log_events.CATEGORIES]
            self.category_of = np.array([names.index(log_events.category(v)) for v in values], dtype=np.int8)

    # -- the frames ----------------------------------------------------------------------------
    def events_frame(self) -> pd.DataFrame:
        """The events frame, in log order. It is built column by column from the chunks, which
        it empties as it goes (peak memory: about the chunks or the frame, not both), so it is
        called once, at the end of a read."""
        import pandas as pd

        # the capped chunks trimmed (small), the uncapped ones as they are (no joined copy)
        present = [p for p in (c.columns() for c in self.event_chunks.values()) if p is not None]
        present += self.rare_chunks.parts
        for c in (self.rare_chunks, *self.event_chunks.values()):
            c.parts = []  # `present` holds the only references now
        order = (
            np.argsort(np.concatenate([p.pop("seq") for p in present]), kind="stable") if present else None
        )

        def take(name: str) -> np.ndarray:
            if order is None:
                return np.zeros(0, dtype=np.int64 if name in ("ts", "pid") else np.int32)
            return np.concatenate([p.pop(name) for p in present])[order]

        self._categories()
        names = ["", *log_events.CATEGORIES]
        out: dict[str, Any] = {"ts": _utc(take("ts"))}
        event = take("event")
        out["event"] = _categorical(event, self.vocab["event"].values)
        out["category"] = _categorical(self.category_of[event].astype(np.int32), names)
        del event
        for name in ("level", "sqlstate", "user", "database", "application", "host"):
            out[name] = _categorical(take(name), self.vocab[name].values)
        out["pid"] = take("pid").astype(np.int64)
        for name in TEXT:
            out[name] = _strings(take(name), self.vocab[name].values)
        return pd.DataFrame(out)[EVENT_COLUMNS]

    def sessions_frame(self) -> pd.DataFrame:
        import pandas as pd

        columns = self.session_chunks.columns()
        if columns is None:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in SESSION_COLUMNS})
        events = np.array(self.vocab["event"].values, dtype=object)
        frame = pd.DataFrame(
            {
                "pid": columns["pid"],
                "start": _utc(columns["start"]),
                "end": _utc(columns["end"]),
                "duration_s": columns["duration_s"],
                **{
                    name: _categorical(columns[name], self.vocab[name].values)
                    for name in ("user", "database", "host", "application")
                },
                "ended_by": pd.Series(events[columns["ended_by"]], dtype=object),
            }
        )
        frame = frame.sort_values("start", kind="stable").reset_index(drop=True)
        return frame[SESSION_COLUMNS]

    def who(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(event codes, name codes, counts) of one name column, one item per distinct pair, in
        the order the pairs were first seen (the order ties are ranked in)."""
        parts = self.who_parts[name]
        if not parts:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        keys, counts, first = _merge_counts(parts)
        self.who_parts[name] = [(keys, counts, first)]
        order = np.lexsort((keys, first))
        keys, counts = keys[order], counts[order]
        return keys >> 32, keys & 0xFFFFFFFF, counts

    def events_dropped(self) -> dict[str, int]:
        values = self.vocab["event"].values
        return {values[code]: c.dropped for code, c in self.event_chunks.items() if c.dropped}


def _merge_counts(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts per distinct key, summed, with the earliest "first seen" of each."""
    keys = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    seen = np.concatenate([p[2] for p in parts])
    uniq, inverse = np.unique(keys, return_inverse=True)
    first = np.full(len(uniq), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, inverse, seen)
    return uniq, np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64), first


def _strings(codes: np.ndarray, values: list[str]) -> Any:
    """A text column from codes into its distinct values, gathered in C (pandas' str dtype)."""
    import pandas as pd

    taken = pa.array(values, pa.string()).take(pa.array(np.asarray(codes, dtype=np.int64)))
    return pd.array(taken, dtype="str")


def _utc(values: np.ndarray) -> pd.Series:
    import pandas as pd

    stamps = np.asarray(values, dtype=np.int64).astype("datetime64[ms]")
    return pd.Series(pd.DatetimeIndex(stamps).tz_localize("UTC"))


def _categorical(codes: np.ndarray, values: list[str]) -> pd.Categorical:
    """Codes into the values actually used, sorted: the same log gives the same frame however
    it was split or ordered (bincount, not np.unique: no sort of a million codes)."""
    import pandas as pd

    codes = np.asarray(codes, dtype=np.int64)
    used = (
        np.flatnonzero(np.bincount(codes, minlength=len(values))) if len(codes) else np.array([], dtype=int)
    )
    names = [values[i] for i in used]
    order = sorted(range(len(names)), key=names.__getitem__)
    remap = np.full(len(values), -1, dtype=np.int32)
    remap[used[order]] = np.arange(len(order), dtype=np.int32)
    categories = pd.Index([names[i] for i in order], dtype=object)
    return pd.Categorical.from_codes(remap[codes], categories=categories, validate=False)

"""The streaming state: rows in log order become paired sessions, events and running totals.

Memory stays flat whatever the log's size. Per pid only what is still open is kept (the login
of a session whose end has not come yet, a connection received whose login has not, the last
cause of the last second); counts, first and last times, who was hit and the per-minute
timeline are totals updated block by block. The frames keep at most `EVENT_ROWS_PER_KIND` rows
of each event (the latest ones) and `SESSION_ROWS` sessions; the summary's figures are exact
whatever was left out of the frames, and says when rows were.

Each block is handled with numpy: rows are grouped by pid in log order, and for every row the
last session line, connection received and cause before it in its pid come from running
maxima, so a block of a hundred thousand rows costs a few sorts, not a Python loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from playbook.collect import log_events
from playbook.collect.serverlog.rows import AUTH, CODED, DISC, EVENT, RECV, Coded, Rows

EVENT_ROWS_PER_KIND = 20_000
SESSION_ROWS = 50_000
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
        table = np.fromiter((self.code(v) for v in coded.values), dtype=np.int32, count=len(coded.values))
        return table[coded.codes] if len(coded.codes) else np.zeros(0, dtype=np.int32)

    def code(self, value: str) -> int:
        found = self.index.get(value)
        if found is None:
            found = self.index[value] = len(self.values)
            self.values.append(value)
        return found


@dataclass
class _Chunks:
    """Column chunks of one frame, trimmed to the latest `cap` rows."""

    cap: int
    parts: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    dropped: int = 0

    def add(self, columns: dict[str, Any], n: int) -> None:
        if not n:
            return
        self.parts.append(columns)
        self.rows += n
        while self.parts and self.rows - _len(self.parts[0]) >= self.cap:
            gone = _len(self.parts.pop(0))
            self.rows -= gone
            self.dropped += gone

    def columns(self) -> dict[str, Any] | None:
        if not self.parts:
            return None
        out: dict[str, Any] = {}
        for name in self.parts[0]:
            values = [p[name] for p in self.parts]
            out[name] = (
                [v for part in values for v in part]
                if isinstance(values[0], list)
                else np.concatenate(values)
            )
        extra = self.rows - self.cap
        if extra > 0:
            self.dropped += extra
            out = {k: v[extra:] for k, v in out.items()}
        return out


def _len(columns: dict[str, Any]) -> int:
    return len(next(iter(columns.values())))


class SessionState:
    """Consumes `Rows` in log order; `events_frame`, `sessions_frame` and `totals` at the end."""

    def __init__(self, since: np.datetime64 | None, until: np.datetime64 | None) -> None:
        self.since = None if since is None else int(since.astype("datetime64[ms]").astype(np.int64))
        self.until = None if until is None else int(until.astype("datetime64[ms]").astype(np.int64))
        self.vocab = {name: Vocab() for name in CODED}
        for event_id in log_events.CATALOG:
            self.vocab["event"].code(event_id)
        self.category_of = np.zeros(0, dtype=np.int8)
        self.open: dict[int, tuple[int, int, int, int, int]] = {}  # pid -> auth ts, user, db, app, host
        self.recv_pending: dict[int, int] = {}  # pid -> host of a connection not yet authorized
        self.last_cause: dict[int, tuple[int, int]] = {}  # pid -> (ts, event) of the latest cause
        self.seq = 0
        self.past_until = False
        self.event_chunks: dict[int, _Chunks] = {}
        self.session_chunks = _Chunks(SESSION_ROWS)
        # totals
        self.count: Counter[int] = Counter()
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.who: dict[str, Counter[tuple[int, int]]] = {name: Counter() for name in _WHO}
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
        self.lines += rows.lines
        self.entries += rows.entries
        self.bytes_read += rows.bytes_read
        n = len(rows)
        if not n:
            return
        codes = {name: self.vocab[name].remap(rows.coded[name]) for name in CODED}
        self._categories()
        kind = rows.kind
        ts = rows.ts.astype("datetime64[ms]").astype(np.int64)
        pid = rows.pid.astype(np.int64)
        event = codes["event"]
        category = self.category_of[event]
        error_code = self.vocab["level"].code("ERROR")
        cause = (kind == EVENT) & (category > 0) & (codes["level"] != error_code)

        # Group by pid, log order within a pid; pid 0 (no %p) pairs nothing.
        order = np.lexsort((np.arange(n), pid))
        p_sorted = pid[order]
        new_group = np.ones(n, dtype=bool)
        new_group[1:] = p_sorted[1:] != p_sorted[:-1]
        position = np.arange(n)
        group_start = np.maximum.accumulate(np.where(new_group, position, 0))
        paired = p_sorted != 0

        def last_before(mask: np.ndarray) -> np.ndarray:
            """Per sorted row: the sorted position of the last earlier row of its pid in `mask`."""
            acc = np.maximum.accumulate(np.where(mask[order] & paired, position, -1))
            prev = np.empty(n, dtype=np.int64)
            prev[0] = -1
            prev[1:] = acc[:-1]
            return np.where(prev >= group_start, prev, -1)

        session_line = (kind == AUTH) | (kind == DISC)
        sess_prev = last_before(session_line)
        recv_prev = last_before(kind == RECV)
        cause_prev = last_before(cause)
        k_sorted = kind[order]

        user, database, application, host = (codes[name].copy() for name in _WHO)

        # The session each row belongs to: (auth ts, user, db, app, host) or None.
        def open_session(i_sorted: int) -> tuple[int, int, int, int, int] | None:
            prev = sess_prev[i_sorted]
            if prev >= 0:
                if k_sorted[prev] != AUTH:
                    return None
                row = order[prev]
                return (
                    int(ts[row]),
                    int(user[row]),
                    int(database[row]),
                    int(application[row]),
                    int(auth_host[row]),
                )
            if not paired[i_sorted]:
                return None
            return self.open.get(int(p_sorted[i_sorted]))

        # The host of a login: its own (%h) or the connection received just before it.
        auth_host = host.copy()
        auth_sorted = np.flatnonzero((k_sorted == AUTH) & paired)
        for i in auth_sorted.tolist():
            row = order[i]
            rp, sp = recv_prev[i], sess_prev[i]
            if rp >= 0 and rp > sp:
                auth_host[row] = host[order[rp]]
            elif sp < 0 and rp < 0:
                pending = self.recv_pending.get(int(p_sorted[i]))
                if pending is not None:
                    auth_host[row] = pending

        # Events: blank names filled from the session of their pid.
        blank = np.zeros(n, dtype=bool)
        for column in (user, database, application, host):
            blank |= column == 0
        fill_sorted = np.flatnonzero((k_sorted == EVENT) & paired & blank[order])
        for i in fill_sorted.tolist():
            row = order[i]
            found = open_session(i)
            if found is None:
                found = self._session_ahead(i, order, k_sorted, group_start, ts, rows.session_s, codes)
                if found is None:
                    continue
            _, u, d, a, h = found
            if user[row] == 0:
                user[row] = u
            if database[row] == 0:
                database[row] = d
            if application[row] == 0:
                application[row] = a
            if host[row] == 0:
                host[row] = h

        # Sessions: a disconnection ends the open login of its pid; a second login leaves the
        # first one's end unknown.
        ended: list[tuple[int, int, int, float, int, int, int, int, str]] = []
        unknown: list[tuple[int, int, int, int, int, int]] = []
        session_rows = np.flatnonzero((k_sorted == AUTH) | (k_sorted == DISC))
        for i in session_rows.tolist():
            row = order[i]
            k = k_sorted[i]
            pid_i = int(p_sorted[i])
            if k == AUTH:
                if not paired[i]:
                    continue
                before = open_session(i)
                if before is not None:
                    unknown.append((pid_i, *before))
                continue
            end = int(ts[row])
            seconds = float(rows.session_s[row])
            start = end - int(round((0.0 if np.isnan(seconds) else seconds) * 1000)) if end != _NAT else _NAT
            app = 0
            login = open_session(i) if paired[i] else None
            if login is not None:
                if login[0] != _NAT and start != _NAT and login[0] < start - _STALE_MS:
                    unknown.append((pid_i, *login))  # an earlier session whose end was not logged
                else:
                    app = login[3]
            by = ""
            cp = cause_prev[i]
            if cp >= 0:
                c_row = order[cp]
                if 0 <= end - ts[c_row] <= _CAUSE_MS:
                    by = self.vocab["event"].values[event[c_row]]
            elif paired[i] and pid_i in self.last_cause:
                c_ts, c_event = self.last_cause[pid_i]
                if 0 <= end - c_ts <= _CAUSE_MS:
                    by = self.vocab["event"].values[c_event]
            ended.append(
                (pid_i, start, end, seconds, int(user[row]), int(database[row]), int(host[row]), app, by)
            )

        self._carry(
            order,
            k_sorted,
            p_sorted,
            paired,
            new_group,
            ts,
            user,
            database,
            application,
            auth_host,
            host,
            event,
            cause,
        )
        codes.update(user=user, database=database, application=application, host=host)
        self._emit_events(rows, ts, pid, codes, category)
        self._emit_sessions(ended, unknown)

    def _session_ahead(
        self,
        i: int,
        order: np.ndarray,
        k_sorted: np.ndarray,
        group_start: np.ndarray,
        ts: np.ndarray,
        session_s: np.ndarray,
        codes: dict[str, np.ndarray],
    ) -> tuple[int, int, int, int, int] | None:
        """The session a disconnection later in the block says the row was in (no login seen)."""
        j = i + 1
        while j < len(order) and group_start[j] == group_start[i]:
            k = k_sorted[j]
            if k == AUTH:
                return None
            if k == DISC:
                row = order[j]
                seconds = session_s[row]
                start = ts[row] - int(round((0.0 if np.isnan(seconds) else seconds) * 1000))
                if start <= ts[order[i]]:
                    return (
                        int(start),
                        int(codes["user"][row]),
                        int(codes["database"][row]),
                        0,
                        int(codes["host"][row]),
                    )
                return None
            j += 1
        return None

    def _carry(
        self,
        order: np.ndarray,
        k_sorted: np.ndarray,
        p_sorted: np.ndarray,
        paired: np.ndarray,
        new_group: np.ndarray,
        ts: np.ndarray,
        user: np.ndarray,
        database: np.ndarray,
        application: np.ndarray,
        auth_host: np.ndarray,
        host: np.ndarray,
        event: np.ndarray,
        cause: np.ndarray,
    ) -> None:
        """What the next block needs: open logins, pending connections, the last second's causes."""
        n = len(order)
        group_end = np.append(np.flatnonzero(new_group)[1:] - 1, n - 1)
        session_line = ((k_sorted == AUTH) | (k_sorted == DISC)) & paired
        position = np.arange(n)
        last_sess = np.maximum.accumulate(np.where(session_line, position, -1))[group_end]
        last_recv = np.maximum.accumulate(np.where((k_sorted == RECV) & paired, position, -1))[group_end]
        last_cause = np.maximum.accumulate(np.where(cause[order] & paired, position, -1))[group_end]
        starts = np.flatnonzero(new_group)
        for g, (ls, lr, lc) in enumerate(
            zip(last_sess.tolist(), last_recv.tolist(), last_cause.tolist(), strict=True)
        ):
            pid_i = int(p_sorted[group_end[g]])
            start = starts[g]
            if ls >= start:
                if k_sorted[ls] == AUTH:
                    row = order[ls]
                    self.open[pid_i] = (
                        int(ts[row]),
                        int(user[row]),
                        int(database[row]),
                        int(application[row]),
                        int(auth_host[row]),
                    )
                else:
                    self.open.pop(pid_i, None)
            if lr >= start and lr > ls:
                self.recv_pending[pid_i] = int(host[order[lr]])
            elif ls >= start:
                self.recv_pending.pop(pid_i, None)
            if lc >= start:
                row = order[lc]
                self.last_cause[pid_i] = (int(ts[row]), int(event[row]))
        if len(self.last_cause) > 10_000 or len(self.recv_pending) > 100_000:
            newest = int(ts.max())
            self.last_cause = {p: c for p, c in self.last_cause.items() if c[0] >= newest - _CAUSE_MS}
            if len(self.recv_pending) > 100_000:
                self.recv_pending.clear()  # connections that never logged in: nothing to pair

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
            uniq, cnt = np.unique(key, return_counts=True)
            counter = self.who[name]
            for k, c in zip(uniq.tolist(), cnt.tolist(), strict=True):
                counter[(k >> 32, k & 0xFFFFFFFF)] += c
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
        # frame rows, per event
        idx = index.tolist()
        for code in np.flatnonzero(counts).tolist():
            sel = index[event == code]
            local = sel.tolist()
            chunks = self.event_chunks.setdefault(code, _Chunks(EVENT_ROWS_PER_KIND))
            columns: dict[str, Any] = {
                "seq": seq[sel],
                "ts": ts[sel],
                "pid": pid[sel],
                **{name: codes[name][sel] for name in CODED},
                "message": [rows.message[i] for i in local],
                "detail": [rows.detail[i] for i in local],
            }
            chunks.add(columns, len(sel))
        del idx

    def _emit_sessions(
        self,
        ended: list[tuple[int, int, int, float, int, int, int, int, str]],
        unknown: list[tuple[int, int, int, int, int, int]],
    ) -> None:
        rows: list[tuple[int, int, int, float, int, int, int, int, str]] = []
        for pid_i, start, end, seconds, u, d, h, a, by in ended:
            if self._window_ok(end):
                rows.append((pid_i, start, end, seconds, u, d, h, a, by))
        for pid_i, start, u, d, a, h in unknown:
            if self._window_ok(start):
                rows.append((pid_i, start, _NAT, float("nan"), u, d, h, a, ""))
        self._add_sessions(rows)

    def _window_ok(self, t: int) -> bool:
        if self.since is None and self.until is None:
            return True
        if t == _NAT:
            return False
        return (self.since is None or t >= self.since) and (self.until is None or t <= self.until)

    def _add_sessions(self, rows: list[tuple[int, int, int, float, int, int, int, int, str]]) -> None:
        if not rows:
            return
        pid_, start, end, seconds, u, d, h, a, by = (list(c) for c in zip(*rows, strict=True))
        secs = np.array(seconds, dtype=np.float64)
        self.sessions += len(rows)
        ended = np.array(end, dtype=np.int64) != _NAT
        self.sessions_ended += int(ended.sum())
        self.durations.append(secs[~np.isnan(secs)])
        self.ended_by.update(b for b in by if b)
        self.session_chunks.add(
            {
                "pid": np.array(pid_, dtype=np.int64),
                "start": np.array(start, dtype=np.int64),
                "end": np.array(end, dtype=np.int64),
                "duration_s": secs,
                "user": np.array(u, dtype=np.int32),
                "database": np.array(d, dtype=np.int32),
                "host": np.array(h, dtype=np.int32),
                "application": np.array(a, dtype=np.int32),
                "ended_by": by,
            },
            len(rows),
        )

    def finish(self) -> None:
        """Logins still open at the end of the log: sessions whose end is unknown."""
        rows = [
            (pid_i, start, _NAT, float("nan"), u, d, h, a, "")
            for pid_i, (start, u, d, a, h) in self.open.items()
            if self._window_ok(start)
        ]
        self.open.clear()
        self._add_sessions(rows)

    def _categories(self) -> None:
        values = self.vocab["event"].values
        if len(self.category_of) != len(values):
            names = ["", *log_events.CATEGORIES]
            self.category_of = np.array([names.index(log_events.category(v)) for v in values], dtype=np.int8)

    # -- the frames ----------------------------------------------------------------------------
    def events_frame(self) -> pd.DataFrame:
        parts = [c.columns() for c in self.event_chunks.values()]
        present = [p for p in parts if p is not None]
        if present:
            columns = {
                name: (
                    [v for p in present for v in p[name]]
                    if isinstance(present[0][name], list)
                    else np.concatenate([p[name] for p in present])
                )
                for name in present[0]
            }
            order = np.argsort(columns["seq"], kind="stable")
            take = order.tolist()
            message = [columns["message"][i] for i in take]
            detail = [columns["detail"][i] for i in take]
            arrays: dict[str, np.ndarray] = {
                k: v[order] for k, v in columns.items() if isinstance(v, np.ndarray)
            }
        else:
            arrays = {
                "ts": np.zeros(0, dtype=np.int64),
                "pid": np.zeros(0, dtype=np.int64),
                **{name: np.zeros(0, dtype=np.int32) for name in CODED},
            }
            message, detail = [], []
        self._categories()
        names = ["", *log_events.CATEGORIES]
        frame = pd.DataFrame(
            {
                "ts": _utc(arrays["ts"]),
                "event": _categorical(arrays["event"], self.vocab["event"].values),
                "category": _categorical(self.category_of[arrays["event"]].astype(np.int32), names),
                **{
                    name: _categorical(arrays[name], self.vocab[name].values)
                    for name in ("level", "sqlstate", "user", "database", "application", "host")
                },
                "pid": arrays["pid"].astype(np.int64),
                "message": pd.array(message, dtype="str"),
                "detail": pd.array(detail, dtype="str"),
            }
        )
        return frame[EVENT_COLUMNS]

    def sessions_frame(self) -> pd.DataFrame:
        columns = self.session_chunks.columns()
        if columns is None:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in SESSION_COLUMNS})
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
                "ended_by": pd.Series(columns["ended_by"], dtype=object),
            }
        )
        frame = frame.sort_values("start", kind="stable").reset_index(drop=True)
        return frame[SESSION_COLUMNS]

    def events_dropped(self) -> dict[str, int]:
        values = self.vocab["event"].values
        return {values[code]: c.dropped for code, c in self.event_chunks.items() if c.dropped}


def _utc(values: np.ndarray) -> pd.Series:
    stamps = np.asarray(values, dtype=np.int64).astype("datetime64[ms]")
    return pd.Series(pd.DatetimeIndex(stamps).tz_localize("UTC"))


def _categorical(codes: np.ndarray, values: list[str]) -> pd.Categorical:
    """Codes into the values actually used, sorted: the same log gives the same frame however
    it was split or ordered (bincount, not np.unique: no sort of a million codes)."""
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

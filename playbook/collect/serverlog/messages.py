"""What the readers take from messages and name columns, shared by the stderr reader and the
csvlog/jsonlog reader (serverlog.stderr, serverlog.structured):
- `classify_message`: an entry's event id and text (cached per distinct message);
- `login_names`: user, database and application of a 'connection authorized' line;
- `pids_of`, `coded_names`, `display_names`: pids and names of binary columns as the frames
  show them;
- `Messages`: the kept entries' messages and the session lines' fields read from them.
Compiled (engine.ENGINE.scan): names hashed and session lines split in C; reference: pyarrow
over one binary column (split on spaces, checked token by token)."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from playbook.collect import log_events
from playbook.collect.serverlog import engine
from playbook.collect.serverlog.arrow_buffers import (
    as_numpy,
    binary_array,
    binary_scalar,
    bool_array,
    index_array,
)
from playbook.collect.serverlog.rows import Coded, clean_name, host_of
from playbook.collect.serverlog.rules import ALL_LEVEL_WORDS, DISCONNECTION_LINE, LOGIN_LINE, RECEIVED_LINE

_classified: dict[tuple[bytes, int, bytes, str], tuple[str | None, str]] = {}
_auth_cache: dict[bytes, tuple[str, str, str]] = {}


def classify_message(message: bytes, level: int, sqlstate: bytes, language: str) -> tuple[str | None, str]:
    """(event id or None, text) for one entry, cached by its first line, level, SQLSTATE and
    the language it is written in."""
    head = message.split(b"\n\t", 1)[0]
    key = (message if len(message) < 300 else head, level, sqlstate, language)
    found = _classified.get(key)
    if found is None:
        if len(_classified) > 50_000:  # messages with ids in them: stay bounded
            _classified.clear()
        level_text = ALL_LEVEL_WORDS[level - 1].decode()
        kind = log_events.classify(
            head.decode("utf-8", "replace"), level_text, sqlstate.decode() or None, language
        )
        text = message.replace(b"\n\t", b"\n").decode("utf-8", "replace") if kind else ""
        found = _classified[key] = (kind.id if kind else None, text)
    if found[0] is not None and len(message) >= 300:
        return found[0], message.replace(b"\n\t", b"\n").decode("utf-8", "replace")
    return found


def login_names(message: bytes) -> tuple[str, str, str]:
    found = _auth_cache.get(message)
    if found is None:
        if len(_auth_cache) > 50_000:
            _auth_cache.clear()
        text = message.rstrip(b"\n")
        match = LOGIN_LINE.match(text)
        groups = match.groups() if match else (b"", b"", b"")
        u, d, a = (clean_name(g) for g in groups)
        found = _auth_cache[message] = (u, d, a)
    return found


def pids_of(values: pa.Array | None, n: int) -> np.ndarray:
    """Process ids of a binary column (int64): 1 to 18 digits, else 0. A longer run of digits
    is no pid, and casting it would overflow and abort the whole read."""
    pid = np.zeros(n, dtype=np.int64)
    if values is None or not n:
        return pid
    digits = as_numpy(
        pc.match_substring_regex(values, r"^[0-9]{1,18}$").fill_null(bool_array(np.zeros(1, bool))[0])
    )
    if digits.any():
        pid[digits] = as_numpy(pc.cast(values.filter(bool_array(digits)).cast(pa.string()), pa.int64()))
    return pid


def coded_names(values: pa.Array | None, n: int, host: bool = False) -> Coded:
    """A binary column (nulls as "") as codes into its distinct values."""
    if values is None:
        return Coded.constant("", n)
    compiled = engine.ENGINE.scan
    if compiled is not None and len(values):
        # hashed and cleaned in C straight from the column's buffers; a null reads as ""
        _, offsets, data = values.buffers()
        first = values.offset
        bounds = np.frombuffer(offsets, dtype=np.int32)[first : first + len(values) + 1].astype(np.int64)
        starts, ends = bounds[:-1], bounds[1:]
        if values.null_count:
            ends = np.where(as_numpy(values.is_valid()), ends, starts)
        codes, names = compiled.encode(data if data is not None else b"", starts, ends, 2 if host else 1)
        return Coded(np.frombuffer(codes, dtype=np.int32), names or [""])
    encoded = pc.dictionary_encode(values.fill_null(binary_scalar(b"")))
    return Coded(
        as_numpy(encoded.indices).astype(np.int32),
        display_names(encoded.dictionary.to_pylist(), host) or [""],
    )


def display_names(raw: list[bytes], host: bool = False) -> list[str]:
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


class Messages:
    """The kept entries' messages (buf[starts[i]:ends[i]]) and what is read from them: the
    compiled loops when there are, else pyarrow over one binary column (the reference)."""

    def __init__(self, buf: bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        self.buf, self.starts, self.ends = buf, starts, ends
        self.compiled = engine.ENGINE.scan  # the engine of the whole block
        self.column: pa.Array | None = None
        if self.compiled is None:
            # one binary array over the block's buffer: every other slice of [0, s0, e0, s1, ...]
            k = len(starts)
            bounds = np.empty(2 * k + 2, dtype=np.int32)
            bounds[0], bounds[-1] = 0, len(buf)
            bounds[1:-1:2], bounds[2:-1:2] = starts, ends
            buffers = [None, pa.py_buffer(bounds), pa.py_buffer(buf)]
            column = pa.Array.from_buffers(pa.binary(), 2 * k + 1, buffers)
            self.column = column.take(index_array(np.arange(1, 2 * k + 1, 2)))

    def distinct(self, rows: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
        """(int64 codes, distinct messages in order of first appearance) of `rows`."""
        if self.column is not None:
            return distinct_values(self.column.take(index_array(rows)))
        assert self.compiled is not None
        codes, values = self.compiled.encode(self.buf, self.starts[rows], self.ends[rows], 0)
        return np.frombuffer(codes, dtype=np.int32).astype(np.int64), values

    def _text(self, row: int) -> bytes:
        return self.buf[int(self.starts[row]) : int(self.ends[row])].rstrip(b"\n")

    def _encoded(
        self, starts: np.ndarray, ends: np.ndarray, patch: dict[int, bytes], host: bool = False
    ) -> Coded:
        """The slices as a Coded column of names (cleaned in C, as display_names would), rows in
        `patch` taking the raw value given there."""
        assert self.compiled is not None
        starts, ends = np.ascontiguousarray(starts), np.ascontiguousarray(ends)
        raw, values = self.compiled.encode(self.buf, starts, ends, 2 if host else 1)
        codes = np.frombuffer(raw, dtype=np.int32)  # a bytearray's: writable
        if patch:
            first = len(values)
            index: dict[bytes, int] = {}
            for j, value in patch.items():
                codes[j] = first + index.setdefault(value, len(index))
            values += display_names(list(index), host)
        return Coded(codes, values or [""])

    def received(self, rows: np.ndarray) -> Coded:
        """The hosts of 'connection received' lines (the lenient regex for odd ones)."""
        if self.column is not None:
            (hosts,) = session_line_fields(self.column.take(index_array(rows)), False, RECEIVED_LINE, (1,))
            return coded_names(hosts, len(rows), True)
        assert self.compiled is not None
        ok, _, fields = self.compiled.session_fields(self.buf, self.starts[rows], self.ends[rows], False)
        bounds = np.frombuffer(fields, dtype=np.int64).reshape(-1, 2)
        patch = {}
        for j in np.flatnonzero(np.frombuffer(ok, dtype=np.uint8) == 0).tolist():
            match = RECEIVED_LINE.match(self._text(int(rows[j])))
            patch[j] = (match.group(1) or b"") if match else b""
        return self._encoded(bounds[:, 0], bounds[:, 1], patch, host=True)

    def disconnected(self, rows: np.ndarray) -> tuple[tuple[np.ndarray, ...], tuple[Coded, Coded, Coded]]:
        """((hours, minutes, seconds), (user, database, host)) of disconnection lines (NaN
        where the lenient regex finds no time either)."""
        if self.column is not None:
            got = session_line_fields(
                self.column.take(index_array(rows)), True, DISCONNECTION_LINE, (1, 2, 3, 4, 5, 6)
            )
            n = len(rows)
            return tuple(floats_of(col) for col in got[:3]), (
                coded_names(got[3], n),
                coded_names(got[4], n),
                coded_names(got[5], n, True),
            )
        assert self.compiled is not None
        ok, raw_hms, fields = self.compiled.session_fields(self.buf, self.starts[rows], self.ends[rows], True)
        hms = np.frombuffer(raw_hms, dtype=np.float64).reshape(-1, 3)  # writable
        bounds = np.frombuffer(fields, dtype=np.int64).reshape(-1, 6)
        patches: tuple[dict[int, bytes], ...] = ({}, {}, {})
        for j in np.flatnonzero(np.frombuffer(ok, dtype=np.uint8) == 0).tolist():
            match = DISCONNECTION_LINE.match(self._text(int(rows[j])))
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


def floats_of(values: pa.Array) -> np.ndarray:
    """Numbers of a binary column; empty or null: NaN."""
    text = pc.if_else(pc.equal(values, binary_scalar(b"")), binary_scalar(None), values).cast(pa.string())
    nan = pa.Array.from_buffers(pa.float64(), 1, [None, pa.py_buffer(np.array([np.nan]))])[0]
    return as_numpy(pc.cast(text, pa.float64()).fill_null(nan)).astype(np.float64)


def distinct_values(values: pa.Array) -> tuple[np.ndarray, list[bytes]]:
    """(codes, distinct values) of a binary column, hashed in C."""
    encoded = pc.dictionary_encode(values)
    return as_numpy(encoded.indices).astype(np.int64), encoded.dictionary.to_pylist()


_TIME = r"^\d+:\d+:\d+(?:\.\d+)?$"


def split_session_line(texts: pa.Array, disconnection: bool) -> tuple[list[pa.Array], np.ndarray]:
    """'connection received: host=H[ port=P]' -> [H]; 'disconnection: session time: H:M:S
    user=U database=D host=H[ port=P]' -> [H, M, S, U, D, H]; and which rows had that shape."""
    n = len(texts)
    parts = pc.split_pattern(texts, " ")
    offsets = as_numpy(parts.offsets)[:-1].astype(np.int64)
    counts = as_numpy(pc.list_value_length(parts)).astype(np.int64)
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
        return values.take(index_array(np.minimum(offsets + i, last)))

    fields: list[pa.Array] = []
    for i, text, exact in shape:
        t = token(i)
        if exact:
            ok &= as_numpy(pc.equal(t, binary_scalar(text)))
        else:
            ok &= as_numpy(pc.starts_with(t, text))
            fields.append(pc.binary_slice(t, len(text), 1 << 30))
    if not disconnection:
        return fields, ok
    port = token(7)
    ok &= (counts == 7) | as_numpy(pc.starts_with(port, b"port="))
    clock = token(3)
    ok &= as_numpy(pc.match_substring_regex(clock, _TIME))
    hms = pc.split_pattern(pc.if_else(bool_array(ok), clock, binary_scalar(b"0:0:0")), ":")
    flat = hms.values
    start = as_numpy(hms.offsets)[:-1].astype(np.int64)
    return [flat.take(index_array(start + j)) for j in range(3)] + fields, ok


def session_line_fields(
    texts: pa.Array, disconnection: bool, lenient: re.Pattern[bytes], groups: tuple[int, ...]
) -> list[pa.Array]:
    """Fields of session lines (their messages) as binary columns: split on spaces (what the
    lenient regex would take, checked token by token), the lenient regex on the odd ones
    (names with spaces)."""
    columns, ok = split_session_line(texts, disconnection)
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
            pc.replace_with_mask(col, bool_array(mask), binary_array(values))
            for col, values in zip(columns, patch, strict=False)
        ]
    return columns

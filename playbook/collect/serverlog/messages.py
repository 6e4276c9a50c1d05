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
    binary_scalar,
    bool_array,
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
    """The kept entries' messages (buf[starts[i]:ends[i]]) and what is read from them. The
    session lines are split on single spaces and checked token by token (in C, or by
    `received_host` and `disconnection_fields`, the plain reference); the lenient regexes read
    the odd ones (names with spaces)."""

    def __init__(self, buf: bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        self.buf, self.starts, self.ends = buf, starts, ends
        self.compiled = engine.ENGINE.scan  # the engine of the whole block

    def _slice(self, row: int) -> bytes:
        return self.buf[int(self.starts[row]) : int(self.ends[row])]

    def _text(self, row: int) -> bytes:
        return self._slice(row).rstrip(b"\n")

    def distinct(self, rows: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
        """(int64 codes, distinct messages in order of first appearance) of `rows`."""
        if self.compiled is not None:
            codes, values = self.compiled.encode(self.buf, self.starts[rows], self.ends[rows], 0)
            return np.frombuffer(codes, dtype=np.int32).astype(np.int64), values
        index: dict[bytes, int] = {}
        found = [index.setdefault(self._slice(row), len(index)) for row in rows.tolist()]
        return np.array(found, dtype=np.int64), list(index)

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
        if self.compiled is None:
            hosts = [received_host(self._slice(row)) for row in rows.tolist()]
            return names_of(
                [
                    self._received_leniently(row) if h is None else h
                    for h, row in zip(hosts, rows.tolist(), strict=True)
                ],
                host=True,
            )
        ok, _, fields = self.compiled.session_fields(self.buf, self.starts[rows], self.ends[rows], False)
        bounds = np.frombuffer(fields, dtype=np.int64).reshape(-1, 2)
        patch = {}
        for j in np.flatnonzero(np.frombuffer(ok, dtype=np.uint8) == 0).tolist():
            patch[j] = self._received_leniently(int(rows[j]))
        return self._encoded(bounds[:, 0], bounds[:, 1], patch, host=True)

    def _received_leniently(self, row: int) -> bytes:
        match = RECEIVED_LINE.match(self._text(row))
        return (match.group(1) or b"") if match else b""

    def _disconnected_leniently(self, row: int) -> tuple[float, float, float, bytes, bytes, bytes]:
        """The fields of a disconnection line by the lenient regex (NaN and "" where it fails)."""
        match = DISCONNECTION_LINE.match(self._text(row))
        groups = [(match.group(g) or b"") if match else b"" for g in range(1, 7)]
        h, m, s = (float(g) if g else np.nan for g in groups[:3])
        return h, m, s, groups[3], groups[4], groups[5]

    def disconnected(self, rows: np.ndarray) -> tuple[tuple[np.ndarray, ...], tuple[Coded, Coded, Coded]]:
        """((hours, minutes, seconds), (user, database, host)) of disconnection lines (NaN
        where the lenient regex finds no time either)."""
        if self.compiled is None:
            times: list[tuple[float, float, float]] = []
            users, databases, hosts = [], [], []
            for row in rows.tolist():
                found = disconnection_fields(self._slice(row)) or self._disconnected_leniently(row)
                times.append(found[:3])
                users.append(found[3])
                databases.append(found[4])
                hosts.append(found[5])
            hms = np.array(times, dtype=np.float64).reshape(-1, 3)
            return (hms[:, 0], hms[:, 1], hms[:, 2]), (
                names_of(users),
                names_of(databases),
                names_of(hosts, True),
            )
        ok, raw_hms, fields = self.compiled.session_fields(self.buf, self.starts[rows], self.ends[rows], True)
        hms = np.frombuffer(raw_hms, dtype=np.float64).reshape(-1, 3)  # writable
        bounds = np.frombuffer(fields, dtype=np.int64).reshape(-1, 6)
        patches: tuple[dict[int, bytes], ...] = ({}, {}, {})
        for j in np.flatnonzero(np.frombuffer(ok, dtype=np.uint8) == 0).tolist():
            h, m, s, *names_read = self._disconnected_leniently(int(rows[j]))
            hms[j] = [h, m, s]
            for patch, value in zip(patches, names_read, strict=True):
                patch[j] = value
        coded = tuple(
            self._encoded(bounds[:, 2 * i], bounds[:, 2 * i + 1], patches[i], host=i == 2) for i in range(3)
        )
        return (hms[:, 0], hms[:, 1], hms[:, 2]), (coded[0], coded[1], coded[2])


def names_of(raw: list[bytes], host: bool = False) -> Coded:
    """Raw names as a Coded column of the names the frames show (display_names)."""
    index: dict[bytes, int] = {}
    codes = np.array([index.setdefault(value, len(index)) for value in raw], dtype=np.int32)
    return Coded(codes, display_names(list(index), host) or [""])


_CLOCK = re.compile(rb"[0-9]+:[0-9]+:[0-9]+(?:\.[0-9]+)?\Z")


def received_host(message: bytes) -> bytes | None:
    """'connection received: host=H[ ...]' -> H, read token by token (single spaces); None
    for another shape."""
    tokens = message.split(b" ")
    if len(tokens) >= 3 and tokens[:2] == [b"connection", b"received:"] and tokens[2].startswith(b"host="):
        return tokens[2][5:]
    return None


def disconnection_fields(message: bytes) -> tuple[float, float, float, bytes, bytes, bytes] | None:
    """'disconnection: session time: H:M:S user=U database=D host=H[ port=P]' -> (H, M, S, U,
    D, H), read token by token (single spaces); None for another shape."""
    tokens = message.split(b" ")
    if len(tokens) not in (7, 8) or tokens[:3] != [b"disconnection:", b"session", b"time:"]:
        return None
    if not (
        tokens[4].startswith(b"user=")
        and tokens[5].startswith(b"database=")
        and tokens[6].startswith(b"host=")
    ):
        return None
    if len(tokens) == 8 and not tokens[7].startswith(b"port="):
        return None
    if not _CLOCK.match(tokens[3]):
        return None
    hours, minutes, seconds = (float(part) for part in tokens[3].split(b":"))
    return hours, minutes, seconds, tokens[4][5:], tokens[5][9:], tokens[6][5:]


_NAMES: dict[bytes, str] = {}
_HOSTS: dict[bytes, str] = {}

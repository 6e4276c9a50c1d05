"""The rows a parser keeps from one block: columnar, in log order, with local dictionaries.

A parser (stderr, csvlog, jsonlog) turns bytes into `Rows`; the streaming state
(playbook.collect.serverlog.state) consumes them in log order. Names that repeat millions of
times (users, databases, applications, hosts, events) travel as codes into a dictionary of the
block's own, so a block can be parsed in another process and its codes mapped to the reader's
global ones in one numpy take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from playbook.evidence.zones import NameReading

RECV, AUTH, DISC, EVENT = 1, 2, 3, 4
CODED = ("event", "level", "sqlstate", "user", "database", "application", "host")
TEXT = ("message", "detail")  # coded too: the same few texts repeat
_UNKNOWN = frozenset({"[unknown]", "unknown"})


def host_of(host_port: str) -> str:
    """'10.0.0.1(5432)' -> '10.0.0.1' (the %r escape); csvlog's '10.0.0.1:5432' likewise."""
    paren = host_port.find("(")
    if paren > 0:
        return host_port[:paren]
    if host_port.count(":") == 1:
        return host_port.split(":", 1)[0]
    return host_port


def clean_name(value: bytes | str | None) -> str:
    """A name as the frames show it: decoded with replacement, "[unknown]" as empty."""
    if value is None:
        return ""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return "" if text in _UNKNOWN else text


@dataclass
class Coded:
    """A column as codes into `values` (local to its block)."""

    codes: np.ndarray  # int32
    values: list[str]

    @classmethod
    def of(cls, items: Sequence[Any]) -> Coded:
        """Factorize in C, then clean only the distinct values."""
        if not len(items):
            return cls(np.zeros(0, dtype=np.int32), [""])
        codes, uniques = _factorize(items)
        return cls(codes, [clean_name(v) for v in uniques])

    @classmethod
    def texts(cls, items: Sequence[str]) -> Coded:
        """Factorize texts as they are (no cleaning)."""
        if not len(items):
            return cls(np.zeros(0, dtype=np.int32), [""])
        codes, uniques = _factorize(items)
        return cls(codes, list(uniques))

    @classmethod
    def constant(cls, value: str, n: int) -> Coded:
        return cls(np.zeros(n, dtype=np.int32), [value])

    def take(self, index: np.ndarray) -> Coded:
        return Coded(self.codes[index], self.values)


def _factorize(items: Sequence[Any]) -> tuple[np.ndarray, Any]:
    """pandas' factorize (first-appearance order, None kept as a value), pandas imported here:
    the stderr reader never calls it, so `playbook logs` on a stderr log never loads pandas."""
    import pandas as pd

    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    codes, uniques = pd.factorize(arr, use_na_sentinel=False)
    return codes.astype(np.int32), uniques


@dataclass
class Rows:
    """Kept entries of one block, in log order; every column has len(kind) items."""

    kind: np.ndarray  # int8: RECV, AUTH, DISC or EVENT
    ts: np.ndarray  # datetime64[ms], UTC (NaT when the line has no time)
    pid: np.ndarray  # int64, 0 when the line has none
    session_s: np.ndarray  # float64, the session time of DISC rows
    coded: dict[str, Coded]  # CODED and TEXT; message and detail are "" for session lines
    lines: int = 0
    entries: int = 0
    bytes_read: int = 0
    readings: dict[str, NameReading] = field(default_factory=dict)  # printed zone names
    names_seen: dict[str, int] = field(default_factory=dict)  # printed zone name -> entries

    def __len__(self) -> int:
        return len(self.kind)

    @classmethod
    def empty(cls) -> Rows:
        return cls(
            np.zeros(0, dtype=np.int8),
            np.zeros(0, dtype="datetime64[ms]"),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.float64),
            {name: Coded.constant("", 0) for name in (*CODED, *TEXT)},
        )

    @classmethod
    def concat(cls, parts: list[Rows]) -> Rows:
        """Rows of consecutive pieces in order, with the dictionaries merged."""
        parts = [p for p in parts if len(p)] or [cls.empty()]
        coded: dict[str, Coded] = {}
        for name in (*CODED, *TEXT):
            values: list[str] = []
            index: dict[str, int] = {}
            codes = []
            for p in parts:
                c = p.coded[name]
                remap = np.array([index.setdefault(v, len(index)) for v in c.values], dtype=np.int32)
                codes.append(remap[c.codes] if len(c.codes) else c.codes)
            values = list(index)
            coded[name] = Coded(np.concatenate(codes), values or [""])
        return cls(
            np.concatenate([p.kind for p in parts]),
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.pid for p in parts]),
            np.concatenate([p.session_s for p in parts]),
            coded,
        )

    def take(self, index: np.ndarray) -> Rows:
        return Rows(
            self.kind[index],
            self.ts[index],
            self.pid[index],
            self.session_s[index],
            {name: c.take(index) for name, c in self.coded.items()},
        )

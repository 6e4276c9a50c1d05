"""Time, zone and pid read at fixed byte places, without a regex: the heads of entries whose
prefix starts '%m [%p' or '%t [%p' (any literal between zone and pid), and csvlog's and
jsonlog's timestamps ('2025-03-01 10:00:00.123 CET'). Compiled: one C loop per entry
(_scan.head, _scan.stamp); reference: one regex per entry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

from playbook.collect.serverlog import engine


@dataclass(frozen=True)
class FixedHead:
    """A prefix that starts with %m or %t, then a literal that starts with a space, then %p
    ('%m [%p] ...', '%t [%p-%l] ...'): time, zone and pid are read with numpy at fixed places,
    no regex."""

    millis: bool  # %m: '.mmm' after the seconds
    between: bytes  # the literal between the zone name and the pid


def read_fixed_heads(
    arr: np.ndarray,
    starts: np.ndarray,
    limits: np.ndarray,
    head: FixedHead,
    zone_ends: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bytes], np.ndarray]:
    """(ok, naive ms since the epoch, zone codes, zone names, pid) of the entries starting at
    `starts` whose level begins at `limits`; rows not ok are left to the regexes (their other
    values mean nothing). With `zone_ends` (csvlog and jsonlog times) the zone name ends there
    and nothing follows it (pid 0)."""
    if engine.ENGINE.scan is not None and len(arr):
        return _read_fixed_heads_compiled(arr, starts, limits, head, zone_ends)
    return _read_fixed_heads_reference(arr, starts, limits, head, zone_ends)


_WALL = rb"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})"


@cache
def _shape(head: FixedHead, stamp: bool) -> re.Pattern[bytes]:
    """The head as one regex: the wall clock, milliseconds for %m, a space, the zone name (1 to
    8 bytes), then the literal and a pid of 1 to 9 digits (a stamp: always %m's form, and the
    zone name ends it)."""
    millis = rb"\.([0-9]{3})" if head.millis or stamp else rb"()"
    if stamp:
        return re.compile(_WALL + millis + rb" (.{1,8})\Z", re.DOTALL)
    return re.compile(_WALL + millis + rb" ([^ ]{1,8})" + re.escape(head.between) + rb"([0-9]{1,9})(?![0-9])")


@cache
def _month_start(year: int, month: int) -> int:
    """Days from 1970-01-01 to the first of the month (proleptic Gregorian, year 0 too)."""
    return int(np.datetime64(f"{year:04d}-{month:02d}", "D").astype(np.int64))


def _read_fixed_heads_reference(
    arr: np.ndarray, starts: np.ndarray, limits: np.ndarray, head: FixedHead, zone_ends: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bytes], np.ndarray]:
    """`read_fixed_heads` entry by entry with one regex (the reference the C loop is checked
    against). A day past the month's end runs into the next month, as the C loop counts it."""
    text = arr.data  # the bytes, uncopied
    shape = _shape(head, zone_ends is not None)
    k = len(starts)
    ok = np.zeros(k, dtype=bool)
    ms = np.zeros(k, dtype=np.int64)
    pid = np.zeros(k, dtype=np.int64)
    codes = np.zeros(k, dtype=np.int32)
    names: dict[bytes, int] = {}
    ends = limits if zone_ends is None else zone_ends
    for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        found = shape.match(bytes(text[start:end]))
        if found is None:
            continue
        year, month, day, hour, minute, second = (int(g) for g in found.groups()[:6])
        zone = found[8].rstrip(b"\0")  # the C loop packs the name into 8 bytes, NUL-padded
        if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
            continue
        if zone_ends is not None and not zone:
            continue
        days = _month_start(year, month) + day - 1
        millis = int(found[7] or 0)
        ms[i] = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + millis
        pid[i] = int(found[9]) if zone_ends is None else 0
        codes[i] = names.setdefault(zone, len(names))
        ok[i] = True
    return ok, ms, codes, list(names) or [b""], pid


def _read_fixed_heads_compiled(
    arr: np.ndarray, starts: np.ndarray, limits: np.ndarray, head: FixedHead, zone_ends: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bytes], np.ndarray]:
    """`read_fixed_heads` in one compiled loop per entry (the same bytes read, the same answers)."""
    compiled = engine.ENGINE.scan
    assert compiled is not None
    k = len(starts)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    ok = np.empty(k, dtype=np.uint8)
    ms = np.empty(k, dtype=np.int64)
    key = np.empty(k, dtype=np.uint64)
    pid = np.zeros(k, dtype=np.int64)
    if zone_ends is None:
        limits = np.ascontiguousarray(limits, dtype=np.int64)
        compiled.head(arr, starts, limits, head.millis, head.between, ok, ms, key, pid)
    else:
        compiled.stamp(arr, starts, np.ascontiguousarray(zone_ends, dtype=np.int64), ok, ms, key)
    uniq, inverse = np.unique(key, return_inverse=True)
    names = [int(u).to_bytes(8, "little").rstrip(b"\0") for u in uniq.tolist()]
    return ok.view(bool), ms, inverse.astype(np.int32), names, pid

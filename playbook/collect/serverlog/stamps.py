"""Time, zone and pid read at fixed byte places, without a regex: the heads of entries whose
prefix starts '%m [%p' or '%t [%p' (any literal between zone and pid), and csvlog's and
jsonlog's timestamps ('2025-03-01 10:00:00.123 CET'). Compiled: one C loop per entry
(_scan.head, _scan.stamp); reference: one numpy gather per byte place."""

from __future__ import annotations

from dataclasses import dataclass

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
    `starts` whose level begins at `limits`; rows not ok are left to the regexes. One gather
    per byte place: no window matrix. With `zone_ends` (csvlog and jsonlog times) the zone
    name ends there and nothing follows it (pid 0)."""
    k = len(starts)
    if engine.ENGINE.scan is not None and len(arr):
        return _read_fixed_heads_compiled(arr, starts, limits, head, zone_ends)
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

"""Server-log times into UTC, read through the zone the server's clock prints in.

%t, %m, csvlog and jsonlog print wall-clock time in log_timezone followed by that zone's
abbreviation ("CST", "IST", "CEST") or, for zones without one, a number ("+0530", "-03").
Every distinct printed name of a file is read once (playbook.evidence.zones.read_zone_name):
through the server's zone when it is known, exactly when it is a number or UTC/GMT, and
otherwise with an assumption that becomes a warning. %n prints the Unix epoch: exact.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from playbook.collect.serverlog.rows import Coded
from playbook.evidence.zones import NameReading, Zone, read_zone_name

# What Python's datetime holds (years 1 to 9999), in ms since the epoch: times inside it are
# turned into datetimes without pandas; outside it pandas is still asked, as it always was.
DATETIME_MS = (-62_135_596_800_000, 253_402_300_799_999)


class Clock:
    """Turns one file's printed times into UTC; remembers how it read each zone name."""

    def __init__(self, zone: Zone | None, what: str) -> None:
        self.zone = zone
        self.what = what
        self.readings: dict[str, NameReading] = {}
        self.names_seen: dict[str, int] = {}

    def to_utc(self, naive: np.ndarray, names: Coded) -> np.ndarray:
        """UTC datetime64[ms] from wall-clock values and the zone names printed beside them."""
        out = np.asarray(naive, dtype="datetime64[ms]").copy()
        if not len(out):
            return out
        counts = np.bincount(names.codes, minlength=len(names.values))
        for code in np.flatnonzero(counts):
            name = names.values[int(code)]
            if not name:
                continue
            self.names_seen[name] = self.names_seen.get(name, 0) + int(counts[code])
            rows = names.codes == code
            reading = self.readings.get(name)
            if reading is None:
                first = out[rows][0]
                near = None if np.isnat(first) else _datetime(first)
                reading = self.readings[name] = read_zone_name(name, self.zone, near, self.what)
            shift = np.timedelta64(int(reading.offset.total_seconds() * 1000), "ms")
            out[rows] -= shift
        return out


def _datetime(moment: np.datetime64) -> datetime:
    """pd.Timestamp(moment).to_pydatetime() without loading pandas (pandas itself outside
    DATETIME_MS, where it answers or fails as it always did)."""
    ms = int(moment.astype("datetime64[ms]").astype(np.int64))
    if DATETIME_MS[0] <= ms <= DATETIME_MS[1]:
        value = moment.astype("datetime64[us]").item()
        assert isinstance(value, datetime)
        return value
    import pandas as pd

    return pd.Timestamp(moment).to_pydatetime()


def epoch_to_utc(seconds: np.ndarray) -> np.ndarray:
    """%n's 'seconds.milliseconds' as datetime64[ms] (exact: no zone involved)."""
    values = np.asarray(seconds, dtype=np.float64)
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ms]")
    ok = ~np.isnan(values)
    out[ok] = np.round(values[ok] * 1000).astype(np.int64).astype("datetime64[ms]")
    return out


def as_utc(moment: datetime | None) -> np.datetime64 | None:
    """--since/--until as UTC datetime64[ms]; a naive time is UTC (the flags say so)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return np.datetime64(moment.astimezone(timezone.utc).replace(tzinfo=None), "ms")

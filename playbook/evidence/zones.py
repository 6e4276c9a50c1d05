"""Time zones: which zone a log's clock reads, and turning its times into UTC.

PostgreSQL prints %t/%m (and the csvlog/jsonlog timestamps) in log_timezone with that zone's
abbreviation. Abbreviations are ambiguous: Asia/Shanghai prints "CST", the letters of US Central
time; "IST" is India, Ireland or Israel. So an abbreviation is read through the zone the clock is
known to be in (the server's log_timezone, `--log-tz`, `--app-tz`), never through a table's
guess: within that zone it only tells standard time from summer time in the hour that occurs
twice. Without a zone only numeric offsets and the few names that mean one thing everywhere
(UTC, GMT, Z) are read; anything else is reported, never silently taken as UTC.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import numpy as np

from playbook.errors import PlaybookError

# Names that mean the same offset wherever they are printed.
UNAMBIGUOUS_OFFSETS_MIN = {"UTC": 0, "UCT": 0, "UT": 0, "GMT": 0, "Z": 0, "ZULU": 0}
_NUMERIC = re.compile(r"^([+-])(\d{1,2})(?::?(\d\d))?$")


@dataclass(frozen=True)
class Zone:
    """A zone a clock reads, with the name the report states and where it came from.

    `source` is one of "server" (log_timezone read from the server), "flag" (--log-tz/--app-tz),
    "machine" (the zone of the machine running the playbook), "log" (offsets printed in the log).
    """

    name: str
    tz: tzinfo = field(compare=False)
    source: str = "flag"

    def describe(self) -> str:
        origin = {
            "server": "the server's log_timezone",
            "flag": "given on the command line",
            "machine": "this machine's zone",
            "log": "offsets printed in the log",
        }.get(self.source, self.source)
        return f"{self.name} ({origin})"


def zone_named(name: str, source: str = "flag") -> Zone:
    """The zone of an IANA name ("Asia/Shanghai"), "UTC", or a numeric offset ("+05:30").

    An unknown name is a PlaybookError with one sentence: a guessed zone would move every event.
    """
    text = name.strip()
    numeric = _NUMERIC.match(text)
    if numeric:
        return Zone(text, timezone(_numeric_offset(numeric)), source)
    if text.upper() in UNAMBIGUOUS_OFFSETS_MIN:
        return Zone("UTC", timezone.utc, source)
    try:
        return Zone(text, ZoneInfo(text), source)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError):
        raise PlaybookError(
            f"unknown time zone {name!r}: give an IANA name such as Europe/Berlin or an offset such as +05:30"
        ) from None


def machine_zone() -> Zone:
    """The zone of the machine running the playbook: $TZ, else /etc/localtime, else its offset now."""
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        try:
            return zone_named(tz_env, "machine")
        except PlaybookError:
            pass
    localtime = Path("/etc/localtime")
    try:
        target = str(localtime.resolve())
    except OSError:
        target = ""
    if "/zoneinfo/" in target:
        try:
            return zone_named(target.split("/zoneinfo/", 1)[1], "machine")
        except PlaybookError:
            pass
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    return Zone(_offset_text(offset), timezone(offset), "machine")


_AGO_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_moment(text: str) -> datetime:
    """A --since / `since` value: '90s', '30m', '2h', '1d' ago, or an ISO-8601 time (UTC when it
    names no zone). ValueError, with the sentence to show, for anything else."""
    if text[-1:] in _AGO_UNITS and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(timezone.utc) - timedelta(seconds=float(text[:-1]) * _AGO_UNITS[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration like 30m or 2h nor an ISO-8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def fixed_offset(text: str) -> timedelta | None:
    """The offset of a numeric zone ("+08", "-0330", "+05:30") or of UTC/GMT/Z; None otherwise."""
    numeric = _NUMERIC.match(text.strip())
    if numeric:
        return _numeric_offset(numeric)
    minutes = UNAMBIGUOUS_OFFSETS_MIN.get(text.strip().upper())
    return None if minutes is None else timedelta(minutes=minutes)


def to_utc(
    naive: np.ndarray,
    abbreviations: Sequence[str] | None,
    zone: Zone | None,
    warnings: list[str],
    what: str = "the log",
) -> np.ndarray:
    """UTC datetime64[ms] from wall-clock datetime64[ms] values and, when printed, their zone names.

    - A numeric offset or UTC/GMT/Z printed beside a time is exact and wins.
    - Any other name is read through `zone`: the zone's own abbreviation for standard or summer
      time picks the right side of the hour that occurs twice. A name the zone never uses is a
      warning (the time is still read in `zone`).
    - Without a `zone`, a name that is not exact is a warning and the time is read as UTC; the
      warning says so, so the report can state it.
    - No names at all (naive times): read in `zone`, or as UTC with a warning when there is none.
    """
    values = np.asarray(naive, dtype="datetime64[ms]")
    if values.size == 0:
        return values
    if abbreviations is None:
        if zone is None:
            warnings.append(f"times in {what} carry no zone and none was given: read as UTC")
            return values
        return _localize(values, zone.tz, None)
    import pandas as pd  # here, not at the top: `playbook logs` reads zone names without pandas

    names = pd.Series(pd.Categorical(list(abbreviations)))
    out = np.empty(values.shape, dtype="datetime64[ms]")
    for code, name in enumerate(names.cat.categories):
        rows = (names.cat.codes == code).to_numpy()
        exact = fixed_offset(str(name))
        if exact is not None:
            out[rows] = values[rows] - np.timedelta64(int(exact.total_seconds() * 1000), "ms")
            continue
        if zone is None:
            warnings.append(
                f"time zone {name!r} in {what} is ambiguous and no zone was given "
                "(the server's log_timezone or --log-tz): read as UTC"
            )
            out[rows] = values[rows]
            continue
        dst = _abbreviation_is_dst(zone.tz, str(name), values[rows])
        if dst is None:
            warnings.append(f"time zone {name!r} in {what} is not one {zone.name} uses: read in {zone.name}")
        out[rows] = _localize(values[rows], zone.tz, dst)
    return out


def _localize(values: np.ndarray, tz: tzinfo, dst: bool | None) -> np.ndarray:
    # Without a name to choose by, the hour that occurs twice is read as its first (summer) one.
    flags = np.full(values.shape, True if dst is None else dst, dtype=bool)
    import pandas as pd

    localized = pd.DatetimeIndex(values).tz_localize(tz, ambiguous=flags, nonexistent="shift_forward")
    return localized.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ms]")


def _abbreviation_is_dst(tz: tzinfo, name: str, values: np.ndarray) -> bool | None:
    """True when `name` is the zone's summer-time name, False for standard time, None if foreign."""
    if values.size == 0:
        return False
    import pandas as pd

    probe = pd.Timestamp(values[0]).to_pydatetime()
    for days in range(0, 366, 30):
        moment = (probe + timedelta(days=days)).replace(tzinfo=tz)
        if moment.tzname() == name:
            return bool(moment.dst())
    return None


def _numeric_offset(match: re.Match[str]) -> timedelta:
    sign = -1 if match.group(1) == "-" else 1
    return sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))


def _offset_text(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# -- printed zone names, one name at a time (the server-log readers) -------------------------------


@dataclass(frozen=True)
class NameReading:
    """How one printed zone name was turned into an offset: `offset` from UTC, and `how` in words.

    `exact` is True when the name alone fixes the offset (a number, UTC/GMT/Z) or it was read
    through the zone the clock is known to be in; False when it was an assumption the report must
    state (`warning` then says which and why).
    """

    name: str
    offset: timedelta
    exact: bool
    how: str
    warning: str | None = None


def read_zone_name(name: str, zone: Zone | None, near: datetime | None, what: str) -> NameReading:
    """The offset a printed zone name ("CST", "+0530", "UTC") stands for, read through `zone`.

    - Numbers and UTC/GMT/Z are exact whatever the zone.
    - With a zone: the offset that zone used under that name around `near` (a wall-clock time of
      the log): CST in Asia/Shanghai is +08:00, in America/Chicago -06:00. A name the zone never
      uses around then is read at the zone's own offset at `near`, with a warning.
    - Without a zone: a name every zone of the time-zone database gives the same offset (CET,
      JST, PDT) is read at that offset with a warning saying so; an ambiguous one (CST, IST) or an
      unknown one is read as UTC with a warning naming the candidates. Never silently.
    """
    text = name.strip()
    exact = fixed_offset(text)
    if exact is not None:
        return NameReading(text, exact, True, f"{text} is {_offset_text(exact)}")
    if zone is not None:
        moment = near or datetime(2000, 1, 1)
        found = _offset_in_zone(zone.tz, text, moment.replace(tzinfo=None))
        if found is not None:
            return NameReading(text, found, True, f"{text} read in {zone.describe()}: {_offset_text(found)}")
        own = zone.tz.utcoffset(moment.replace(tzinfo=None)) or timedelta(0)
        return NameReading(
            text,
            own,
            False,
            f"{text} is not a name {zone.name} uses: read as {zone.name} ({_offset_text(own)})",
            f"time zone {text!r} in {what} is not one {zone.name} uses around {moment:%Y-%m-%d}: "
            f"read as {_offset_text(own)}; check the server's log_timezone",
        )
    offsets = abbreviation_offsets(text)
    if len(offsets) == 1:
        (offset,) = offsets
        zones_using = ", ".join(offsets[offset][:3])
        return NameReading(
            text,
            offset,
            False,
            f"{text} assumed {_offset_text(offset)} (the only offset the time-zone database gives it)",
            f"time zone {text!r} in {what} was read as {_offset_text(offset)}, the only offset the "
            f"time-zone database gives it ({zones_using}); pass --log-tz with the server's log_timezone "
            "to be sure",
        )
    if offsets:
        candidates = "; ".join(
            f"{_offset_text(offset)} in {', '.join(names[:2])}" for offset, names in sorted(offsets.items())
        )
        return NameReading(
            text,
            timedelta(0),
            False,
            f"{text} is ambiguous: read as UTC",
            f"time zone {text!r} in {what} is ambiguous ({candidates}) and no zone was given: read as UTC, "
            "so these times may be off by hours; pass --log-tz with the server's log_timezone",
        )
    return NameReading(
        text,
        timedelta(0),
        False,
        f"{text} is unknown: read as UTC",
        f"time zone {text!r} in {what} is not a name the time-zone database knows and no zone was given: "
        "read as UTC; pass --log-tz with the server's log_timezone",
    )


def _offset_in_zone(tz: tzinfo, name: str, near: datetime) -> timedelta | None:
    """The offset `tz` used under `name` nearest to `near` (searched a year either side)."""
    for days in range(0, 370, 7):
        for sign in (1, -1) if days else (1,):
            moment = (near + sign * timedelta(days=days)).replace(tzinfo=tz)
            if moment.tzname() == name:
                return moment.utcoffset()
    return None


# Listed first when a warning names the zones that use an abbreviation.
_WELL_KNOWN = (
    "America/Chicago", "America/New_York", "America/Los_Angeles", "America/Denver", "America/Havana",
    "Asia/Shanghai", "Asia/Kolkata", "Asia/Jerusalem", "Asia/Tokyo", "Europe/Dublin", "Europe/London",
    "Europe/Berlin", "Europe/Paris", "Europe/Moscow", "Australia/Sydney", "Pacific/Auckland",
)  # fmt: skip


def abbreviation_offsets(name: str) -> dict[timedelta, list[str]]:
    """Every offset the time-zone database gives `name` in 2005-2030, with zones using it."""
    return _abbreviations().get(name, {})


@lru_cache(maxsize=1)
def _abbreviations() -> dict[str, dict[timedelta, list[str]]]:
    """Abbreviation -> offset -> zones, probed in mid-January and mid-July every five years of
    2005-2030 (both standard and summer time). Built once, on the first name no zone explains."""
    found: dict[str, dict[timedelta, list[str]]] = {}
    keys = sorted(available_timezones(), key=lambda k: (k not in _WELL_KNOWN, "/" not in k, k))
    for key in keys:
        if key.startswith(("Etc/", "SystemV/", "posix/", "right/")) or key in ("Factory", "localtime"):
            continue
        try:
            tz = ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
        for year in range(2005, 2031, 5):
            for month in (1, 7):
                moment = datetime(year, month, 15, 12, tzinfo=tz)
                abbreviation = moment.tzname()
                if not abbreviation or fixed_offset(abbreviation) is not None:
                    continue
                zones = found.setdefault(abbreviation, {}).setdefault(moment.utcoffset() or timedelta(0), [])
                if key not in zones:
                    zones.append(key)
    return found


def offset_text(offset: timedelta) -> str:
    """'+05:30' for an offset (the form the report prints)."""
    return _offset_text(offset)

"""PgBouncer's log: why it closed each connection, which errors it sent clients, when it restarted.

PgBouncer writes (logfile = …, or stderr) `2024-05-01 12:00:00.123 CEST [4321] LOG C-0x…: db/user@addr:port
closing because: client_idle_timeout (age=600s)`: local time with the zone's abbreviation as the C
library prints it (tzname: "UTC", "CEST", "+08" for zones without letters), the pid in brackets, a
level without a colon, then `C-`/`S-` and the connection's pointer for lines about a client or a
server connection. Through syslog/journald the same message follows `pgbouncer[pid]: ` without
time zone, level or year. Both forms are read; times become UTC through evidence.zones.to_utc with
the zone the caller knows the host runs in (--log-tz), never a guess.

`read_pgbouncer_logs(paths, zone=None)` returns the `pgbouncer_log_events` frame (schema in
playbook.evidence.pgbouncer_frames) and a summary; `looks_like_pgbouncer_log(sample)` tells, from a file's
first bytes, whether a log given under --app-log or --server-log is PgBouncer's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from playbook.errors import PlaybookError
from playbook.evidence.logfiles import LogFile
from playbook.evidence.pgbouncer_frames import SCHEMAS
from playbook.evidence.zones import Zone, to_utc
from playbook.vocabulary import translations
from playbook.vocabulary.pgbouncer_reasons import (
    LEVELS,
    REASON_BY_KEY,
    UNKNOWN_REASON,
    Reason,
    classify_event,
    classify_reason,
)

_LEVELS = "|".join(LEVELS)
# PgBouncer's own log file and stderr (libusual's log_generic): the level has no colon, unlike PostgreSQL's.
LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?)"
    r"(?: (?P<tz>[A-Za-z]{1,6}|[+-]\d{2}(?::?\d\d)?))?"
    r" \[?(?P<pid>\d+)\]? (?P<level>" + _LEVELS + r") (?P<msg>.*)$"
)
# syslog / journald: "May  1 12:00:00 host pgbouncer[4321]: …" or an RFC 3339 stamp instead.
SYSLOG = re.compile(
    r"^(?:(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<clock>\d\d:\d\d:\d\d)"
    r"|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)(?P<isotz>Z|[+-]\d\d:?\d\d)?)"
    r" \S+ pgbouncer\[(?P<pid>\d+)\]: (?:(?P<level>" + _LEVELS + r") )?(?P<msg>.*)$"
)
SOCKET = re.compile(r"^(?P<side>[CS])-0x[0-9a-fA-F]+: (?P<who>\S*) (?P<rest>.*)$")
CLOSING = re.compile(r"^closing because: (?P<reason>.*?)(?: \(age=(?P<age>\d+)s\))?$")
POOLER_ERROR = re.compile(r"^pooler error: (?P<msg>.*)$")
SERVER_LOGIN_FAILED = re.compile(r"^server login failed:? ?(?:(?:FATAL|ERROR|PANIC) )?(?P<msg>.*)$")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], start=1
    )
}
# Markers only PgBouncer prints: enough on their own to recognise its log.
_OWN_MARKERS = re.compile(
    r"^[CS]-0x[0-9a-fA-F]+: |^process up: PgBouncer|^kernel file descriptor limit|^stats: \d+ xacts/s"
    r"|^listening on |^server login failed|^got SIG|^RELOAD command issued"
)
COLUMNS = SCHEMAS["pgbouncer_log_events"].column_names


@dataclass
class PgBouncerLogEvidence:
    """The `pgbouncer_log_events` frame and the `pgbouncer_log_summary` snapshot."""

    events: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _parse_line(text: str, syslog_year: int) -> tuple[datetime | None, str | None, dict[str, str]] | None:
    """(naive wall-clock time, zone text, fields) of a PgBouncer line; None for anything else."""
    match = LINE.match(text)
    if match:
        try:
            when = datetime.fromisoformat(match.group("ts").replace("T", " "))
        except ValueError:
            return None
        return when, match.group("tz"), {"pid": match["pid"], "level": match["level"], "msg": match["msg"]}
    match = SYSLOG.match(text)
    if not match:
        return None
    zone_text: str | None = None
    try:
        if match.group("iso"):
            when = datetime.fromisoformat(match.group("iso"))
            zone_text = match.group("isotz")
            if zone_text == "Z":
                zone_text = "UTC"
        else:
            clock = datetime.strptime(match.group("clock"), "%H:%M:%S")
            when = clock.replace(year=syslog_year, month=_MONTHS[match["mon"]], day=int(match["day"]))
    except (ValueError, KeyError):
        return None
    return when, zone_text, {"pid": match["pid"], "level": match["level"] or "LOG", "msg": match["msg"]}


def _who(who: str) -> tuple[str | None, str | None, str | None]:
    """database, user, addr from 'db/user@addr:port' ('(nodb)'/'(nouser)' are None)."""
    head, _, addr = who.rpartition("@")
    database, _, user = head.partition("/")  # "peer-N" (1.19+ peering) has no user: stays empty
    return (
        None if database in ("", "(nodb)") else database,
        None if user in ("", "(nouser)") else user,
        addr or None,
    )


def _reason_of(text: str) -> Reason:
    """The close reason of a text PgBouncer printed, or relayed from the server: the server's
    own message arrives in its lc_messages, and is read through PostgreSQL's translation of it."""
    reason = classify_reason(text)
    if reason is not UNKNOWN_REASON:
        return reason
    for code in translations.languages():
        english = translations.language(code).find_english(text)
        if english is not None:
            return classify_reason(english)
    return reason


def _event(msg: str) -> dict[str, Any] | None:
    """What one message means, as frame fields; None for lines that do not matter."""
    row: dict[str, Any] = {"side": None, "database": None, "user": None, "addr": None}
    socket = SOCKET.match(msg)
    if socket:
        row["side"] = "client" if socket["side"] == "C" else "server"
        row["database"], row["user"], row["addr"] = _who(socket["who"])
        rest = socket["rest"]
        closing = CLOSING.match(rest)
        if closing:
            reason = _reason_of(closing["reason"])
            return row | {
                "kind": "close",
                "reason_key": reason.key,
                "reason": closing["reason"],
                "category": reason.category,
                "recycling": reason.recycling,
                "age_s": float(closing["age"]) if closing["age"] is not None else np.nan,
            }
        pooler = POOLER_ERROR.match(rest)
        if pooler:
            reason = _reason_of(pooler["msg"])
            return row | {
                "kind": "pooler_error",
                "reason_key": reason.key,
                "reason": pooler["msg"],
                "category": reason.category,
                "recycling": False,
            }
        if rest.startswith("login attempt:"):
            return row | {"kind": "login", "reason_key": "login", "reason": rest}
        if rest.startswith("new connection to server"):
            return row | {"kind": "server_login", "reason_key": "server_login", "reason": rest}
        if rest.startswith("login failed"):
            refused = REASON_BY_KEY["client_auth_failed"]
            return row | {
                "kind": "login_failed",
                "reason_key": refused.key,
                "reason": rest,
                "category": refused.category,
                "recycling": False,
            }
        msg = rest
    failed = SERVER_LOGIN_FAILED.match(msg)
    if failed:
        reason = _reason_of(failed["msg"]) if failed["msg"] else classify_reason("login failed")
        return row | {
            "kind": "server_login_failed",
            "reason_key": reason.key,
            "reason": failed["msg"] or msg,
            "category": reason.category,
            "recycling": False,
        }
    event = classify_event(msg)
    if event is None:
        return None
    return row | {
        "kind": "event",
        "reason_key": event.key,
        "reason": msg[:300],
        "category": event.category,
        "recycling": False,
    }


def looks_like_pgbouncer_log(sample: bytes) -> bool:
    """True when the sample (a file's first bytes, plain text) reads as PgBouncer's own log.

    At least one line carries a mark only PgBouncer prints (a C-0x…/S-0x… connection, "process up:
    PgBouncer", its stats or listening lines), and most timestamped lines have its format. PostgreSQL's
    own lines ("LOG:  …", with a colon) and application logs that quote a PgBouncer error do not.
    """
    text = sample.decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and not text.endswith("\n"):
        lines = lines[:-1]  # the sample may end mid-line
    ours = marked = 0
    for line in lines:
        parsed = _parse_line(line.rstrip("\r"), 2000)
        if parsed is None:
            continue
        ours += 1
        if _OWN_MARKERS.search(parsed[2]["msg"]):
            marked += 1
    return marked > 0 and ours * 2 >= len(lines)


def read_pgbouncer_logs(
    paths: Sequence[str | Path],
    zone: Zone | None = None,
    since: datetime | None = None,
) -> PgBouncerLogEvidence:
    """Read PgBouncer log files (plain, gzip, bzip2, xz) into the `pgbouncer_log_events` frame.

    `zone` is the zone PgBouncer's host runs in: it resolves abbreviations ("CST") and reads syslog
    lines, which print none; numeric offsets and UTC are read exactly without it. `since` (UTC-aware)
    drops earlier events. A missing or unreadable file, or one with no PgBouncer line at all, is a
    PlaybookError with one sentence.
    """
    rows: list[dict[str, Any]] = []
    naive: list[datetime] = []
    zones: list[str] = []
    warnings: list[str] = []
    per_file: dict[str, int] = {}
    versions: set[str] = set()
    lines_read = 0
    for raw_path in paths:
        path = Path(raw_path)
        recognised = 0
        with LogFile(path, "PgBouncer log") as log:
            year = datetime.fromtimestamp(path.stat().st_mtime).year
            line_no = 0
            while True:
                data = log.readline(1 << 20)
                if not data:
                    break
                line_no += 1
                text = data.decode("utf-8", "replace").rstrip("\r\n")
                parsed = _parse_line(text, year)
                if parsed is None:
                    continue
                recognised += 1
                when, zone_text, fields = parsed
                if fields["msg"].startswith("process up: PgBouncer"):
                    found = re.search(r"PgBouncer (\d+\.\d+(?:\.\d+)?)", fields["msg"])
                    if found:
                        versions.add(found.group(1))
                row = _event(fields["msg"])
                if row is None or when is None:
                    continue
                row.update(level=fields["level"], pid=int(fields["pid"]), file=str(path), line_no=line_no)
                rows.append(row)
                naive.append(when)
                zones.append(zone_text or "")
            lines_read += line_no
        if line_no and not recognised:
            raise PlaybookError(f"PgBouncer log {path} has no line in PgBouncer's log format")
        per_file[str(path)] = recognised
    events = _frame(rows, naive, zones, zone, warnings)
    if since is not None and not events.empty:
        events = events[events["ts"] >= pd.Timestamp(since).tz_convert("UTC")].reset_index(drop=True)
    return PgBouncerLogEvidence(events, _summary(events, per_file, lines_read, versions, warnings, zone))


def _frame(
    rows: list[dict[str, Any]],
    naive: list[datetime],
    zones: list[str],
    zone: Zone | None,
    warnings: list[str],
) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "ts"])
    values = np.array(naive, dtype="datetime64[ms]")
    if zones and all(zones):
        utc = to_utc(values, zones, zone, warnings, "the PgBouncer log")
    elif zones and not any(zones):
        utc = to_utc(values, None, zone, warnings, "the PgBouncer log")
    else:
        # Mixed files (own log and syslog): lines without a zone are read in `zone` (or UTC, said once).
        named = np.array([bool(z) for z in zones])
        utc = np.empty(values.shape, dtype="datetime64[ms]")
        utc[named] = to_utc(values[named], [z for z in zones if z], zone, warnings, "the PgBouncer log")
        utc[~named] = to_utc(values[~named], None, zone, warnings, "the PgBouncer log")
    frame.insert(0, "ts", pd.to_datetime(pd.Series(utc, dtype="datetime64[ns]"), utc=True))
    for name, dtype in SCHEMAS["pgbouncer_log_events"].dtypes().items():
        if name == "ts":
            continue
        if dtype == "bool":
            frame[name] = frame[name].fillna(False).astype(bool)
        elif dtype == "string":
            frame[name] = frame[name].astype("string")
        elif dtype == "Int64":
            frame[name] = frame[name].astype("Int64")
        else:
            frame[name] = frame[name].astype("float64")
    return frame.sort_values(["ts", "file", "line_no"], kind="stable").reset_index(drop=True)


def _summary(
    events: pd.DataFrame,
    per_file: dict[str, int],
    lines_read: int,
    versions: set[str],
    warnings: list[str],
    zone: Zone | None,
) -> dict[str, Any]:
    closes = events[events["kind"] == "close"]
    unknown = closes.loc[closes["reason_key"] == "unknown", "reason"].astype(str)
    return {
        "files": per_file,
        "lines_read": lines_read,
        "events": int(len(events)),
        "kinds": {str(k): int(v) for k, v in Counter(events["kind"].astype(str)).items()},
        "close_reasons": {str(k): int(v) for k, v in Counter(closes["reason_key"].astype(str)).items()},
        "unknown_reasons": sorted(set(unknown))[:20],
        "versions": sorted(versions),
        "zone": zone.describe() if zone else None,
        "first_seen": events["ts"].min().isoformat() if not events.empty else None,
        "last_seen": events["ts"].max().isoformat() if not events.empty else None,
        "warnings": sorted(set(warnings)),
    }

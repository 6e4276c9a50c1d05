"""The schema of every frame of evidence: its columns, their kinds and what one row means.

Collectors build their frames with these column lists and `Evidence.save` checks them, so a
frame on disk always has the columns its readers expect. Readers ask for a frame by its schema
(`evidence.frame(ACTIVITY_SAMPLES)`) and get an empty frame with the right columns when it was not
collected: "no rows" and "not collected" read the same to a diagnosis, and the manifest's
`collected` list tells them apart where it matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

Kind = Literal["time", "int", "float", "bool", "text", "category"]
_DTYPES: dict[Kind, str] = {
    "time": "datetime64[ms, UTC]",
    "int": "int64",
    "float": "float64",
    "bool": "bool",
    "text": "object",
    "category": "category",
}


@dataclass(frozen=True)
class Column:
    """One column: its logical kind, what it means, and the exact pandas dtype when the kind's
    default does not fit (e.g. a nullable "Int64" for counters a version may lack)."""

    name: str
    kind: Kind
    meaning: str
    dtype: str | None = None

    @property
    def pandas_dtype(self) -> str:
        return self.dtype or _DTYPES[self.kind]


@dataclass(frozen=True)
class FrameSchema:
    """A frame's name on disk (`<name>.parquet`), what one row is, and its columns in order."""

    name: str
    row: str
    columns: tuple[Column, ...]
    meaning: str = ""  # what the frame as a whole tells

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def dtypes(self) -> dict[str, str]:
        return {c.name: c.pandas_dtype for c in self.columns}

    def empty(self) -> pd.DataFrame:
        """A frame with no rows and every column of its kind."""
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in self.dtypes().items()})

    def missing(self, frame: pd.DataFrame) -> list[str]:
        """Columns of the schema that `frame` lacks (empty when it conforms)."""
        return [name for name in self.column_names if name not in frame.columns]


def _schema(name: str, row: str, *columns: tuple[str, Kind, str]) -> FrameSchema:
    return FrameSchema(name, row, tuple(Column(*c) for c in columns))


_BACKEND: tuple[tuple[str, Kind, str], ...] = (
    ("pid", "int", "backend process id"),
    ("state", "text", "pg_stat_activity.state; '(hidden)' for roles the monitor may not see"),
    ("application_name", "text", "the client's application_name"),
    ("usename", "text", "role"),
    ("datname", "text", "database"),
    ("client_addr", "text", "client address, '' for unix sockets"),
    ("backend_start", "time", "when the backend started"),
    ("xact_start", "time", "when its transaction started (NaT outside one)"),
    ("query_start", "time", "when its last statement started"),
    ("state_change", "time", "when its state last changed"),
    ("wait_event_type", "text", "what it waits on, if anything"),
    ("wait_event", "text", "the wait event"),
)

ACTIVITY_SAMPLES = _schema(
    "activity_samples",
    "one client backend seen at one sampler tick (the playbook's own backends left out)",
    ("tick_ts", "time", "the tick, client clock"),
    ("ts", "time", "the server's clock at the tick"),
    *_BACKEND,
    ("state_age_s", "float", "seconds in its current state at the tick"),
    ("xact_age_s", "float", "seconds its transaction had been open (NaN outside one)"),
    ("conn_age_s", "float", "seconds since the backend started"),
)
ACTIVITY_TICKS = _schema(
    "activity_ticks",
    "one sampler tick, successful or not (a failed tick is part of a recorded gap)",
    ("ts", "time", "the tick, client clock"),
    ("server_ts", "time", "the server's clock, NaT when the tick failed"),
    ("ok", "bool", "whether the sample was taken"),
    ("backends", "int", "client backends seen"),
    ("hidden", "int", "of them, rows of roles the monitor may not see"),
    ("query_ms", "float", "how long the sampling query took"),
)
SERVER_LOG_EVENTS = _schema(
    "server_log_events",
    "one classified server-log line that matters to sessions (see collect/log_events for the ids)",
    ("ts", "time", "when the server logged it, in UTC (read in the server's log_timezone)"),
    ("event", "category", "event id, e.g. idle_session_timeout, admin_terminate, too_many_clients"),
    ("category", "category", "one of the five categories, '' for informational events"),
    ("level", "category", "LOG, FATAL, ERROR, PANIC, …"),
    ("sqlstate", "category", "the SQLSTATE when the log carries it (%e, csvlog, jsonlog)"),
    ("user", "category", "role, when the prefix or format carries it"),
    ("database", "category", "database"),
    ("application", "category", "application_name from the log, or from the sampled session of the same pid"),
    ("host", "category", "client host"),
    ("pid", "int", "the backend's process id"),
    ("message", "text", "the message (kept short)"),
    ("detail", "text", "its DETAIL line, if any"),
)
SERVER_LOG_SESSIONS = _schema(
    "server_log_sessions",
    "one session told by its connection and disconnection lines (log_connections/log_disconnections)",
    ("pid", "int", "backend process id"),
    ("start", "time", "connection authorized (or received)"),
    ("end", "time", "disconnection, NaT when still open at the end of the log"),
    ("duration_s", "float", "the session time the disconnection line states"),
    ("user", "category", "role"),
    ("database", "category", "database"),
    ("host", "category", "client host"),
    ("application", "category", "application_name"),
    ("ended_by", "text", "the event that ended it when the log says, '' for a normal end"),
)
APP_LOG_EVENTS = _schema(
    "app_log_events",
    "one failure record in the application's log",
    ("ts", "time", "when the application logged it, UTC (naive times read in --app-tz)"),
    ("kind", "text", "what failed, e.g. server_closed_unexpectedly, pool_timeout"),
    ("stack", "text", "the client stack the record names (psycopg, hikaricp, …) or 'unknown'"),
    ("line_no", "int", "line of the record's first line"),
    ("file", "text", "the log file"),
    ("text", "text", "the record's text (kept short)"),
)
CONNECT_PROBES = _schema(
    "connect_probes",
    "one new connection made from this host, timed",
    ("ts", "time", "when the attempt started"),
    ("attempt", "int", "attempt number"),
    ("ok", "bool", "whether it connected"),
    ("connect_ms", "float", "time to a usable session"),
    ("error", "text", "why it failed"),
    ("sqlstate", "text", "the failure's SQLSTATE, if any"),
)
ROUND_TRIP_PROBES = _schema(
    "round_trip_probes",
    "one `SELECT 1` round trip on an open session",
    ("ts", "time", "when it was sent"),
    ("rtt_ms", "float", "round-trip time"),
    ("error", "text", "why it failed"),
)

# The frames this module defines; evidence.contract.FRAMES lists them with the pooler's.
CORE_FRAMES: dict[str, FrameSchema] = {
    schema.name: schema
    for schema in (
        ACTIVITY_SAMPLES,
        ACTIVITY_TICKS,
        SERVER_LOG_EVENTS,
        SERVER_LOG_SESSIONS,
        APP_LOG_EVENTS,
        CONNECT_PROBES,
        ROUND_TRIP_PROBES,
    )
}

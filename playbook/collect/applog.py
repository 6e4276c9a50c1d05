"""Application logs: what the client side saw when its PostgreSQL sessions went away.

The reader streams each file line by line (plain, gzip, bzip2 or xz, told by its magic bytes; any
encoding damage replaced) and recognises the wordings of the common client stacks: psycopg 3 /
psycopg_pool, psycopg2, SQLAlchemy, asyncpg, node-postgres, Prisma, HikariCP / pgJDBC and
PgBouncer. The texts were checked against each project's source; tests/test_applog.py holds one
real line per wording.

One failure usually spans several lines (a log message, a traceback, chained exceptions, a
libpq message continued on the next line), so lines are grouped into records: a line with its
own timestamp, or one that does not look like a continuation, starts a record. A record gives
at most one event, of its most specific kind, so a traceback that repeats the driver's text
under SQLAlchemy's wrapper is counted once. The exception line that ends a traceback continues
its record whatever the class is called: the drivers' own hierarchies name many classes that do
not end in Error (psycopg's AdminShutdown, QueryCanceled, ProtocolViolation, ...).

Time: a numeric offset or UTC/GMT/Z printed beside a time is exact. A naive time (Python
logging's default asctime, most Java and Node loggers) is read in the application's zone
(`app_tz`, by default the zone of the machine running the playbook), and the summary states
which zone was assumed and why. A zone abbreviation (CST, IST, ...) is read through that zone
when it is one the zone uses; any other is read in the zone too, with a warning, never silently
as UTC. Syslog lines carry no year: they take the file's (its modification time, in that zone).
Lines nobody recognises are skipped.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from playbook.errors import PlaybookError
from playbook.evidence.logfiles import LogFile
from playbook.evidence.vocab import STACKS, UNKNOWN_STACK
from playbook.evidence.zones import Zone, fixed_offset, machine_zone, to_utc

__all__ = ["COLUMNS", "KINDS", "KIND_IDS", "STACKS", "UNKNOWN", "AppLogEvidence", "read_app_logs"]

UNKNOWN = UNKNOWN_STACK

# When a record carries several stacks' marks, the layer the application configures wins:
# SQLAlchemy wraps psycopg/psycopg2/asyncpg, Prisma's driver adapter wraps node-postgres.
_STACK_PRECEDENCE = (
    "pgbouncer",
    "sqlalchemy",
    "prisma",
    "hikaricp",
    "psycopg",
    "psycopg2",
    "asyncpg",
    "node-postgres",
)

COLUMNS = ["ts", "kind", "stack", "line_no", "file", "text"]
TEXT_MAX = 300
LINE_MAX = 1 << 20  # bytes kept of one line; the rest of a giant line is dropped
RECORD_MAX_LINES = 400
STACK_LOOKBACK_LINES = 20

_F = re.IGNORECASE


@dataclass(frozen=True)
class _Kind:
    kind: str
    pattern: re.Pattern[str]
    stack: str | None = None  # a wording only this stack produces is stack evidence too


def _k(kind: str, pattern: str, stack: str | None = None) -> _Kind:
    return _Kind(kind, re.compile(pattern, _F), stack)


# Most specific first: a record's event takes the best-ranked kind matching any of its lines
# (a kind's rank is where it first appears). Causes (a server-side FATAL, a refused connect)
# rank above the symptoms they produce (a pool wait that timed out, a connection found
# closed). A wording only one stack produces names that stack: it is stack evidence too.
# Wordings PgBouncer relays to clients name no stack: the client's own stack logged them.
KINDS: tuple[_Kind, ...] = (
    # server-side FATAL/ERROR texts, whichever driver relays them
    _k("idle_session_timeout", r"terminating connection due to idle-session timeout|IdleSessionTimeout"),
    _k(
        "idle_in_transaction_timeout",
        r"terminating connection due to idle-in-transaction timeout|IdleInTransactionSessionTimeout",
    ),
    _k("transaction_timeout", r"terminating connection due to transaction timeout|\bTransactionTimeout"),
    _k("admin_shutdown", r"terminating connection due to administrator command|\bAdminShutdown"),
    _k("crash_shutdown", r"terminating connection because of crash of another server process|CrashShutdown"),
    _k(
        "cannot_connect_now",
        r"the database system is (?:shutting down|starting up|in recovery mode|not yet accepting)"
        r"|CannotConnectNow",
    ),
    _k("statement_timeout", r"canceling statement due to statement timeout"),
    _k("lock_timeout", r"canceling statement due to lock timeout"),
    _k(
        "too_many_clients",
        r"sorry, too many clients already|remaining connection slots are reserved"
        r"|too many connections for (?:role|database)|TooManyConnectionsError",
    ),
    _k("too_many_clients", r"Too many database connections opened", "prisma"),
    _k(
        "auth_failed",
        r"password authentication failed for user|no pg_hba\.conf entry for|InvalidPasswordError",
    ),
    _k("auth_failed", r"Authentication failed against database server", "prisma"),
    # PgBouncer: its own log, or its pooler errors relayed to the application
    _k("pgbouncer_server_crashed", r"server conn crashed\?", "pgbouncer"),
    _k("pgbouncer_query_wait_timeout", r"\bquery_wait_timeout\b"),
    _k("pgbouncer_query_timeout", r"\bquery_timeout\b"),
    _k("pgbouncer_query_timeout", r"closing because: query timeout", "pgbouncer"),
    _k("pgbouncer_client_idle_timeout", r"\bclient_idle_timeout\b"),
    _k("pgbouncer_idle_transaction_timeout", r"closing because: idle transaction timeout", "pgbouncer"),
    # relayed to the client as 08P01 with the reason as its message (psycopg: ProtocolViolation);
    # PostgreSQL's own wording is "idle-in-transaction", hyphenated
    _k("pgbouncer_idle_transaction_timeout", r"\bidle transaction timeout\b"),
    _k("pgbouncer_query_timeout", r"(?:ProtocolViolation\w*|OperationalError|error):\s+query timeout\b"),
    _k("pgbouncer_client_login_timeout", r"\bclient_login_timeout\b"),
    _k("pgbouncer_max_client_conn", r"no more connections allowed \(max_client_conn\)"),
    _k("pgbouncer_server_login_failed", r"server login failed"),
    _k("pgbouncer_cannot_connect", r"pgbouncer cannot connect to server"),
    _k("pgbouncer_client_unexpected_eof", r"closing because: client unexpected eof", "pgbouncer"),
    # a session-level prepared statement met a pooled server that does not have it (transaction
    # pooling: PgBouncer before 1.21 or with max_prepared_statements = 0, other poolers alike):
    # 26000 / 42P05, in the server's wording or the drivers' class names
    _k(
        "prepared_statement_error",
        r"prepared statement \"?[^\"\s]*\"? (?:does not exist|already exists)"
        r"|\bInvalidSqlStatementName\b|\bDuplicatePreparedStatement\b|\bInvalidSQLStatementNameError\b",
    ),
    # connecting
    _k("connect_refused", r"failed: Connection refused|ConnectionRefusedError|Connect call failed"),
    _k("connect_refused", r"\bECONNREFUSED\b"),
    _k("connect_refused", r"Connection to \S+ refused\. Check that the hostname", "hikaricp"),
    _k("connect_timeout", r"(?<!cancellation )(?<!connection )\btimeout expired\b"),
    _k("connect_timeout", r"connection timeout expired|\bpsycopg\.errors\.ConnectionTimeout\b", "psycopg"),
    _k("connect_timeout", r"Connection terminated due to connection timeout", "node-postgres"),
    _k("connect_timeout", r"was reached but timed out", "prisma"),
    _k("connect_timeout", r"Connection attempt timed out", "hikaricp"),  # pgJDBC's loginTimeout
    # pools
    _k("leak_detected", r"Connection leak detection triggered", "hikaricp"),
    _k("validation_failed", r"Failed to validate connection", "hikaricp"),
    _k("validation_failed", r"connection failed check", "psycopg"),
    _k("validation_failed", r"Pool pre-ping on connection .* failed", "sqlalchemy"),
    # what pool_pre_ping logs (logger sqlalchemy.pool, INFO) when the ping raised a disconnect
    _k("validation_failed", r"Disconnection detected on checkout", "sqlalchemy"),
    _k("pool_timeout", r"couldn't get a connection after|\bPoolTimeout\b", "psycopg"),
    _k("pool_timeout", r"QueuePool limit of size \d+ overflow -?\d+ reached", "sqlalchemy"),
    _k("pool_timeout", r"timeout exceeded when trying to connect", "node-postgres"),
    _k("pool_timeout", r"Timed out fetching a new connection from the connection pool", "prisma"),
    _k("pool_timeout", r"Connection is not available, request timed out after", "hikaricp"),
    _k("pool_queue_full", r"requests waiting|\bTooManyRequests\b", "psycopg"),
    # the network path
    _k(
        "ssl_eof",
        r"SSL SYSCALL error: (?:EOF detected|Success)|SSL connection has been closed unexpectedly"
        r"|SSL error: unexpected eof",
    ),
    _k("connection_reset", r"Connection reset\b|\bECONNRESET\b"),
    _k("broken_pipe", r"Broken pipe|\bEPIPE\b"),
    _k(
        "network_timeout",
        r"(?:receive|send) data (?:from|to) server: Connection timed out|\bETIMEDOUT\b"
        r"|SocketTimeoutException|Read timed out|SSL SYSCALL error: (?:Operation|Connection) timed out",
    ),
    # the session is gone; who closed it is not said
    _k("server_closed_unexpectedly", r"server closed the connection unexpectedly"),
    _k("server_closed_unexpectedly", r"Connection terminated unexpectedly", "node-postgres"),
    _k("server_closed_unexpectedly", r"Server has closed the connection", "prisma"),
    _k("server_closed_unexpectedly", r"connection was closed in the middle of operation", "asyncpg"),
    _k("connection_lost", r"no connection to the server"),
    _k("connection_lost", r"\bthe connection is lost\b", "psycopg"),
    _k("connection_lost", r"An I/O error occurred while sending to the backend", "hikaricp"),
    _k("connection_lost", r"Database connection failed when \w+ (?:\w+ )?copy", "hikaricp"),
    _k(
        "connection_lost",
        r"Can't reconnect until invalid (?:savepoint )?transaction is rolled back",
        "sqlalchemy",
    ),
    _k("connect_failed", r"Can't reach database server", "prisma"),
    _k("connect_failed", r"The connection attempt failed", "hikaricp"),
    _k("connect_failed", r"Failed to initialize pool: ", "hikaricp"),
    _k("connect_failed", r"error connecting in '|reconnection attempt in pool .* failed", "psycopg"),
    _k("connection_closed", r"\bthe connection is closed\b|\bconnection is closed\b"),
    _k("connection_closed", r"connection already closed", "psycopg2"),
    _k("connection_closed", r"cannot perform operation: connection is closed", "asyncpg"),
    _k("connection_closed", r"is not queryable", "node-postgres"),
    # pgJDBC: a closed PgConnection, and a closed PGPooledConnection (case kept: not "SSL connection")
    _k(
        "connection_closed",
        r"This connection has been closed|(?-i:\bConnection has been closed[. ])",
        "hikaricp",
    ),
    _k("pool_discarded_broken", r"discarding (?:closed|broken) connection", "psycopg"),
    _k("pool_discarded_broken", r"marked as broken because of", "hikaricp"),
    # a hard invalidation with its reason; "Soft Invalidate" is pool_recycle's normal work
    _k("pool_discarded_broken", r"(?<!Soft )\bInvalidate connection .* \(reason: ", "sqlalchemy"),
    _k("returned_in_transaction", r"rolling back returned connection", "psycopg"),
    _k("client_query_timeout", r"Query read timeout", "node-postgres"),
    _k("client_query_timeout", r"Operations timed out after", "prisma"),
)
KIND_IDS = tuple(dict.fromkeys(k.kind for k in KINDS))
_KIND_RANK = {kind: i for i, kind in enumerate(KIND_IDS)}
# Most lines of an application log are about something else. One of these lower-case words is in
# every wording above, so a plain-literal search on the lower-cased line decides cheaply which
# lines deserve the full patterns (test_applog checks each kind's wordings pass it).
_TRIGGERS = re.compile(
    "|".join(
        re.escape(word)
        for word in (
            "connect", "timeout", "timed out", "closed", "terminat", "refused", "ssl", "reset", "pipe",
            "too many", "authentication", "pg_hba", "crash", "econn", "etimedout", "database system",
            "canceling", "requests waiting", "login", "max_client_conn", "queryable", "validate",
            "discarding", "rolling back", "i/o error", "can't reach", "shutdown", "pooltimeout",
            "toomanyrequests", "invalidpassword", "timeout expired", "leak detection", "unexpected eof",
            "initialize pool", "prepared statement", "invalidsqlstatementname", "duplicatepreparedstatement",
        )
    )
)  # fmt: skip

_PGBOUNCER_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[\d+\] (?:LOG|WARNING|ERROR|FATAL|DEBUG|NOISE) "
)
# likewise for stack marks; PgBouncer's line format is anchored, so it is cheap on its own
_STACK_TRIGGERS = re.compile(
    r"pgbouncer|-0x|sqlalche|psycopg|asyncpg|node_modules|prisma|hikari|org\.postgresql|code"
)
_STACK_MARKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("pgbouncer", _PGBOUNCER_LINE),
    ("pgbouncer", re.compile(r"\bpgbouncer\[\d+\]: |\b[CS]-0x[0-9a-f]+: \S+/\S+@")),
    (
        "sqlalchemy",
        re.compile(r"\bsqlalchemy\.(?:exc|pool|engine|orm|dialects)\b|sqlalche\.me/e/|/sqlalchemy/"),
    ),
    ("psycopg", re.compile(r"\bpsycopg(?:_pool)?\.\w|\bpsycopg_pool\b|/site-packages/psycopg(?:_pool)?/")),
    ("psycopg2", re.compile(r"\bpsycopg2\b")),
    ("asyncpg", re.compile(r"\basyncpg\.\w|/site-packages/asyncpg/")),
    ("node-postgres", re.compile(r"node_modules[/\\]pg(?:-pool|-protocol)?[/\\]")),
    (
        "prisma",
        re.compile(
            r"\bPrismaClient\w*Error\b|\bprisma:(?:error|warn|info|query)\b|@prisma/|node_modules/\.prisma/"
            r"|\bcode\W{1,4}P[12]\d{3}\b"
        ),
    ),
    # pgJDBC without HikariCP is counted here too: HikariCP is the JDBC pool the fixes address
    (
        "hikaricp",
        re.compile(r"\bHikariPool-\d+\b|com\.zaxxer\.hikari|\borg\.postgresql\.(?:util|core|jdbc)\."),
    ),
)

# -- timestamps ----------------------------------------------------------------------------
# A time is read as its wall-clock reading and the zone printed beside it, if any (`_Stamp`);
# each file's stamps are turned into UTC together once the file is read (`_resolve`), through
# zones.to_utc, so every reader of the playbook places a zone name the same way.
_Stamp = tuple[datetime, str | None]  # (naive wall-clock time, zone text printed with it)
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_HEAD = 80  # a line's timestamp sits in its first characters, after a bracket or a container name
_ISO = re.compile(
    r"(?<!\d)(\d{4})[-/](\d\d)[-/](\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
    # "+08" only when it touches the time: "12:00:00 -10 items" is not a zone
    r"(?:(?<=\d)([+-]\d\d)(?![:\d])|\s?(Z|[+-]\d\d:?\d\d|[A-Z]{2,5})(?![A-Za-z]))?"
)
_LOG4J_DATE = re.compile(
    r"(?<!\d)(\d\d) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d\d):(\d\d):(\d\d)"
    r"(?:[.,](\d{1,9}))?"
)
_JUL = re.compile(
    r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{1,2}), (\d{4}) (\d{1,2}):(\d\d):(\d\d) ([AP]M)\b"
)
_SYSLOG = re.compile(
    r"^(?:<\d+>)?(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)\b"
)
_JSON_TIME_KEYS = ("time", "timestamp", "ts", "@timestamp", "asctime", "date", "datetime")


@cache
def _world_abbreviations() -> frozenset[str]:
    """Every alphabetic zone abbreviation tzdata prints today, to tell "CST" from "ERROR" or "GET".

    Only decides whether a word after a time is a zone at all (so a foreign one is reported);
    what it means is always read through the application's zone. Built once, when a word that
    is not the application zone's own turns up (about 0.1 s).
    """
    from zoneinfo import ZoneInfo, available_timezones

    moments = [datetime(y, m, 15, 12, tzinfo=timezone.utc) for y in (2015, 2025) for m in (1, 7)]
    names: set[str] = set()
    for key in available_timezones():
        try:
            tz = ZoneInfo(key)
        except (OSError, ValueError):
            continue
        for moment in moments:
            name = moment.astimezone(tz).tzname()
            if name and name.isalpha() and name.isupper():
                names.add(name)
    return frozenset(names)


def _zone_abbreviations(zone: Zone) -> frozenset[str]:
    """The abbreviations `zone` itself prints, in standard and in summer time, now and lately."""
    names: set[str] = set()
    for year in (2015, 2020, datetime.now(timezone.utc).year):
        for month in range(1, 13):
            name = datetime(year, month, 15, 12, tzinfo=timezone.utc).astimezone(zone.tz).tzname()
            if name:
                names.add(name)
    return frozenset(names)


class _Clock:
    """Reads the time at the head of a line as a `_Stamp`, in one application zone."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self._own = _zone_abbreviations(zone)
        self._is_zone: dict[str, bool] = {}

    def zone_word(self, word: str | None) -> str | None:
        """`word` when it names a zone (an offset, UTC, an abbreviation), else None."""
        if not word:
            return None
        known = self._is_zone.get(word)
        if known is None:
            known = fixed_offset(word) is not None or word in self._own or word in _world_abbreviations()
            self._is_zone[word] = known
        return word if known else None

    def text(self, text: str, default_year: int | None = None) -> _Stamp | None:
        """The timestamp at the head of a text line, or None."""
        head = text[:_HEAD]
        if m := _ISO.search(head):
            y, mo, d, hh, mi, ss, frac, attached, word = m.groups()
            return _stamp(
                int(y), int(mo), int(d), int(hh), int(mi), int(ss), frac, attached or self.zone_word(word)
            )
        if m := _LOG4J_DATE.search(head):
            d, mon, y, hh, mi, ss, frac = m.groups()
            return _stamp(int(y), _MONTHS[mon], int(d), int(hh), int(mi), int(ss), frac, None)
        if m := _JUL.match(head):
            mon, d, y, hh, mi, ss, ampm = m.groups()
            hour = int(hh) % 12 + (12 if ampm == "PM" else 0)
            return _stamp(int(y), _MONTHS[mon], int(d), hour, int(mi), int(ss), None, None)
        if default_year is not None and (m := _SYSLOG.match(head)):
            mon, d, hh, mi, ss = m.groups()
            return _stamp(default_year, _MONTHS[mon], int(d), int(hh), int(mi), int(ss), None, None)
        return None

    def json_value(self, value: object) -> _Stamp | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            seconds = float(value)
            # epoch seconds, or ms/µs/ns told apart by magnitude (today is about 1.7e9 s)
            if abs(seconds) >= 1e17:
                seconds /= 1e9
            elif abs(seconds) >= 1e14:
                seconds /= 1e6
            elif abs(seconds) >= 1e11:
                seconds /= 1e3
            try:  # an epoch is exact: UTC
                return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None), "UTC"
            except (OverflowError, OSError, ValueError):
                return None
        if isinstance(value, str):
            return self.text(value)
        return None

    def line(self, text: str, syslog_year: int | None) -> _Stamp | None:
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                for key in _JSON_TIME_KEYS:
                    if key in obj and (ts := self.json_value(obj[key])) is not None:
                        return ts
                return None
        return self.text(text, syslog_year)


def _stamp(
    year: int, month: int, day: int, hh: int, mm: int, ss: int, frac: str | None, zone: str | None
) -> _Stamp | None:
    try:
        wall = datetime(year, month, day, hh, mm, ss, int((frac or "0")[:6].ljust(6, "0")))
    except ValueError:
        return None
    return wall, zone


def _resolve(stamps: Sequence[_Stamp | None], zone: Zone, warnings: list[str], what: str) -> list[Any]:
    """UTC pd.Timestamps (None where there was no time) for one file's stamps.

    An offset or UTC printed with the time is exact; a naive time or an abbreviation goes
    through zones.to_utc in `zone`, which warns about an abbreviation the zone never uses.
    to_utc works in milliseconds: the microseconds below are added back, as offsets are whole
    minutes they do not change.
    """
    out: list[Any] = [None] * len(stamps)
    naive: list[tuple[int, datetime]] = []
    named: list[tuple[int, datetime]] = []
    names: list[str] = []
    for i, stamp in enumerate(stamps):
        if stamp is None:
            continue
        wall, word = stamp
        if word is None:
            naive.append((i, wall))
        elif (offset := fixed_offset(word)) is not None:
            out[i] = pd.Timestamp(wall - offset, tz="UTC")
        else:
            named.append((i, wall))
            names.append(word)
    for rows, abbreviations in ((naive, None), (named, names)):
        if not rows:
            continue
        sub_ms = [wall.microsecond % 1000 for _, wall in rows]
        values = np.array(
            [wall - timedelta(microseconds=us) for (_, wall), us in zip(rows, sub_ms, strict=True)],
            dtype="datetime64[ms]",
        )
        utc = to_utc(values, abbreviations, zone, warnings, what)
        for (i, _), value, us in zip(rows, utc, sub_ms, strict=True):
            out[i] = pd.Timestamp(value).tz_localize("UTC") + pd.Timedelta(microseconds=us)
    return out


# -- records -------------------------------------------------------------------------------
_TRACEBACK_MARKS = (
    "Traceback (most recent call last)",
    "The above exception was the direct cause",
    "During handling of the above exception",
    "Caused by:",
)
_ALWAYS_CONTINUES = (
    *_TRACEBACK_MARKS,
    "[SQL:",
    "[parameters:",
    "(Background on this error",
    "Invalid `prisma.",
    "HINT:",
    "DETAIL:",
)
# libpq puts a second message on its own line ("...administrator command\nserver closed ...")
_LIBPQ_SECOND_LINES = (
    "server closed the connection unexpectedly",
    "SSL connection has been closed unexpectedly",
    "SSL SYSCALL error",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    "This probably means",
)
_PY_FRAME = re.compile(r'^\s+File "[^"]*", line \d+')
# The line that names an exception continues its record (it is the end of a traceback, or the
# driver's error relayed under a log line). Most classes end in Error/Exception/Warning; these do
# not, and they are the ones a dropped session raises (AdminShutdown, IdleSessionTimeout,
# QueryCanceled, ProtocolViolation, PoolTimeout, ...). Listed from the hierarchies themselves:
# psycopg/errors.py and psycopg_pool/errors.py, psycopg2's sqlstate_errors.h and errors.py,
# asyncpg/exceptions/__init__.py and _base.py, sqlalchemy/exc.py; pgJDBC (PSQLException,
# PSQLWarning), HikariCP and node-postgres (Error, DatabaseError) need none. test_applog checks
# the installed psycopg, psycopg_pool and asyncpg against it.
_DRIVER_CLASS_NAMES_TEXT = (
    "ActiveSqlTransaction AdminShutdown AmbiguousAlias AmbiguousColumn AmbiguousFunction "
    "AmbiguousParameter AssertFailure AwaitRequired BadCopyFileFormat BranchTransactionAlreadyActive "
    "CancellationTimeout CannotCoerce CannotConnectNow CantChangeRuntimeParam CardinalityViolation "
    "CaseNotFound CharacterNotInRepertoire CheckViolation CollationMismatch "
    "ConfigurationLimitExceeded ConnectionDoesNotExist ConnectionFailure ConnectionTimeout "
    "ContainingSqlNotPermitted CrashShutdown DataCorrupted DatabaseDropped DatatypeMismatch "
    "DatetimeFieldOverflow DeadlockDetected DependentObjectsStillExist "
    "DependentPrivilegeDescriptorsStillExist DeprecatedFeature DiskFull DivisionByZero DuplicateAlias "
    "DuplicateColumn DuplicateCursor DuplicateDatabase DuplicateFile DuplicateFunction "
    "DuplicateJsonObjectKeyValue DuplicateObject DuplicatePreparedStatement DuplicateSchema "
    "DuplicateTable DynamicResultSetsReturned ErrorInAssignment EscapeCharacterConflict "
    "EventTriggerProtocolViolated ExclusionViolation FdwColumnNameNotFound "
    "FdwDynamicParameterValueNeeded FdwInconsistentDescriptorInformation FdwInvalidAttributeValue "
    "FdwInvalidColumnName FdwInvalidColumnNumber FdwInvalidDataType FdwInvalidDataTypeDescriptors "
    "FdwInvalidDescriptorFieldIdentifier FdwInvalidHandle FdwInvalidOptionIndex FdwInvalidOptionName "
    "FdwInvalidStringFormat FdwInvalidStringLengthOrBufferLength FdwInvalidUseOfNullPointer "
    "FdwNoSchemas FdwOptionNameNotFound FdwOutOfMemory FdwReplyHandle FdwSchemaNotFound "
    "FdwTableNotFound FdwTooManyHandles FdwUnableToCreateExecution FdwUnableToCreateReply "
    "FdwUnableToEstablishConnection FeatureNotSupported FileNameTooLong ForeignKeyViolation "
    "FunctionExecutedNoReturnStatement GeneratedAlways HeldCursorRequiresSameIsolationLevel "
    "IdleInTransactionSessionTimeout IdleSessionTimeout ImplicitZeroBitPadding InFailedSqlTransaction "
    "InappropriateAccessModeForBranchTransaction InappropriateIsolationLevelForBranchTransaction "
    "IndeterminateCollation IndeterminateDatatype IndexCorrupted IndicatorOverflow "
    "InsufficientPrivilege InsufficientResources IntegrityConstraintViolation InternalError_ "
    "IntervalFieldOverflow InvalidArgumentForLogarithm InvalidArgumentForNthValueFunction "
    "InvalidArgumentForNtileFunction InvalidArgumentForPowerFunction "
    "InvalidArgumentForSqlJsonDatetimeFunction InvalidArgumentForWidthBucketFunction "
    "InvalidArgumentForXquery InvalidAuthorizationSpecification InvalidBinaryRepresentation "
    "InvalidCatalogName InvalidCharacterValueForCast InvalidColumnDefinition InvalidColumnReference "
    "InvalidCursorDefinition InvalidCursorName InvalidCursorState InvalidDatabaseDefinition "
    "InvalidDatetimeFormat InvalidEscapeCharacter InvalidEscapeOctet InvalidEscapeSequence "
    "InvalidForeignKey InvalidFunctionDefinition InvalidGrantOperation InvalidGrantor "
    "InvalidIndicatorParameterValue InvalidJsonText InvalidLocatorSpecification InvalidName "
    "InvalidObjectDefinition InvalidParameterValue InvalidPassword InvalidPrecedingOrFollowingSize "
    "InvalidPreparedStatementDefinition InvalidRecursion InvalidRegularExpression "
    "InvalidRoleSpecification InvalidRowCountInLimitClause InvalidRowCountInResultOffsetClause "
    "InvalidSavepointSpecification InvalidSchemaDefinition InvalidSchemaName InvalidSqlJsonSubscript "
    "InvalidSqlStatementName InvalidSqlstateReturned InvalidTableDefinition "
    "InvalidTablesampleArgument InvalidTablesampleRepeat InvalidTextRepresentation "
    "InvalidTimeZoneDisplacementValue InvalidTransactionInitiation InvalidTransactionState "
    "InvalidTransactionTermination InvalidUseOfEscapeCharacter InvalidXmlComment InvalidXmlContent "
    "InvalidXmlDocument InvalidXmlProcessingInstruction LockFileExists LockNotAvailable "
    "MissingGreenlet ModifyingSqlDataNotPermitted ModifyingSqlDataNotPermittedExt "
    "MoreThanOneSqlJsonItem MostSpecificTypeMismatch MultipleResultsFound NameTooLong "
    "NoActiveSqlTransaction NoActiveSqlTransactionForBranchTransaction "
    "NoAdditionalDynamicResultSetsReturned NoDBAPILoaded NoData NoDataFound NoInspectionAvailable "
    "NoResultFound NoSqlJsonItem NonNumericSqlJsonItem NonUniqueKeysInAJsonObject "
    "NonstandardUseOfEscapeCharacter NotAnXmlDocument NotNullViolation "
    "NullValueEliminatedInSetFunction NullValueNoIndicatorParameter NullValueNotAllowed "
    "NullValueNotAllowedExt NumericValueOutOfRange ObjectInUse ObjectNotInPrerequisiteState "
    "OperatorIntervention OutOfMemory PipelineAborted PoolClosed PoolTimeout PrivilegeNotGranted "
    "PrivilegeNotRevoked ProgramLimitExceeded ProhibitedSqlStatementAttempted "
    "ProhibitedSqlStatementAttemptedExt ProtocolViolation QueryCanceled ReadOnlySqlTransaction "
    "ReadingSqlDataNotPermitted ReadingSqlDataNotPermittedExt ReservedName RestrictViolation "
    "SchemaAndDataStatementMixingNotSupported SequenceGeneratorLimitExceeded SerializationFailure "
    "SingletonSqlJsonItemRequired SnapshotTooOld SqlJsonArrayNotFound "
    "SqlJsonItemCannotBeCastToTargetType SqlJsonMemberNotFound SqlJsonNumberNotFound "
    "SqlJsonObjectNotFound SqlJsonScalarRequired SqlStatementNotYetComplete "
    "SqlclientUnableToEstablishSqlconnection SqlserverRejectedEstablishmentOfSqlconnection "
    "SrfProtocolViolated StackedDiagnosticsAccessedWithoutActiveHandler StatementCompletionUnknown "
    "StatementTooComplex StringDataLengthMismatch StringDataRightTruncation "
    "SyntaxErrorOrAccessRuleViolation TargetServerAttributeNotMatched TooManyArguments TooManyColumns "
    "TooManyConnections TooManyJsonArrayElements TooManyJsonObjectMembers TooManyRequests TooManyRows "
    "TransactionIntegrityConstraintViolation TransactionResolutionUnknown TransactionRollback "
    "TransactionTimeout TriggerProtocolViolated TriggeredDataChangeViolation UndefinedColumn "
    "UndefinedFile UndefinedFunction UndefinedObject UndefinedParameter UndefinedTable "
    "UniqueViolation UnsafeNewEnumValueUsage UnterminatedCString UntranslatableCharacter "
    "WithCheckOptionViolation WrongObjectType ZeroLengthCharacterString "
)
_DRIVER_CLASS_NAMES = frozenset(_DRIVER_CLASS_NAMES_TEXT.split())
_EXCEPTION_HEAD = re.compile(r"^(?:[A-Za-z_$][\w$]*\.)*(?P<name>[A-Za-z_$][\w$]*)(?::\s|:?$)")
_EXCEPTION_SUFFIX = re.compile(r"(?:Error|Exception|Warning)_?$")
# node-postgres' DatabaseError is named after the protocol message: its stack starts "error: ".
_NODE_DATABASE_ERROR = "error: "
# asyncpg lets asyncio's TimeoutError through from pool.acquire(timeout=...), from connect() and
# from a query's timeout: which one it was shows only in the traceback's last asyncpg frame.
_TIMEOUT_ERROR = re.compile(
    r"^(?:builtins\.|asyncio\.(?:exceptions\.)?|concurrent\.futures\.(?:_base\.)?)?TimeoutError\b"
)
_ASYNCPG_FRAME = re.compile(r'asyncpg[/\\](\w+(?:[/\\]\w+)?)\.(?:py|pyx)", line \d+, in (\w+)')
_ASYNCPG_TIMEOUTS = {
    "pool": _Kind("pool_timeout", re.compile("TimeoutError"), "asyncpg"),
    "connect": _Kind("connect_timeout", re.compile("TimeoutError"), "asyncpg"),
    "query": _Kind("client_query_timeout", re.compile("TimeoutError"), "asyncpg"),
}


def _asyncpg_site(module: str, function: str) -> str | None:
    """What an asyncpg frame was doing, when a TimeoutError raised under it says which timeout."""
    module = module.replace("\\", "/")
    if module == "pool" and ("acquire" in function or function == "__aenter__"):
        return "pool"
    if module in ("connect_utils", "cluster") or function in ("connect", "_connect", "_get_new_connection"):
        return "connect"
    if module.startswith("protocol"):
        return "query"
    return None  # a compat wrapper (wait_for) or a pool method that went on to a deeper frame


def _is_exception_head(text: str) -> bool:
    m = _EXCEPTION_HEAD.match(text)
    if m is None:
        return False
    name = m.group("name")
    if "." not in text[: m.end("name")] and text[m.end("name") :][:1] != ":":
        return False  # a bare word on its own line is not an exception without a module or message
    return bool(_EXCEPTION_SUFFIX.search(name)) or name in _DRIVER_CLASS_NAMES


@dataclass
class _Record:
    file: str
    ts: _Stamp | None
    nlines: int = 0
    traceback: bool = False
    awaits_exception: bool = False  # inside a Python traceback: its first unindented line is the exception
    last_matched: bool = False
    last_libpq_second: bool = False
    awaits_message: bool = False  # Prisma puts its message after "Invalid `prisma.x()` invocation:"
    after_frame: bool = False  # the line after a Python frame header is source code, not a message
    asyncpg_site: str | None = None  # what the latest asyncpg frame of this traceback was doing
    stacks: set[str] = field(default_factory=set)
    best: tuple[int, str, int, str] | None = None  # (rank, kind, line_no, text)

    def continues_with(self, text: str) -> bool:
        if self.nlines >= RECORD_MAX_LINES:
            return False
        if not text.strip() or text[0] in " \t" or self.awaits_message:
            return True
        if text.startswith(_ALWAYS_CONTINUES):
            return True
        if self.awaits_exception:
            return True  # whatever the class is called (TimeoutError alone, a library's own name)
        if text.startswith(_LIBPQ_SECOND_LINES):
            return self.last_matched and not self.last_libpq_second
        if _is_exception_head(text) or text.startswith(_NODE_DATABASE_ERROR) or text.rstrip() == "}":
            # under a dated line or in a traceback: the error it logged, or the end of Node's
            # inspected error object; in an undated log such a line is a failure of its own
            return self.ts is not None or self.traceback
        return False

    def add(self, line_no: int, text: str, kinds: list[_Kind]) -> bool:
        """Take one line; True when it was recognised as a failure."""
        self.nlines += 1
        indented = text[:1] in (" ", "\t")
        if self.after_frame and indented:
            kinds = []  # `raise PoolTimeout(` in a traceback is code, the message comes later
        if text.startswith(_TRACEBACK_MARKS):
            self.traceback = True
            if text.startswith("Traceback"):
                self.awaits_exception = True
                self.asyncpg_site = None  # each chained traceback is read on its own
        elif self.awaits_exception and text.strip() and not indented:
            self.awaits_exception = False
            if self.asyncpg_site and _TIMEOUT_ERROR.match(text):
                kinds = [*kinds, _ASYNCPG_TIMEOUTS[self.asyncpg_site]]
        if _PGBOUNCER_LINE.match(text):
            self.stacks.add("pgbouncer")
        elif _STACK_TRIGGERS.search(text.lower()):
            for stack, mark in _STACK_MARKS:
                if stack not in self.stacks and mark.search(text):
                    self.stacks.add(stack)
        self.after_frame = bool(_PY_FRAME.match(text))
        if self.after_frame and (frame := _ASYNCPG_FRAME.search(text)):
            self.asyncpg_site = _asyncpg_site(*frame.groups()) or self.asyncpg_site
        for k in kinds:
            if k.stack:
                self.stacks.add(k.stack)
            rank = _KIND_RANK[k.kind]
            if self.best is None or rank < self.best[0]:
                self.best = (rank, k.kind, line_no, text.strip()[:TEXT_MAX])
        self.last_matched = bool(kinds)
        self.last_libpq_second = text.startswith(_LIBPQ_SECOND_LINES)
        if text.startswith("Invalid `prisma."):
            self.awaits_message = True
        elif text.strip():
            self.awaits_message = False
        return bool(kinds)

    def stack(self) -> str | None:
        for stack in _STACK_PRECEDENCE:
            if stack in self.stacks:
                return stack
        return None


# -- reading -------------------------------------------------------------------------------
def _lines(path: Path, warnings: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; invalid UTF-8 is replaced, giant lines are cut.

    A compressed file that breaks off after some lines (a rotated log copied while it was being
    written, a download cut short) keeps what was read and says so in `warnings`; one that
    gives no line at all is a PlaybookError, like a missing or unreadable file.
    """
    with LogFile(path, "app log") as f:
        line_no = 0
        try:
            while True:
                chunk = f.readline(LINE_MAX)
                if not chunk:
                    break
                line_no += 1
                if not chunk.endswith(b"\n"):
                    # drop the rest of an overlong line, but keep counting lines right
                    while (rest := f.readline(LINE_MAX)) and not rest.endswith(b"\n"):
                        pass
                yield line_no, chunk.decode("utf-8", errors="replace").rstrip("\r\n")
        except PlaybookError as exc:
            if line_no == 0 or not f.compression:
                raise
            if isinstance(exc.__cause__, EOFError):
                warnings.append(f"{f.label} is truncated after line {line_no}; the rest was not read")
            else:
                warnings.append(
                    f"{f.label} is damaged after line {line_no} ({exc.__cause__}); the rest was not read"
                )


@dataclass
class AppLogEvidence:
    """What the application logs say: one row per failure, and the client stack behind them.

    `events` has COLUMNS: ts (UTC, NaT when the record had no time), kind (KIND_IDS), stack
    (STACKS or "unknown"), line_no and file of the line that named the kind, text (that line,
    at most TEXT_MAX characters). `zone` is the zone naive times were read in; `warnings` holds
    what the reader could not place or read (a foreign zone abbreviation, a truncated file).
    """

    events: pd.DataFrame
    stacks: dict[str, int]
    primary_stack: str
    summary: dict[str, Any]
    lines_read: int
    lines_matched: int
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    zone: Zone | None = None


def read_app_logs(paths: Sequence[str | Path] | str | Path, app_tz: Zone | None = None) -> AppLogEvidence:
    """Read application logs and recognise the session failures each client stack reports.

    Naive times, and times printed with a zone abbreviation, are read in `app_tz` (`--app-tz`);
    without it, in the zone of the machine running the playbook (zones.machine_zone()). The
    summary's "zone" says which zone was assumed and where it came from, and how many times were
    read in it. Raise PlaybookError (one sentence) for a path that is missing, a directory,
    unreadable or not valid for the compression it claims; a file with nothing recognised
    gives no events.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    zone = app_tz or machine_zone()
    clock = _Clock(zone)
    readers = [_FileReader(Path(p), clock) for p in paths]
    warnings: list[str] = []
    rows: list[dict[str, Any]] = []
    stack_counts: Counter[str] = Counter()
    for reader in readers:
        reader.read(warnings)
        rows.extend(reader.rows)
        stack_counts.update(reader.stack_counts)
    lines_read = sum(r.lines_read for r in readers)
    lines_matched = sum(r.lines_matched for r in readers)
    files = [str(r.path) for r in readers]

    events = _frame(rows)
    stacks = dict(sorted(stack_counts.items(), key=lambda kv: (-kv[1], _STACK_PRECEDENCE.index(kv[0]))))
    primary = _primary_stack(stacks)
    summary = _summary(events, stacks, primary, files, lines_read, lines_matched, warnings)
    summary["zone"] = {
        "name": zone.name,
        "source": zone.source,
        "description": zone.describe(),
        "times_read_in_zone": sum(r.zone_times for r in readers),
    }
    return AppLogEvidence(
        events=events,
        stacks=stacks,
        primary_stack=primary,
        summary=summary,
        lines_read=lines_read,
        lines_matched=lines_matched,
        files=files,
        warnings=warnings,
        zone=zone,
    )


class _FileReader:
    """One file's records turned into events."""

    def __init__(self, path: Path, clock: _Clock) -> None:
        self.path = path
        self.clock = clock
        self.rows: list[dict[str, Any]] = []
        self.stack_counts: Counter[str] = Counter()
        self.lines_read = 0
        self.lines_matched = 0
        self.zone_times = 0  # event times read through the application zone (naive or abbreviated)
        self._recent_stack: tuple[int, str] | None = None  # (line_no, stack) of the latest evidence
        self._syslog: tuple[int, datetime] | None = (
            None  # (year, mtime as wall clock) once a syslog line shows
        )

    def read(self, warnings: list[str]) -> None:
        record: _Record | None = None
        for line_no, text in _lines(self.path, warnings):
            self.lines_read += 1
            ts = self._ts(text)
            kinds = [k for k in KINDS if k.pattern.search(text)] if _TRIGGERS.search(text.lower()) else []
            if record is None or ts is not None or not record.continues_with(text):
                self._flush(record)
                record = _Record(file=str(self.path), ts=ts)
            if record.add(line_no, text, kinds):
                self.lines_matched += 1
            if record.best is None and (stack := record.stack()):
                self._recent_stack = (line_no, stack)
        self._flush(record)
        stamps = [row.pop("stamp") for row in self.rows]
        self.zone_times = sum(1 for st in stamps if st is not None and fixed_offset(st[1] or "") is None)
        for row, ts in zip(
            self.rows, _resolve(stamps, self.clock.zone, warnings, f"app log {self.path}"), strict=True
        ):
            row["ts"] = ts

    def _ts(self, text: str) -> _Stamp | None:
        if self._syslog is None and _SYSLOG.match(text):
            # the year of the file's last write, on the application's wall clock
            mtime = datetime.fromtimestamp(self.path.stat().st_mtime, tz=self.clock.zone.tz).replace(
                tzinfo=None
            )
            self._syslog = (mtime.year, mtime)
        stamp = self.clock.line(text, self._syslog[0] if self._syslog else None)
        if (
            stamp is not None
            and self._syslog
            and _SYSLOG.match(text)
            and stamp[0] > self._syslog[1] + timedelta(days=1)
        ):
            # syslog has no year: a December line in a January file
            stamp = (stamp[0].replace(year=stamp[0].year - 1), stamp[1])
        return stamp

    def _flush(self, rec: _Record | None) -> None:
        if rec is None:
            return
        stack = rec.stack()
        if stack:
            self.stack_counts[stack] += 1
        if rec.best is None:
            return
        _, kind, line_no, text = rec.best
        recent = self._recent_stack
        if stack is None and recent and line_no - recent[0] <= STACK_LOOKBACK_LINES:
            stack = recent[1]  # e.g. a bare FATAL text logged between the stack's own lines
        if stack:
            self._recent_stack = (line_no, stack)
        row = {"stamp": rec.ts, "kind": kind, "stack": stack or UNKNOWN, "line_no": line_no, "file": rec.file}
        if self.rows and rec.ts is not None and row["stack"] == "pgbouncer":
            # one failure logged twice in a row with the same timestamp (PgBouncer's
            # "closing because: X" then "pooler error: X") is one event; an application's burst of
            # failures in one millisecond (a pool timing out its waiters) is as many events
            prev = self.rows[-1]
            same = all(prev[c] == row[c] for c in ("stamp", "kind", "stack"))
            if same and line_no - prev["line_no"] <= 3:
                return
        row["text"] = text
        self.rows.append(row)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["line_no"] = frame["line_no"].astype("int64")
    for col in ("kind", "stack", "file", "text"):
        frame[col] = frame[col].astype(object)
    return frame


def _primary_stack(stacks: dict[str, int]) -> str:
    """The application's own stack: PgBouncer sits in front of one, so it wins only alone."""
    app = {s: n for s, n in stacks.items() if s != "pgbouncer"}
    pool = app or stacks
    if not pool:
        return UNKNOWN
    return min(pool, key=lambda s: (-pool[s], _STACK_PRECEDENCE.index(s)))


def _iso(ts: Any) -> str | None:
    return None if ts is None or pd.isna(ts) else pd.Timestamp(ts).isoformat()


def _summary(
    events: pd.DataFrame,
    stacks: dict[str, int],
    primary: str,
    files: list[str],
    lines_read: int,
    lines_matched: int,
    warnings: list[str],
) -> dict[str, Any]:
    dated = events.dropna(subset=["ts"])
    by_kind: dict[str, Any] = {}
    timeline: dict[str, list[dict[str, Any]]] = {}
    for kind, group in events.groupby("kind", sort=False):
        g_dated = group.dropna(subset=["ts"])
        by_kind[str(kind)] = {
            "count": int(len(group)),
            "undated": int(len(group) - len(g_dated)),
            "first_seen": _iso(g_dated["ts"].min()) if len(g_dated) else None,
            "last_seen": _iso(g_dated["ts"].max()) if len(g_dated) else None,
            "stacks": {str(s): int(n) for s, n in group["stack"].value_counts().items()},
        }
        if len(g_dated):
            per_minute = g_dated["ts"].dt.floor("min").value_counts().sort_index()
            timeline[str(kind)] = [{"minute": _iso(m), "count": int(n)} for m, n in per_minute.items()]
    order = sorted(by_kind, key=lambda k: (-by_kind[k]["count"], _KIND_RANK.get(k, 999)))
    return {
        "files": files,
        "lines_read": lines_read,
        "lines_matched": lines_matched,
        "events": int(len(events)),
        "undated_events": int(len(events) - len(dated)),
        "kinds": {k: by_kind[k]["count"] for k in order},
        "stacks": dict(stacks),
        "event_stacks": {str(s): int(n) for s, n in events["stack"].value_counts().items()},
        "primary_stack": primary,
        "first_seen": _iso(dated["ts"].min()) if len(dated) else None,
        "last_seen": _iso(dated["ts"].max()) if len(dated) else None,
        "by_kind": {k: by_kind[k] for k in order},
        "timeline": timeline,
        "warnings": list(warnings),
    }

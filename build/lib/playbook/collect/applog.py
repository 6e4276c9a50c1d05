"""Application logs: what the client side saw when its PostgreSQL sessions went away.

The reader streams each file line by line (plain or gzip, any encoding damage replaced) and
recognises the wordings of the common client stacks: psycopg 3 / psycopg_pool, psycopg2,
SQLAlchemy, asyncpg, node-postgres, Prisma, HikariCP / pgJDBC and PgBouncer. The texts were
checked against each project's source; tests/test_applog.py holds one real line per wording.

One failure usually spans several lines (a log message, a traceback, chained exceptions, a
libpq message continued on the next line), so lines are grouped into records: a line with its
own timestamp, or one that does not look like a continuation, starts a record. A record gives
at most one event, of its most specific kind, so a traceback that repeats the driver's text
under SQLAlchemy's wrapper is counted once.

Timestamps without a zone are taken as UTC; so are syslog lines, whose year is the file's.
Lines nobody recognises are skipped.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from playbook.errors import PlaybookError

STACKS = (
    "psycopg",
    "psycopg2",
    "sqlalchemy",
    "asyncpg",
    "node-postgres",
    "prisma",
    "hikaricp",
    "pgbouncer",
)
UNKNOWN = "unknown"

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
    _k("pgbouncer_client_login_timeout", r"\bclient_login_timeout\b"),
    _k("pgbouncer_max_client_conn", r"no more connections allowed \(max_client_conn\)"),
    _k("pgbouncer_server_login_failed", r"server login failed"),
    _k("pgbouncer_cannot_connect", r"pgbouncer cannot connect to server"),
    _k("pgbouncer_client_unexpected_eof", r"closing because: client unexpected eof", "pgbouncer"),
    # connecting
    _k("connect_refused", r"failed: Connection refused|ConnectionRefusedError|Connect call failed"),
    _k("connect_refused", r"\bECONNREFUSED\b"),
    _k("connect_refused", r"Connection to \S+ refused\. Check that the hostname", "hikaricp"),
    _k("connect_timeout", r"(?<!cancellation )(?<!connection )\btimeout expired\b"),
    _k("connect_timeout", r"connection timeout expired|\bpsycopg\.errors\.ConnectionTimeout\b", "psycopg"),
    _k("connect_timeout", r"Connection terminated due to connection timeout", "node-postgres"),
    _k("connect_timeout", r"was reached but timed out", "prisma"),
    # pools
    _k("leak_detected", r"Connection leak detection triggered", "hikaricp"),
    _k("validation_failed", r"Failed to validate connection", "hikaricp"),
    _k("validation_failed", r"connection failed check", "psycopg"),
    _k("validation_failed", r"Pool pre-ping on connection .* failed", "sqlalchemy"),
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
    _k("connection_lost", r"Can't reconnect until invalid transaction is rolled back", "sqlalchemy"),
    _k("connect_failed", r"Can't reach database server", "prisma"),
    _k("connect_failed", r"The connection attempt failed", "hikaricp"),
    _k("connect_failed", r"error connecting in '|reconnection attempt in pool .* failed", "psycopg"),
    _k("connection_closed", r"\bthe connection is closed\b|\bconnection is closed\b"),
    _k("connection_closed", r"connection already closed", "psycopg2"),
    _k("connection_closed", r"cannot perform operation: connection is closed", "asyncpg"),
    _k("connection_closed", r"is not queryable", "node-postgres"),
    _k("connection_closed", r"This connection has been closed", "hikaricp"),
    _k("pool_discarded_broken", r"discarding (?:closed|broken) connection", "psycopg"),
    _k("pool_discarded_broken", r"marked as broken because of SQLSTATE", "hikaricp"),
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
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_ZONES = {
    "UTC": 0,
    "UT": 0,
    "GMT": 0,
    "Z": 0,
    "WET": 0,
    "WEST": 60,
    "CET": 60,
    "CEST": 120,
    "EET": 120,
    "EEST": 180,
    "MSK": 180,
    "EST": -300,
    "EDT": -240,
    "CST": -360,
    "CDT": -300,
    "MST": -420,
    "MDT": -360,
    "PST": -480,
    "PDT": -420,
    "JST": 540,
    "KST": 540,
    "AEST": 600,
    "AEDT": 660,
}
_HEAD = 80  # a line's timestamp sits in its first characters, after a bracket or a container name
_ISO = re.compile(
    r"(?<!\d)(\d{4})[-/](\d\d)[-/](\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
    r"(?:\s?(Z|[+-]\d\d:?\d\d|[A-Z]{2,5})(?![A-Za-z]))?"
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


def _zone_offset(zone: str | None) -> timedelta:
    if not zone:
        return timedelta(0)
    if zone[0] in "+-":
        digits = zone[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:4])
        return timedelta(minutes=minutes if zone[0] == "+" else -minutes)
    return timedelta(minutes=_ZONES.get(zone.upper(), 0))


def _frac(digits: str | None) -> int:
    return int((digits or "0")[:6].ljust(6, "0"))


def _utc(
    year: int, month: int, day: int, hh: int, mm: int, ss: int, us: int, off: timedelta
) -> datetime | None:
    try:
        return datetime(year, month, day, hh, mm, ss, us, tzinfo=timezone.utc) - off
    except ValueError:
        return None


def _parse_text_ts(text: str, default_year: int | None = None) -> datetime | None:
    """The timestamp at the head of a text line, or None."""
    head = text[:_HEAD]
    if m := _ISO.search(head):
        y, mo, d, hh, mi, ss, frac, zone = m.groups()
        return _utc(int(y), int(mo), int(d), int(hh), int(mi), int(ss), _frac(frac), _zone_offset(zone))
    if m := _LOG4J_DATE.search(head):
        d, mon, y, hh, mi, ss, frac = m.groups()
        return _utc(int(y), _MONTHS[mon], int(d), int(hh), int(mi), int(ss), _frac(frac), timedelta(0))
    if m := _JUL.match(head):
        mon, d, y, hh, mi, ss, ampm = m.groups()
        hour = int(hh) % 12 + (12 if ampm == "PM" else 0)
        return _utc(int(y), _MONTHS[mon], int(d), hour, int(mi), int(ss), 0, timedelta(0))
    if default_year is not None and (m := _SYSLOG.match(head)):
        mon, d, hh, mi, ss = m.groups()
        return _utc(default_year, _MONTHS[mon], int(d), int(hh), int(mi), int(ss), 0, timedelta(0))
    return None


def _parse_json_ts(value: object) -> datetime | None:
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
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        return _parse_text_ts(value)
    return None


def _line_ts(text: str, syslog_year: int | None) -> datetime | None:
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            for key in _JSON_TIME_KEYS:
                if key in obj and (ts := _parse_json_ts(obj[key])) is not None:
                    return ts
            return None
    return _parse_text_ts(text, syslog_year)


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
_EXCEPTION_HEAD = re.compile(
    r"^(?:[A-Za-z_$][\w$]*\.)*[A-Za-z_$][\w$]*(?:Error|Exception|Timeout|Shutdown|Closed|Requests|Warning)\b"
)


@dataclass
class _Record:
    file: str
    ts: datetime | None
    nlines: int = 0
    traceback: bool = False
    last_matched: bool = False
    last_libpq_second: bool = False
    awaits_message: bool = False  # Prisma puts its message after "Invalid `prisma.x()` invocation:"
    after_frame: bool = False  # the line after a Python frame header is source code, not a message
    stacks: set[str] = field(default_factory=set)
    best: tuple[int, str, int, str] | None = None  # (rank, kind, line_no, text)

    def continues_with(self, text: str) -> bool:
        if self.nlines >= RECORD_MAX_LINES:
            return False
        if not text.strip() or text[0] in " \t" or self.awaits_message:
            return True
        if text.startswith(_ALWAYS_CONTINUES):
            return True
        if text.startswith(_LIBPQ_SECOND_LINES):
            return self.last_matched and not self.last_libpq_second
        if _EXCEPTION_HEAD.match(text):
            return self.ts is not None or self.traceback
        return False

    def add(self, line_no: int, text: str, kinds: list[_Kind]) -> bool:
        """Take one line; True when it was recognised as a failure."""
        self.nlines += 1
        if text.startswith(_TRACEBACK_MARKS):
            self.traceback = True
        if _PGBOUNCER_LINE.match(text):
            self.stacks.add("pgbouncer")
        elif _STACK_TRIGGERS.search(text.lower()):
            for stack, mark in _STACK_MARKS:
                if stack not in self.stacks and mark.search(text):
                    self.stacks.add(stack)
        if self.after_frame:
            kinds = []  # `raise PoolTimeout(` in a traceback is code, the message comes later
        self.after_frame = bool(_PY_FRAME.match(text))
        for k in kinds:
            if k.stack:
                self.stacks.add(k.stack)
            rank = _KIND_RANK[k.kind]
            if self.best is None or rank < self.best[0]:
                self.best = (rank, k.kind, line_no, text.strip()[:TEXT_MAX])
        self.last_matched = bool(kinds)
        if text.startswith("Invalid `prisma."):
            self.awaits_message = True
        elif text.strip():
            self.awaits_message = False
        return bool(kinds)
        self.last_libpq_second = text.startswith(_LIBPQ_SECOND_LINES)

    def stack(self) -> str | None:
        for stack in _STACK_PRECEDENCE:
            if stack in self.stacks:
                return stack
        return None


# -- reading -------------------------------------------------------------------------------
def _open(path: Path) -> BinaryIO:
    """The file as bytes, gunzipped when it is gzip (told by its magic, not its name)."""
    label = f"app log {path}"
    if not path.exists():
        raise PlaybookError(f"{label} does not exist")
    if path.is_dir():
        raise PlaybookError(f"{label} is a directory, not a log file")
    try:
        raw = path.open("rb")
    except PermissionError:
        raise PlaybookError(f"{label} is not readable (permission denied)") from None
    except OSError as ex:
        raise PlaybookError(f"{label} cannot be opened: {ex.strerror or ex}") from None
    try:
        magic = raw.read(2)
        raw.seek(0)
    except OSError as ex:
        raw.close()
        raise PlaybookError(f"{label} cannot be read: {ex.strerror or ex}") from None
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _lines(path: Path, warnings: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; invalid UTF-8 is replaced, giant lines are cut."""
    label = f"app log {path}"
    with _open(path) as f:
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
        except (EOFError, zlib.error) as ex:
            if line_no == 0:
                raise PlaybookError(f"{label} is not a readable gzip file ({ex})") from None
            warnings.append(f"{label} is truncated after line {line_no}; the rest was not read")
        except gzip.BadGzipFile as ex:
            raise PlaybookError(f"{label} is not a readable gzip file ({ex})") from None
        except OSError as ex:
            raise PlaybookError(f"{label} cannot be read: {ex.strerror or ex}") from None


@dataclass
class AppLogEvidence:
    """What the application logs say: one row per failure, and the client stack behind them."""

    events: pd.DataFrame
    stacks: dict[str, int]
    primary_stack: str
    summary: dict[str, Any]
    lines_read: int
    lines_matched: int
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_app_logs(paths: Sequence[str | Path]) -> AppLogEvidence:
    """Read application logs and recognise the session failures each client stack reports.

    Raise PlaybookError for a path that is missing, a directory or unreadable; a file with
    nothing recognised gives no events.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    readers = [_FileReader(Path(p)) for p in paths]
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
    return AppLogEvidence(
        events=events,
        stacks=stacks,
        primary_stack=primary,
        summary=summary,
        lines_read=lines_read,
        lines_matched=lines_matched,
        files=files,
        warnings=warnings,
    )


class _FileReader:
    """One file's records turned into events."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.stack_counts: Counter[str] = Counter()
        self.lines_read = 0
        self.lines_matched = 0
        self._recent_stack: tuple[int, str] | None = None  # (line_no, stack) of the latest evidence
        self._syslog: tuple[int, datetime] | None = None  # (year, mtime) once a syslog line shows

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

    def _ts(self, text: str) -> datetime | None:
        if self._syslog is None and _SYSLOG.match(text):
            mtime = datetime.fromtimestamp(self.path.stat().st_mtime, tz=timezone.utc)
            self._syslog = (mtime.year, mtime)
        ts = _line_ts(text, self._syslog[0] if self._syslog else None)
        if (
            ts is not None
            and self._syslog
            and _SYSLOG.match(text)
            and ts > self._syslog[1] + timedelta(days=1)
        ):
            ts = ts.replace(year=ts.year - 1)  # syslog has no year: a December line in a January file
        return ts

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
        row = {"ts": rec.ts, "kind": kind, "stack": stack or UNKNOWN, "line_no": line_no, "file": rec.file}
        if self.rows and rec.ts is not None:
            # one failure logged twice in a row with the same timestamp (PgBouncer's
            # "closing because: X" then "pooler error: X") is one event
            prev = self.rows[-1]
            same = all(prev[c] == row[c] for c in ("ts", "kind", "stack"))
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

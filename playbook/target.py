"""Where to connect, and how to do it safely.

The DSN comes from --dsn, else PLAYBOOK_DSN, else libpq's own environment (PG* variables, the
service file, .pgpass). Every session the playbook opens is read-only, bounded by a statement and
a lock timeout, and named `pg-session-playbook` so that every analysis can leave it out.
A password never leaves this module in any printable form: `redacted` is what reports show.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

import psycopg
from psycopg import conninfo as libpq_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import Row

from playbook import APPLICATION_NAME
from playbook.errors import PlaybookError, TargetRefused

ACTIVE, UNKNOWN, IDLE = TransactionStatus.ACTIVE, TransactionStatus.UNKNOWN, TransactionStatus.IDLE
SECRET_KEYS = ("password", "sslpassword")
DEFAULT_STATEMENT_TIMEOUT_MS = 5000
DEFAULT_LOCK_TIMEOUT_MS = 1000
DEFAULT_CONNECT_TIMEOUT_S = 5
RECONNECT_ATTEMPTS = 3  # a lost own session: connects tried before the phase gives up
RECONNECT_BACKOFF_S = 0.25  # first wait between them, doubled each time
OWN_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}


def path_defaults(params: Mapping[str, Any], connect_timeout_s: float) -> dict[str, Any]:
    """The connection parameters every session of the playbook's own adds to a DSN that does not
    set them. The path may be the patient: keepalives keep an idle session visible to NATs,
    tcp_user_timeout bounds a write into a dead path, and a connect never waits forever. A DSN's
    own values (and PGCONNECT_TIMEOUT) win."""
    defaults: dict[str, Any] = {key: value for key, value in OWN_KEEPALIVES.items() if key not in params}
    if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
        defaults["connect_timeout"] = connect_timeout_s
    return defaults


def parse_dsn(dsn: str) -> dict[str, Any]:
    """The DSN's parameters; a malformed DSN is bad input, said in one sentence."""
    try:
        return libpq_conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "unparseable"
        # libpq's message may quote the DSN back, password included: never repeat it.
        for key in SECRET_KEYS:
            if key in detail:
                detail = "unparseable"
        raise PlaybookError(f"the DSN is malformed ({detail})") from None


def redact(dsn: str) -> str:
    """The DSN without any secret, in key=value form: safe for reports and logs."""
    params = {k: v for k, v in parse_dsn(dsn).items() if k not in SECRET_KEYS}
    return libpq_conninfo.make_conninfo("", **params)


def password_of(dsn: str) -> str | None:
    value = parse_dsn(dsn).get("password")
    return str(value) if value else None


def session_options(
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS, lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
) -> str:
    """The `options` startup parameter that makes a session safe before its first query."""
    return (
        f"-c default_transaction_read_only=on -c statement_timeout={statement_timeout_ms}"
        f" -c lock_timeout={lock_timeout_ms}"
    )


# A pooler's refusal of the startup `options` (PgBouncer without ignore_startup_parameters=options).
POOLER_REFUSALS = ("unsupported startup parameter",)
# PgBouncer's words when a transaction is opened under pool_mode=statement.
STATEMENT_POOLING = "statement pooling"
# What a run reached through a pooler says (summary.json target.pooler, the verdict's line).
POOLER_NOTE = (
    "reached through a connection pooler: the server's own view of other clients is hidden (their "
    "sessions are the pooler's server connections, their addresses the pooler's, and a session's "
    "age is the server connection's, not the client's); the playbook's safety settings travelled "
    "per transaction (BEGIN READ ONLY, SET LOCAL statement_timeout and lock_timeout)"
)
# Statements that need no envelope: a constant carries nothing to make safe, and wrapping the
# round-trip probe's SELECT 1 would time three round trips instead of one.
BARE_STATEMENTS = frozenset({"SELECT 1"})


def envelope_sql(statement_timeout_ms: int, lock_timeout_ms: int) -> str:
    """What opens each transaction on a pooled session: read-only and bounded, for that transaction
    only (SET LOCAL ends with it, so nothing is left on a server connection the pool hands on)."""
    return (
        f"BEGIN READ ONLY; SET LOCAL statement_timeout = {int(statement_timeout_ms)};"
        f" SET LOCAL lock_timeout = {int(lock_timeout_ms)}"
    )


def refused_by_pooler(exc: BaseException) -> bool:
    """Whether a failed connect is a pooler refusing the startup `options` parameter."""
    lowered = " ".join(str(exc).split()).lower()
    return any(marker in lowered for marker in POOLER_REFUSALS)


@dataclass(frozen=True)
class Target:
    """A database to examine. `dsn` may hold a password; only `redacted` is ever shown."""

    dsn: str
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S
    # What connecting found out: "pooled" once the startup options did not reach the server.
    _seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @property
    def pooled(self) -> bool:
        """True once a connect found that the startup `options` do not reach the server (a pooler
        refused them, or dropped them): every session then carries its safety per transaction."""
        return self._seen.get("pooled", False)

    @property
    def redacted(self) -> str:
        return redact(self.dsn) or "(libpq defaults)"

    @property
    def password(self) -> str | None:
        return password_of(self.dsn)

    @property
    def public_dsn(self) -> str:
        """The DSN a notebook kernel is given: no password (it travels through PGPASSWORD)."""
        return redact(self.dsn)

    def connect_kwargs(self, pooled: bool = False) -> dict[str, Any]:
        """psycopg.connect's arguments. `pooled`: without the safety options (the pooler refuses or
        drops them; the envelope carries them) and without prepared statements (a transaction
        pooler hands the next one to another server connection)."""
        params = parse_dsn(self.dsn)
        user_options = str(params.get("options") or "")
        own = "" if pooled else session_options(self.statement_timeout_ms, self.lock_timeout_ms)
        options = " ".join(part for part in (user_options, own) if part)
        kwargs: dict[str, Any] = {
            "application_name": APPLICATION_NAME,
            "autocommit": True,
            "cursor_factory": SafeCursor,
        }
        if options:
            kwargs["options"] = options
        if pooled:
            kwargs["prepare_threshold"] = None
        kwargs.update(path_defaults(params, self.connect_timeout_s))
        return kwargs

    def connect(self) -> OwnSession:
        """A safe session (read-only, timeouts, named); connection failures are raised as psycopg's.

        Directly (or through a proxy that passes the startup `options` on, such as HAProxy), the
        safety is the session's own from its first query. A pooler that refuses `options`
        (PgBouncer by default: "unsupported startup parameter") or drops them
        (ignore_startup_parameters=options) gets a session without them whose every statement runs
        in its own read-only, bounded transaction (`SafeCursor`); the target remembers it
        (`pooled`). Whether they were dropped is read, not guessed: the session must report
        default_transaction_read_only=on, else it is treated as pooled."""
        if self.pooled:
            return self._open(pooled=True)
        try:
            session = self._open(pooled=False)
        except psycopg.OperationalError as exc:
            if not refused_by_pooler(exc):
                raise
            self._seen["pooled"] = True
            return self._open(pooled=True)
        try:
            arrived = session.execute("SHOW default_transaction_read_only").fetchone()
        except BaseException:
            session.close()
            raise
        if not arrived or arrived[0] != "on":
            self._seen["pooled"] = True
            session.pooled = True
        return session

    def _open(self, *, pooled: bool) -> OwnSession:
        session = OwnSession.connect(self.dsn, **self.connect_kwargs(pooled))
        session.target = self
        session.pooled = pooled
        session.envelope = envelope_sql(self.statement_timeout_ms, self.lock_timeout_ms)
        return session

    def reconnect(self, attempts: int = RECONNECT_ATTEMPTS) -> OwnSession:
        """A fresh session after the playbook's own was lost: up to `attempts` connects, waiting
        RECONNECT_BACKOFF_S, then twice as long, between them (a path that reset one flow usually
        lets the next one through). The last attempt's psycopg.OperationalError is raised."""
        wait = RECONNECT_BACKOFF_S
        for attempt in range(1, attempts + 1):
            try:
                return self.connect()
            except psycopg.OperationalError:
                if attempt == attempts:
                    raise
            time.sleep(wait)  # the backoff itself: a path that just reset us may still be resetting
            wait *= 2
        raise AssertionError("unreachable: the loop returns or raises")

    def check(self) -> OwnSession:
        """Connect or explain in one sentence why not (bad input for the CLI).

        A connection the path reset during its start-up (libpq's "server closed the connection
        unexpectedly") is tried once more after a short backoff before it counts as refused: a
        path that resets flows must not decide whether the run happens."""
        try:
            try:
                session = self.connect()
            except psycopg.OperationalError as exc:
                if not reset_during_startup(exc):
                    raise
                time.sleep(RECONNECT_BACKOFF_S)
                session = self.connect()
            if session.pooled:
                self._check_envelope(session)
            return session
        except psycopg.Error as exc:
            message = explain_connect_error(exc, self.redacted)
            refusal = incident_refusal(exc)
            if refusal:
                raise TargetRefused(message, sqlstate=refusal[0], cause=refusal[1]) from None
            raise PlaybookError(message) from None

    def _check_envelope(self, session: OwnSession) -> None:
        """A pooled session must let a transaction span statements: under PgBouncer's statement
        pooling it cannot, so the safety cannot travel and the run stops here, in one sentence."""
        try:
            session.execute("SELECT current_setting('transaction_read_only')").fetchone()
        except psycopg.Error as exc:
            session.close()
            if STATEMENT_POOLING in str(exc).lower():
                raise PlaybookError(
                    f"{self.redacted} is reached through statement pooling, where no transaction "
                    "may span statements, so the playbook's read-only and timeout settings cannot "
                    "travel with its queries (BEGIN READ ONLY, SET LOCAL …): give the server's own "
                    "address, or a PgBouncer database with pool_mode=session or transaction"
                ) from None
            raise


# libpq's words for a start-up the path cut: worth one more try, unlike a refusal or a timeout
STARTUP_RESETS = ("server closed the connection unexpectedly", "connection reset by peer")
# What a command on a lost session raises: libpq's I/O failures and FATALs are OperationalError,
# a command on a session psycopg already knows is closed is InterfaceError.
SESSION_LOSS_ERRORS: tuple[type[psycopg.Error], ...] = (psycopg.OperationalError, psycopg.InterfaceError)


def reset_during_startup(exc: psycopg.Error) -> bool:
    """Whether a failed connect was cut by the path (reset, closed) rather than refused."""
    lowered = " ".join(str(exc).split()).lower()
    return any(marker in lowered for marker in STARTUP_RESETS)


class OwnSession(psycopg.Connection[Any]):
    """A session the playbook opened for itself (`Target.connect`, `Target.check`).

    Two things set it apart from a plain psycopg connection. It knows its `target`, so a phase
    that lost it can open another like it (`reopen`). And its `with` block ends quietly when the
    session was lost: psycopg's exit would send COMMIT (or ROLLBACK) on a session that can run no
    further command (see `cannot_run_commands`) and raise from the block's exit; there is nothing to
    commit on the playbook's read-only autocommit sessions, so it is only closed. An exception
    raised inside the block still propagates.
    """

    target: Target | None = None
    pooled: bool = False  # True: every statement runs in its own read-only envelope (SafeCursor)
    envelope: str = ""  # what opens that envelope (envelope_sql)

    def reopen(self) -> OwnSession:
        """A fresh session like this one (Target.reconnect: a few tries with backoff); this one is
        closed. psycopg.OperationalError when none could be opened."""
        self.close()
        if self.target is None:
            raise psycopg.OperationalError("this session names no target to reopen it from")
        return self.target.reconnect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if not self.closed and cannot_run_commands(self):
            self.close()
            return
        super().__exit__(exc_type, exc_val, exc_tb)


class SafeCursor(psycopg.Cursor[Row]):
    """The cursor of every session the playbook opens. On a pooled session (`OwnSession.pooled`)
    a statement run outside a transaction runs inside its own: BEGIN READ ONLY with SET LOCAL
    statement_timeout and lock_timeout (one simple-protocol message), the statement, COMMIT (or
    ROLLBACK when it failed on a session that can still run one). The pooler keeps the server
    connection for that transaction and SET LOCAL ends with it: nothing leaks to the pool's next
    client. The rows stay readable after the COMMIT (a client-side cursor holds them). Elsewhere,
    and inside a transaction the caller opened, it is psycopg's own cursor."""

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> SafeCursor[Row]:
        conn = self.connection
        if (
            not getattr(conn, "pooled", False)
            or conn.info.transaction_status != IDLE
            or (isinstance(query, str) and query.strip() in BARE_STATEMENTS)
        ):
            super().execute(query, params, prepare=prepare, binary=binary)
            return self
        plain = psycopg.Cursor(conn)
        plain.execute(getattr(conn, "envelope", "") or "BEGIN READ ONLY")
        try:
            super().execute(query, params, prepare=prepare, binary=binary)
        except BaseException:
            if not cannot_run_commands(conn):
                with suppress(psycopg.Error):  # the statement's own error is the one to raise
                    plain.execute("ROLLBACK")
            raise
        plain.execute("COMMIT")
        return self


class OwnSessionLost(PlaybookError):
    """The playbook's own session was lost during a phase and no fresh one could be opened: one
    sentence naming the phase and both errors. A run records it as that phase's failure."""


def lost_during(phase: str, exc: BaseException, at: datetime) -> dict[str, Any]:
    """What a phase records when it lost the playbook's own session at `at`: the phase, the error in
    one line and its SQLSTATE, and (once a fresh session answered) when it resumed. Shaped like the
    sampler's gaps (start, end, error, sqlstate, reconnect_attempts), so it can be counted with them."""
    return {
        "phase": phase,
        "start": at.isoformat(),
        "end": None,
        "error": " ".join(str(exc).split())[:500],
        "sqlstate": getattr(exc, "sqlstate", None),
        "reconnect_attempts": 1,
    }


def session_lost(conn: psycopg.Connection[Any], exc: BaseException) -> bool:
    """Whether `exc`, raised by a command on `conn`, means the session itself is gone (the path
    reset it, the server ended it) rather than the command failing on a session that goes on (a
    statement timeout, a missing privilege): only then is a fresh session worth opening."""
    return isinstance(exc, SESSION_LOSS_ERRORS) and cannot_run_commands(conn)


def reopen_after_loss(conn: psycopg.Connection[Any]) -> OwnSession | None:
    """A fresh session in place of a lost one the playbook opened itself (an OwnSession); None for
    a connection someone else opened (it cannot be reopened here). Raises psycopg.OperationalError
    when the path lets no new session through."""
    return conn.reopen() if isinstance(conn, OwnSession) else None


def cannot_run_commands(conn: psycopg.Connection[Any]) -> bool:
    """True when `conn` can run no further command: closed, broken, or still mid-command.

    The last case is a session the server ended (a FATAL such as pg_terminate_backend's) whose
    socket psycopg stopped reading after the error: libpq still counts the query as running, so
    every later command, the COMMIT of a `with` block's exit included, fails with "another command
    is already in progress". Such a connection is only good for closing.
    """
    status = conn.info.transaction_status
    return conn.closed or conn.broken or status in (ACTIVE, UNKNOWN)


def resolve_target(dsn: str | None = None, **options: Any) -> Target:
    """--dsn, else PLAYBOOK_DSN, else "" which lets libpq read PG* variables and the service file."""
    chosen = dsn if dsn is not None else os.environ.get("PLAYBOOK_DSN", "")
    parse_dsn(chosen)  # malformed input fails here, before anything else happens
    return Target(chosen, **options)


# libpq's connection errors reach psycopg without a SQLSTATE: the server's wording decides.
CONNECT_HINTS = (
    ("password authentication failed", "wrong password"),
    (
        "no password supplied",
        "the server wants a password and none was found (PGPASSWORD, .pgpass or the DSN)",
    ),
    ("does not exist", "unknown database or role"),
    ("is not permitted to log in", "login not allowed"),
    ("no pg_hba.conf entry", "pg_hba.conf has no entry for this host, user and database"),
    ("too many clients", "the server has no free connection slot"),
    ("remaining connection slots are reserved", "the server has no free connection slot"),
    ("too many connections for", "a role or database connection limit is reached"),
    ("the database system is", "the server is starting up, shutting down or in recovery"),
    ("could not translate host name", "unknown host"),
    ("name or service not known", "unknown host"),
    ("connection refused", "nothing listens there"),
    ("timeout expired", "connection timed out"),
)


# Refusals that are the incident, not bad input: (wording, implied SQLSTATE, cause).
INCIDENT_REFUSALS = (
    ("too many clients", "53300", "slots"),
    ("remaining connection slots are reserved", "53300", "slots"),
    ("too many connections for", "53300", "role_limit"),
    ("the database system is", "57P03", "server_down"),
    ("connection refused", None, "server_down"),
    ("timeout expired", None, "network"),
    ("connection timed out", None, "network"),
    ("no route to host", None, "network"),
    ("server closed the connection unexpectedly", None, "network"),
)


def incident_refusal(exc: psycopg.Error) -> tuple[str | None, str] | None:
    """(SQLSTATE, cause) when a failed login is part of an incident rather than bad input."""
    lowered = " ".join(str(exc).split()).lower()
    return next(((state, cause) for marker, state, cause in INCIDENT_REFUSALS if marker in lowered), None)


def explain_connect_error(exc: psycopg.Error, where: str) -> str:
    """One sentence from libpq's message, which already names host, port and cause."""
    text = " ".join(str(exc).split())
    if "FATAL:" in text:
        text = text.split("FATAL:", 1)[1].strip()
    lowered = text.lower()
    hint = next((hint for marker, hint in CONNECT_HINTS if marker in lowered), None)
    if hint == "unknown database or role":
        hint = "unknown database" if 'database "' in lowered else "unknown role"
    return f"cannot connect to {where}: {hint + ' — ' if hint else ''}{text}"

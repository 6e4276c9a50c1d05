"""Where to connect, and how to do it safely.

The DSN comes from --dsn, else PLAYBOOK_DSN, else libpq's own environment (PG* variables, the
service file, .pgpass). Every session the playbook opens is read-only, bounded by a statement and
a lock timeout, and named `pg-session-playbook` so that every analysis can leave it out.
A password never leaves this module in any printable form: `redacted` is what reports show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import conninfo as libpq_conninfo
from psycopg.pq import TransactionStatus

from playbook import APPLICATION_NAME
from playbook.errors import PlaybookError, TargetRefused

ACTIVE, UNKNOWN = TransactionStatus.ACTIVE, TransactionStatus.UNKNOWN
SECRET_KEYS = ("password", "sslpassword")
DEFAULT_STATEMENT_TIMEOUT_MS = 5000
DEFAULT_LOCK_TIMEOUT_MS = 1000
DEFAULT_CONNECT_TIMEOUT_S = 5
OWN_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}


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


@dataclass(frozen=True)
class Target:
    """A database to examine. `dsn` may hold a password; only `redacted` is ever shown."""

    dsn: str
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S

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

    def connect_kwargs(self) -> dict[str, Any]:
        params = parse_dsn(self.dsn)
        user_options = str(params.get("options") or "")
        options = " ".join(
            part
            for part in (user_options, session_options(self.statement_timeout_ms, self.lock_timeout_ms))
            if part
        )
        kwargs: dict[str, Any] = {
            "application_name": APPLICATION_NAME,
            "options": options,
            "autocommit": True,
        }
        # The path may be the patient: keepalives keep our idle session visible to NATs, and
        # tcp_user_timeout bounds a write into a dead path. A DSN's own values win.
        for key, value in OWN_KEEPALIVES.items():
            if key not in params:
                kwargs[key] = value
        if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
            kwargs["connect_timeout"] = self.connect_timeout_s
        return kwargs

    def connect(self) -> psycopg.Connection[Any]:
        """A safe session (read-only, timeouts, named); connection failures are raised as psycopg's."""
        return psycopg.connect(self.dsn, **self.connect_kwargs())

    def check(self) -> psycopg.Connection[Any]:
        """Connect or explain in one sentence why not (bad input for the CLI)."""
        try:
            return self.connect()
        except psycopg.Error as exc:
            message = explain_connect_error(exc, self.redacted)
            refusal = incident_refusal(exc)
            if refusal:
                raise TargetRefused(message, sqlstate=refusal[0], cause=refusal[1]) from None
            raise PlaybookError(message) from None


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

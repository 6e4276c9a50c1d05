"""The app-log reader on recorded samples (one per client stack) and on a log written for real by
a psycopg_pool application whose sessions the lab server ends; and the per-stack pool fixes."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from playbook.collect.applog import COLUMNS, KIND_IDS, KINDS, read_app_logs
from playbook.diagnose.client_fixes import STACKS, stack_fix
from playbook.errors import PlaybookError
from playbook.lab.server import APP_ROLE, LAB_DATABASE, LabServer
from playbook.lab.wait import wait_until
from playbook.probes.keepalive import client_keepalive_settings

DATA = Path(__file__).parent / "data" / "applogs"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# (file, stack, [(kind, ts or None), ...]) in file order: the exact reading of each sample
SAMPLES = [
    (
        "psycopg_pool.log",
        "psycopg",
        [
            ("pool_discarded_broken", "2024-05-01 12:00:05.312"),
            ("admin_shutdown", "2024-05-01 12:00:05.313"),
            ("server_closed_unexpectedly", "2024-05-01 12:01:10.020"),
            ("pool_timeout", "2024-05-01 12:01:40.500"),
            ("idle_session_timeout", "2024-05-01 12:01:59.900"),
            ("connect_refused", "2024-05-01 12:02:30.000"),
        ],
    ),
    (
        "psycopg2_celery.log",
        "psycopg2",
        [
            ("ssl_eof", "2024-05-01 12:00:01.456"),
            ("idle_in_transaction_timeout", "2024-05-01 12:05:00"),
            ("connection_closed", "2024-05-01 12:05:02"),
            ("connection_reset", "2024-05-01 12:06:00"),
            ("too_many_clients", "2024-05-01 12:07:00"),
        ],
    ),
    (
        "sqlalchemy.log",
        "sqlalchemy",
        [
            ("server_closed_unexpectedly", "2024-05-01 12:00:00"),
            ("pool_timeout", "2024-05-01 12:03:00"),
            ("connection_closed", "2024-05-01 12:04:00"),
        ],
    ),
    (
        "asyncpg.log",
        "asyncpg",
        [
            ("server_closed_unexpectedly", "2024-05-01 12:00:00.120"),
            ("connection_closed", "2024-05-01 12:00:30"),
            ("idle_session_timeout", "2024-05-01 12:01:00"),
            ("too_many_clients", "2024-05-01 12:02:00"),
        ],
    ),
    (
        "node_postgres.log",
        "node-postgres",
        [
            ("server_closed_unexpectedly", None),
            ("pool_timeout", "2024-05-01 12:01:00"),  # pino's epoch milliseconds
            ("admin_shutdown", "2024-05-01 12:02:00"),
            ("connection_closed", "2024-05-01 12:03:00"),
            ("connect_refused", "2024-05-01 12:04:00"),
        ],
    ),
    (
        "prisma.log",
        "prisma",
        [
            ("pool_timeout", None),
            ("server_closed_unexpectedly", "2024-05-01 12:00:30"),
            ("connect_failed", "2024-05-01 12:01:00"),
        ],
    ),
    (
        "hikaricp.log",
        "hikaricp",
        [
            ("validation_failed", "2024-05-01 12:00:00.123"),
            ("pool_timeout", "2024-05-01 12:00:30.456"),
            ("connection_lost", "2024-05-01 12:01:00.001"),
            ("connection_reset", "2024-05-01 12:01:00.002"),  # the root cause under "marked as broken"
            ("admin_shutdown", "2024-05-01 12:02:00"),
        ],
    ),
    (
        "pgbouncer.log",
        "pgbouncer",
        [
            ("pgbouncer_server_crashed", "2024-05-01 12:00:05.201"),
            (
                "pgbouncer_client_idle_timeout",
                "2024-05-01 12:01:00",
            ),  # "closing because" + "pooler error": one
            ("pgbouncer_query_wait_timeout", "2024-05-01 12:02:00.500"),
            ("pgbouncer_max_client_conn", "2024-05-01 12:02:30"),
        ],
    ),
]


@pytest.mark.parametrize(("name", "stack", "expected"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_each_stacks_sample_reads_as_recorded(
    name: str, stack: str, expected: list[tuple[str, str | None]]
) -> None:
    ev = read_app_logs([DATA / name])
    assert list(ev.events.columns) == COLUMNS
    got = list(zip(ev.events["kind"], [None if pd.isna(t) else t for t in ev.events["ts"]], strict=True))
    assert got == [(kind, None if ts is None else utc(ts)) for kind, ts in expected]
    assert set(ev.events["stack"]) == {stack}
    assert ev.primary_stack == stack
    assert set(ev.stacks) == {stack}
    assert set(ev.events["kind"]) <= set(KIND_IDS)
    assert (ev.events["file"] == str(DATA / name)).all()
    assert ev.events["text"].str.len().max() <= 300
    assert ev.lines_read == sum(1 for _ in (DATA / name).open())


def test_a_chained_traceback_is_one_event_with_the_wrapping_layer_as_stack() -> None:
    ev = read_app_logs([DATA / "sqlalchemy.log"])
    first = ev.events.iloc[0]
    # the driver's text appears twice (psycopg's exception, then SQLAlchemy's wrapper): one event
    assert (ev.events["kind"] == "server_closed_unexpectedly").sum() == 1
    assert first.stack == "sqlalchemy"
    assert first.line_no == 7
    # the events come from both records' lines, but lines_matched counts every recognised line
    assert ev.lines_matched > len(ev.events)


def test_summary_counts_first_last_and_per_minute_timeline_and_is_json() -> None:
    ev = read_app_logs([DATA / "psycopg_pool.log", DATA / "hikaricp.log"])
    summary = json.loads(json.dumps(ev.summary))
    assert summary["events"] == 11
    assert summary["kinds"]["pool_timeout"] == 2
    assert summary["kinds"]["admin_shutdown"] == 2
    assert summary["stacks"] == {"hikaricp": 6, "psycopg": 6}
    assert summary["event_stacks"] == {"psycopg": 6, "hikaricp": 5}
    assert summary["first_seen"] == "2024-05-01T12:00:00.123000+00:00"
    assert summary["last_seen"] == "2024-05-01T12:02:30+00:00"
    pool = summary["by_kind"]["pool_timeout"]
    assert pool["first_seen"] == "2024-05-01T12:00:30.456000+00:00"
    assert pool["stacks"] == {"psycopg": 1, "hikaricp": 1}
    assert summary["timeline"]["pool_timeout"] == [
        {"minute": "2024-05-01T12:00:00+00:00", "count": 1},
        {"minute": "2024-05-01T12:01:00+00:00", "count": 1},
    ]
    assert summary["timeline"]["admin_shutdown"] == [
        {"minute": "2024-05-01T12:00:00+00:00", "count": 1},
        {"minute": "2024-05-01T12:02:00+00:00", "count": 1},
    ]
    assert summary["lines_read"] == ev.lines_read == 29 + 15


def test_pgbouncer_is_primary_only_when_no_application_stack_shows() -> None:
    both = read_app_logs([DATA / "pgbouncer.log", DATA / "node_postgres.log"])
    assert both.stacks["pgbouncer"] > both.stacks["node-postgres"]
    assert both.primary_stack == "node-postgres"
    assert read_app_logs([DATA / "pgbouncer.log"]).primary_stack == "pgbouncer"


def test_timestamp_formats(tmp_path: Path) -> None:
    msg = "server closed the connection unexpectedly"
    cases = [
        (f"2024-05-01 12:00:00,123 ERROR app: {msg}", "2024-05-01 12:00:00.123"),  # logging's asctime
        (f"2024-05-01T14:00:01.5+02:00 {msg}", "2024-05-01 12:00:01.5"),
        (f"[2024-05-01 07:00:02.250 -0500] {msg}", "2024-05-01 12:00:02.25"),
        (
            "2024-05-01 12:00:03.123 UTC [77] LOG S-0x1: d/u@10.0.0.1:5432 closing because:"
            " server conn crashed?"
            " (age=1s)",
            "2024-05-01 12:00:03.123",
        ),
        (f'{{"ts": 1714564804.5, "msg": "{msg}"}}', "2024-05-01 12:00:04.5"),
        (f'{{"@timestamp": "2024-05-01T12:00:05Z", "message": "{msg}"}}', "2024-05-01 12:00:05"),
        (f"01 May 2024 12:00:06,001 ERROR [main] {msg}", "2024-05-01 12:00:06.001"),  # log4j %d{DATE}
        (
            "May 1, 2024 12:00:07 PM org.postgresql.Driver connect: This connection has been closed.",
            "2024-05-01 12:00:07",
        ),
        (f"2024-05-01T12:00:08.123456789Z {msg}", "2024-05-01 12:00:08.123456"),
        (f"ERROR:app:{msg}", None),  # logging's default format has no time
    ]
    log = tmp_path / "formats.log"
    log.write_text("\n".join(line for line, _ in cases) + "\n")
    ev = read_app_logs([log])
    got = [None if pd.isna(t) else t for t in ev.events["ts"]]
    assert got == [None if ts is None else utc(ts) for _, ts in cases]
    assert str(ev.events["ts"].dt.tz) == "UTC"


def test_syslog_lines_take_the_files_year_and_december_before_a_january_file(tmp_path: Path) -> None:
    log = tmp_path / "syslog"
    log.write_text(
        "Dec 31 23:59:58 web-1 app[311]: psycopg2.OperationalError: server closed the connection"
        " unexpectedly\n"
        "Jan  2 00:00:01 web-1 app[311]: psycopg2.OperationalError: SSL SYSCALL error: EOF detected\n"
    )
    mtime = datetime(2025, 1, 2, 0, 5, tzinfo=timezone.utc).timestamp()
    os.utime(log, (mtime, mtime))
    ev = read_app_logs([log])
    assert list(ev.events["ts"]) == [utc("2024-12-31 23:59:58"), utc("2025-01-02 00:00:01")]
    assert list(ev.events["kind"]) == ["server_closed_unexpectedly", "ssl_eof"]


def test_gzip_invalid_utf8_garbage_and_giant_lines_do_not_stop_it(tmp_path: Path) -> None:
    plain = (DATA / "psycopg_pool.log").read_bytes()
    junk = b"\xff\xfe\x00\x81 not utf-8 \xc3\x28\n" + os.urandom(4096).replace(b"\n", b" ") + b"\n"
    giant = b"x" * (3 << 20) + b" server closed the connection unexpectedly\n"  # cut: the match is past 1 MiB
    body = junk + giant + plain
    gz = tmp_path / "app.log.1"  # no .gz suffix: gzip is recognised by its magic
    gz.write_bytes(gzip.compress(body))
    raw = tmp_path / "app.log"
    raw.write_bytes(body)
    for path in (gz, raw):
        ev = read_app_logs([path])
        assert list(ev.events["kind"]) == list(read_app_logs([DATA / "psycopg_pool.log"]).events["kind"])
        assert ev.events["line_no"].iloc[0] == 2 + 1 + 2  # junk (2 lines) + giant (1) + the sample's line 2
        assert ev.lines_read == 3 + 29


def test_a_truncated_gzip_keeps_what_was_read_and_says_so(tmp_path: Path) -> None:
    data = gzip.compress((DATA / "psycopg2_celery.log").read_bytes() * 50)
    path = tmp_path / "cut.log.gz"
    path.write_bytes(data[: len(data) // 2])
    ev = read_app_logs([path])
    assert len(ev.events) > 0
    assert ev.warnings and "truncated" in ev.warnings[0]
    assert ev.summary["warnings"] == ev.warnings


def test_nothing_recognised_is_an_empty_frame_not_an_error(tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    log.write_text("2024-05-01 12:00:00,000 INFO app: all good\nGET /health 200\n")
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    ev = read_app_logs([log, empty])
    assert ev.events.empty and list(ev.events.columns) == COLUMNS
    assert (ev.lines_read, ev.lines_matched, ev.primary_stack, ev.stacks) == (2, 0, "unknown", {})
    assert ev.summary["first_seen"] is None and ev.summary["kinds"] == {}
    json.dumps(ev.summary)


def test_bad_paths_are_one_sentence_errors(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match=r"^app log .*missing\.log does not exist$"):
        read_app_logs([tmp_path / "missing.log"])
    with pytest.raises(PlaybookError, match=r"is a directory, not a log file$"):
        read_app_logs([tmp_path])
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(PlaybookError, match=r"is not a readable gzip file"):
        read_app_logs([bad_gz])
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        locked = tmp_path / "locked.log"
        locked.write_text("x\n")
        locked.chmod(0)
        with pytest.raises(PlaybookError, match=r"is not readable \(permission denied\)$"):
            read_app_logs([locked])


# One line per wording the reader knows (KINDS entries), as each project writes it.
WORDINGS: list[tuple[str, str | None, str]] = [
    ("idle_session_timeout", None, "FATAL:  terminating connection due to idle-session timeout"),
    (
        "idle_in_transaction_timeout",
        None,
        "FATAL:  terminating connection due to idle-in-transaction timeout",
    ),
    ("transaction_timeout", None, "FATAL:  terminating connection due to transaction timeout"),
    ("admin_shutdown", None, "FATAL:  terminating connection due to administrator command"),
    ("crash_shutdown", None, "FATAL:  terminating connection because of crash of another server process"),
    ("cannot_connect_now", None, "FATAL:  the database system is shutting down"),
    ("statement_timeout", None, "ERROR:  canceling statement due to statement timeout"),
    ("lock_timeout", None, "ERROR:  canceling statement due to lock timeout"),
    ("too_many_clients", None, "FATAL:  sorry, too many clients already"),
    (
        "too_many_clients",
        "prisma",
        "Too many database connections opened: FATAL: sorry, too many clients already",
    ),
    ("auth_failed", None, 'FATAL:  password authentication failed for user "app"'),
    (
        "auth_failed",
        "prisma",
        "Authentication failed against database server at `db`, the provided database credentials for `app`"
        " are not valid.",
    ),
    (
        "pgbouncer_server_crashed",
        "pgbouncer",
        "S-0x5581: app/app@10.0.1.5:5432 closing because: server conn crashed?",
    ),
    ("pgbouncer_query_wait_timeout", "psycopg", "psycopg.errors.ProtocolViolation: query_wait_timeout"),
    ("pgbouncer_query_timeout", None, "Error: query_timeout"),
    (
        "pgbouncer_query_timeout",
        "pgbouncer",
        "S-0x5581: app/app@10.0.1.5:5432 closing because: query timeout (age=31s)",
    ),
    ("pgbouncer_client_idle_timeout", None, "FATAL: client_idle_timeout"),
    (
        "pgbouncer_idle_transaction_timeout",
        "pgbouncer",
        "S-0x5581: app/app@10.0.1.5:5432 closing because: idle transaction timeout (age=61s)",
    ),
    ("pgbouncer_client_login_timeout", None, "FATAL: client_login_timeout (server down)"),
    ("pgbouncer_max_client_conn", None, "FATAL: no more connections allowed (max_client_conn)"),
    ("pgbouncer_server_login_failed", None, 'ERROR: server login failed: FATAL role "app" does not exist'),
    ("pgbouncer_cannot_connect", None, "ERROR: pgbouncer cannot connect to server"),
    (
        "pgbouncer_client_unexpected_eof",
        "pgbouncer",
        "C-0x5581: app/app@10.0.3.7:51234 closing because: client unexpected eof (age=12s)",
    ),
    ("connect_refused", None, 'connection to server at "127.0.0.1", port 5432 failed: Connection refused'),
    ("connect_refused", None, "Error: connect ECONNREFUSED 127.0.0.1:5432"),
    (
        "connect_refused",
        "hikaricp",
        "Connection to localhost:5432 refused. Check that the hostname and port are correct and that the"
        " postmaster is accepting TCP/IP connections.",
    ),
    ("connect_timeout", None, 'connection to server at "10.0.0.5", port 5432 failed: timeout expired'),
    ("connect_timeout", "psycopg", "psycopg.errors.ConnectionTimeout: connection timeout expired"),
    ("connect_timeout", "node-postgres", "Error: Connection terminated due to connection timeout"),
    ("connect_timeout", "prisma", "The database server at `db`:`5432` was reached but timed out."),
    (
        "leak_detected",
        "hikaricp",
        "Connection leak detection triggered for org.postgresql.jdbc.PgConnection@1 on thread main",
    ),
    (
        "validation_failed",
        "hikaricp",
        "HikariPool-1 - Failed to validate connection org.postgresql.jdbc.PgConnection@1",
    ),
    (
        "validation_failed",
        "psycopg",
        "connection failed check: consuming input failed: server closed the connection",
    ),
    (
        "validation_failed",
        "sqlalchemy",
        "Pool pre-ping on connection <connection object at 0x7f; dsn: 'host=db', closed: 0> failed, will"
        " invalidate pool",
    ),
    ("pool_timeout", "psycopg", "psycopg_pool.PoolTimeout: couldn't get a connection after 30.00 sec"),
    (
        "pool_timeout",
        "sqlalchemy",
        "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00",
    ),
    ("pool_timeout", "node-postgres", "Error: timeout exceeded when trying to connect"),
    (
        "pool_timeout",
        "prisma",
        "Timed out fetching a new connection from the connection pool. More info: http://pris.ly",
    ),
    (
        "pool_timeout",
        "hikaricp",
        "HikariPool-1 - Connection is not available, request timed out after 30004ms",
    ),
    ("pool_queue_full", "psycopg", "TooManyRequests: the pool 'pool-1' has already 10 requests waiting"),
    ("ssl_eof", None, "SSL SYSCALL error: EOF detected"),
    ("connection_reset", None, "could not receive data from server: Connection reset by peer"),
    ("broken_pipe", None, "could not send data to server: Broken pipe"),
    ("network_timeout", None, "Caused by: java.net.SocketTimeoutException: Read timed out"),
    ("server_closed_unexpectedly", None, "server closed the connection unexpectedly"),
    ("server_closed_unexpectedly", "node-postgres", "Error: Connection terminated unexpectedly"),
    ("server_closed_unexpectedly", "prisma", "Server has closed the connection."),
    (
        "server_closed_unexpectedly",
        "asyncpg",
        "ConnectionDoesNotExistError: connection was closed in the middle of operation",
    ),
    ("connection_lost", None, "no connection to the server"),
    ("connection_lost", "psycopg", "OperationalError: the connection is lost"),
    ("connection_lost", "hikaricp", "PSQLException: An I/O error occurred while sending to the backend."),
    (
        "connection_lost",
        "sqlalchemy",
        "PendingRollbackError: Can't reconnect until invalid transaction is rolled back.",
    ),
    ("connect_failed", "prisma", "Can't reach database server at `db`:`5432`"),
    ("connect_failed", "hikaricp", "PSQLException: The connection attempt failed."),
    ("connect_failed", "psycopg", "reconnection attempt in pool 'pool 1' failed after 300.0 sec"),
    ("connection_closed", None, "OperationalError: the connection is closed"),
    ("connection_closed", "psycopg2", "psycopg2.InterfaceError: connection already closed"),
    ("connection_closed", "asyncpg", "InterfaceError: cannot perform operation: connection is closed"),
    ("connection_closed", "node-postgres", "Error: Client was closed and is not queryable"),
    ("connection_closed", "hikaricp", "PSQLException: This connection has been closed."),
    ("pool_discarded_broken", "psycopg", "discarding broken connection: <psycopg.Connection [BAD] at 0x7f>"),
    (
        "pool_discarded_broken",
        "hikaricp",
        "HikariPool-1 - Connection PgConnection@1 marked as broken because of SQLSTATE(08006), ErrorCode(0)",
    ),
    (
        "returned_in_transaction",
        "psycopg",
        "rolling back returned connection: <psycopg.Connection [INTRANS] at 0x7f>",
    ),
    ("client_query_timeout", "node-postgres", "Error: Query read timeout"),
    ("client_query_timeout", "prisma", "Operations timed out after `10s`. Context: the query"),
]


def test_every_known_wording_is_found_with_its_stack(tmp_path: Path) -> None:
    covered = {i for i, k in enumerate(KINDS) for _, _, line in WORDINGS if k.pattern.search(line)}
    assert covered == set(range(len(KINDS))), [
        KINDS[i].pattern.pattern for i in set(range(len(KINDS))) - covered
    ]
    for i, (kind, stack, line) in enumerate(WORDINGS):
        path = tmp_path / f"{i}.log"
        path.write_text(f"2024-05-01 12:00:{i % 60:02d}.000 ERROR app: {line}\n")
        ev = read_app_logs([path])
        assert list(ev.events["kind"]) == [kind], line
        assert ev.events["stack"].iloc[0] == (stack or "unknown"), line


# -- a log written for real -----------------------------------------------------------------
@pytest.fixture
def app_logger(tmp_path: Path) -> Iterator[tuple[logging.Logger, Path]]:
    """An application logger and psycopg's pool logger writing to one file, as an app would."""
    path = tmp_path / "app.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger("lab.app"), logging.getLogger("psycopg.pool")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        yield loggers[0], path
    finally:
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
        handler.close()


def _gone(lab: LabServer, pid: int) -> bool:
    with lab.admin() as conn:
        return conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)", [pid]
        ).fetchone() == (True,)


def test_a_psycopg_pool_apps_log_of_a_terminated_session(
    lab: LabServer, app_logger: tuple[logging.Logger, Path]
) -> None:
    log, path = app_logger
    started = pd.Timestamp.now(tz="UTC").floor("s")
    dsn = lab.dsn(APP_ROLE, LAB_DATABASE)
    with ConnectionPool(dsn, min_size=1, max_size=1, open=True, name="lab-app") as pool:
        pool.wait(timeout=10)
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        with lab.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_until(lambda: _gone(lab, pid), timeout=10, what=f"backend {pid} to end")
        with pytest.raises(psycopg.OperationalError):
            try:
                with pool.connection() as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError:
                log.exception("request failed")
                raise
    for handler in log.handlers:
        handler.flush()

    ev = read_app_logs([path])
    kinds = list(ev.events["kind"])
    assert "admin_shutdown" in kinds  # psycopg.errors.AdminShutdown: terminating connection due to ...
    assert ev.primary_stack == "psycopg"
    assert set(ev.events["stack"]) == {"psycopg"}
    admin_row = ev.events[ev.events["kind"] == "admin_shutdown"].iloc[0]
    assert "AdminShutdown" in admin_row.text
    now = pd.Timestamp.now(tz="UTC")
    assert started <= admin_row.ts <= now
    # the pool's own warning about the broken connection it took back
    assert "pool_discarded_broken" in kinds


def test_an_idle_session_timeout_seen_by_a_plain_psycopg_app(
    lab: LabServer, app_logger: tuple[logging.Logger, Path]
) -> None:
    log, path = app_logger
    conn = psycopg.connect(lab.dsn(APP_ROLE, LAB_DATABASE), autocommit=True)
    try:
        pid = conn.info.backend_pid
        # per session, so the shared lab server is left alone; the timer starts once it is idle
        conn.execute("SET idle_session_timeout = '500ms'")
        wait_until(lambda: _gone(lab, pid), timeout=15, what="the idle-session timeout to end the session")
        with pytest.raises(psycopg.OperationalError):
            try:
                conn.execute("SELECT 1")
            except psycopg.OperationalError:
                log.exception("query failed")
                raise
    finally:
        conn.close()
    ev = read_app_logs([path])
    assert list(ev.events["kind"]) == ["idle_session_timeout"]
    assert ev.events.iloc[0].stack == "psycopg"
    assert "IdleSessionTimeout" in ev.events.iloc[0].text


# -- per-stack fixes ------------------------------------------------------------------------
def test_every_stack_gets_its_own_knobs_and_one_retry_sentence() -> None:
    expected = {
        "psycopg": [
            "max_idle=240,",
            "max_lifetime=1800,",
            "check=ConnectionPool.check_connection",
            '"keepalives_idle": 60',
        ],
        "psycopg2": ["keepalives=1 keepalives_idle=60", "pool_recycle=240"],
        "sqlalchemy": ["pool_pre_ping=True", "pool_recycle=240,", '"keepalives_idle": 60'],
        "asyncpg": ["max_inactive_connection_lifetime=240,", "tcp_keepalive_time=60"],
        "node-postgres": [
            "idleTimeoutMillis: 240000,",
            "maxLifetimeSeconds: 1800,",
            "keepAlive: true,",
            "keepAliveInitialDelayMillis: 60000,",
            "pool.on('error'",
        ],
        "prisma": ["max_idle_connection_lifetime=240&max_connection_lifetime=1800", "PrismaPg"],
        "hikaricp": [
            "max-lifetime=1800000",
            "idle-timeout=240000",
            "keepalive-time=60000",
            "tcpKeepAlive=true",
        ],
        "pgbouncer": ["server_idle_timeout = 240", "server_lifetime = 1800", "tcp_keepidle = 60"],
        "unknown": ["keepalives=1 keepalives_idle=60"],
    }
    assert set(expected) == set(STACKS)
    for stack, needles in expected.items():
        text = stack_fix(stack, max_idle_s=240, max_lifetime_s=1800, keepalives_idle_s=60)
        for needle in needles:
            assert needle in text, (stack, needle)
        advice = text.rstrip().split("\n\n")[-1]
        assert advice.count(". ") == 0 and advice.endswith("."), (stack, advice)


def _code(stack: str) -> str:
    """The snippet without the closing retry sentence."""
    text = stack_fix(stack, max_idle_s=240, max_lifetime_s=1800, keepalives_idle_s=60)
    return text.rstrip().rsplit("\n\n", 1)[0]


def test_python_snippets_are_valid_and_psycopgs_builds_a_real_pool(lab: LabServer) -> None:
    for stack in ("psycopg", "psycopg2", "sqlalchemy"):
        compile(_code(stack), stack, "exec")
    code = _code("psycopg")
    scope: dict[str, object] = {"conninfo": lab.dsn(APP_ROLE, LAB_DATABASE)}
    exec(code, scope)
    pool = scope["pool"]
    assert isinstance(pool, ConnectionPool)
    try:
        pool.wait(timeout=10)
        assert (pool.max_idle, pool.max_lifetime) == (240, 1800)
        with pool.connection() as conn:
            assert conn.execute("SHOW tcp_keepalives_idle").fetchone() is not None
            assert conn.pgconn.socket >= 0
            assert client_keepalive_settings(conn)["tcp_keepidle_s"] == 60
    finally:
        pool.close()


def test_limits_are_omitted_when_unknown_and_floors_are_respected() -> None:
    bare = stack_fix("psycopg", max_idle_s=None, max_lifetime_s=None, keepalives_idle_s=None)
    assert "max_idle" not in bare and "max_lifetime" not in bare and "keepalives" not in bare
    assert "check=ConnectionPool.check_connection" in bare
    # SQLAlchemy recycles by age: the shorter of the two limits
    assert "pool_recycle=90," in stack_fix(
        "sqlalchemy", max_idle_s=600, max_lifetime_s=90.7, keepalives_idle_s=None
    )
    # HikariCP floors: maxLifetime 30 s, keepaliveTime 30 s (disabled below), idleTimeout 10 s
    short = stack_fix("hikaricp", max_idle_s=5, max_lifetime_s=10, keepalives_idle_s=20)
    assert "max-lifetime=30000" in short and "idle-timeout=10000" in short
    assert "keepalive-time" not in short.replace("keepaliveTime cannot", "")
    assert "will not go below 30000 ms" in short
    # keepaliveTime must stay below maxLifetime
    assert "keepalive-time=" not in stack_fix(
        "hikaricp", max_idle_s=None, max_lifetime_s=40, keepalives_idle_s=45
    )


@pytest.mark.parametrize(
    ("stack", "kwargs", "message"),
    [
        ("oracle", {}, "unknown client stack 'oracle'"),
        ("psycopg", {"max_idle_s": 0}, "max_idle_s must be a positive number"),
        ("psycopg", {"max_lifetime_s": float("nan")}, "max_lifetime_s must be a positive number"),
        ("psycopg", {"keepalives_idle_s": -5}, "keepalives_idle_s must be a positive number"),
    ],
)
def test_bad_fix_input(stack: str, kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float | None] = {"max_idle_s": None, "max_lifetime_s": None, "keepalives_idle_s": None}
    args.update(kwargs)
    with pytest.raises(PlaybookError, match=message):
        stack_fix(stack, **args)  # type: ignore[arg-type]


def test_a_single_path_string_is_one_file_not_a_sequence_of_characters(tmp_path: Path) -> None:
    shutil.copy(DATA / "prisma.log", tmp_path / "p.log")
    assert read_app_logs(str(tmp_path / "p.log")).primary_stack == "prisma"

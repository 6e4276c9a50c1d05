"""The app-log reader on recorded samples (one per client stack) and on a log written for real by
a psycopg_pool application whose sessions the lab server ends; and the per-stack pool fixes."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import inspect
import json
import logging
import lzma
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import asyncpg.exceptions
import pandas as pd
import psycopg
import psycopg.errors
import psycopg_pool
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from playbook.collect.applog import COLUMNS, KIND_IDS, KINDS, _is_exception_head, read_app_logs
from playbook.diagnose.pool_snippets import STACKS, stack_fix
from playbook.errors import PlaybookError
from playbook.evidence.zones import zone_named
from playbook.lab.server import APP_ROLE, LAB_DATABASE, LabServer
from playbook.lab.wait import wait_until

DATA = Path(__file__).parent / "data" / "applogs"
# The recorded samples were written on hosts whose clock read UTC.
UTC = zone_named("UTC")


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# (file, stack, [(kind, ts or None), ...]) in file order: the exact reading of each sample; None is
# a failure whose record carries no time: unplaced, never an event
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
    ev = read_app_logs([DATA / name], UTC)
    assert list(ev.events.columns) == COLUMNS
    assert ev.events["ts"].notna().all()
    got = list(zip(ev.events["kind"], ev.events["ts"], strict=True))
    assert got == [(kind, utc(ts)) for kind, ts in expected if ts is not None]
    assert [u["kind"] for u in ev.unplaced] == [kind for kind, ts in expected if ts is None]
    assert ev.summary["unplaced"]["count"] == len(ev.unplaced) == ev.summary["undated_events"]
    assert set(ev.events["stack"]) == {stack}
    assert ev.primary_stack == stack
    assert set(ev.stacks) == {stack}
    assert set(ev.events["kind"]) <= set(KIND_IDS)
    assert (ev.events["file"] == str(DATA / name)).all()
    assert ev.events["text"].str.len().max() <= 300
    assert ev.lines_read == sum(1 for _ in (DATA / name).open())


def test_a_chained_traceback_is_one_event_with_the_wrapping_layer_as_stack() -> None:
    ev = read_app_logs([DATA / "sqlalchemy.log"], UTC)
    first = ev.events.iloc[0]
    # the driver's text appears twice (psycopg's exception, then SQLAlchemy's wrapper): one event
    assert (ev.events["kind"] == "server_closed_unexpectedly").sum() == 1
    assert first.stack == "sqlalchemy"
    assert first.line_no == 7
    # the events come from both records' lines, but lines_matched counts every recognised line
    assert ev.lines_matched > len(ev.events)


def test_summary_counts_first_last_and_per_minute_timeline_and_is_json() -> None:
    ev = read_app_logs([DATA / "psycopg_pool.log", DATA / "hikaricp.log"], UTC)
    summary = json.loads(json.dumps(ev.summary))
    # psycopg_pool.log's 6 event times are naive, hikaricp.log's 5 say Z
    assert summary["zone"] == {
        "name": "UTC",
        "source": "flag",
        "description": "UTC (given on the command line)",
        "times_read_in_zone": 6,
    }
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


def test_timestamp_formats_naive_ones_in_the_application_zone(tmp_path: Path) -> None:
    msg = "server closed the connection unexpectedly"
    # (line, UTC expected) with the application's clock in Asia/Kolkata (+05:30, no summer time):
    # naive times move by 5 h 30, printed offsets, UTC and epochs are exact
    cases = [
        (f"2024-05-01 17:30:00,123 ERROR app: {msg}", "2024-05-01 12:00:00.123"),  # logging's asctime
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
        (f'{{"time": "2024-05-01 17:30:05.5", "message": "{msg}"}}', "2024-05-01 12:00:05.5"),
        (f"01 May 2024 17:30:06,001 ERROR [main] {msg}", "2024-05-01 12:00:06.001"),  # log4j %d{DATE}
        (
            "May 1, 2024 5:30:07 PM org.postgresql.Driver connect: This connection has been closed.",
            "2024-05-01 12:00:07",
        ),
        (f"2024-05-01T12:00:08.123456789Z {msg}", "2024-05-01 12:00:08.123456"),
        (f"2024-05-01 17:30:09.654321 {msg}", "2024-05-01 12:00:09.654321"),  # µs survive the zone
        (f"2024-05-01 20:00:10+08 {msg}", "2024-05-01 12:00:10"),  # an hour-only offset touching the time
        (f"2024-05-01 17:30:11 IST {msg}", "2024-05-01 12:00:11"),  # India's IST, read through the zone
        (f"2024-05-01 17:30:12 ERROR {msg}", "2024-05-01 12:00:12"),  # a level, not a zone
        (f"ERROR:app:{msg}", None),  # logging's default format without asctime has no time
    ]
    log = tmp_path / "formats.log"
    log.write_text("\n".join(line for line, _ in cases) + "\n")
    ev = read_app_logs([log], zone_named("Asia/Kolkata"))
    assert list(ev.events["ts"]) == [utc(ts) for _, ts in cases if ts is not None]
    assert str(ev.events["ts"].dt.tz) == "UTC"
    assert [u["line_no"] for u in ev.unplaced] == [i for i, (_, ts) in enumerate(cases, 1) if ts is None]
    assert len(ev.warnings) == 1 and "(unplaced)" in ev.warnings[0]
    assert ev.summary["zone"]["name"] == "Asia/Kolkata"
    assert ev.summary["zone"]["times_read_in_zone"] == 7


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        # China Standard Time prints CST, the letters of US Central Standard Time
        ("Asia/Shanghai", "2024-01-15 00:00:00"),
        ("America/Chicago", "2024-01-15 14:00:00"),
    ],
)
def test_an_ambiguous_abbreviation_is_read_through_the_application_zone(
    tmp_path: Path, zone: str, expected: str
) -> None:
    log = tmp_path / "cst.log"
    log.write_text("2024-01-15 08:00:00 CST ERROR app: psycopg.OperationalError: the connection is lost\n")
    ev = read_app_logs([log], zone_named(zone))
    assert list(ev.events["ts"]) == [utc(expected)]
    assert ev.warnings == []


def test_summer_and_standard_names_pick_their_side_of_the_repeated_hour(tmp_path: Path) -> None:
    # 2024-10-27 01:30 happens twice in London: first as BST (00:30 UTC), then as GMT (01:30 UTC)
    log = tmp_path / "london.log"
    log.write_text(
        "2024-10-27 01:30:00 BST ERROR app: server closed the connection unexpectedly\n"
        "2024-10-27 01:30:00 GMT ERROR app: server closed the connection unexpectedly\n"
    )
    ev = read_app_logs([log], zone_named("Europe/London"))
    assert list(ev.events["ts"]) == [utc("2024-10-27 00:30"), utc("2024-10-27 01:30")]


def test_an_abbreviation_the_zone_never_uses_is_a_warning_never_silently_utc(tmp_path: Path) -> None:
    log = tmp_path / "foreign.log"
    log.write_text(
        "2024-01-15 08:00:00 CST ERROR app: server closed the connection unexpectedly\n"
        "2024-01-15 08:00:00 ERROR app: server closed the connection unexpectedly\n"
    )
    ev = read_app_logs([log], zone_named("Europe/Berlin"))
    # read in the application's zone (CET, +01:00), like the naive line, and said so
    assert list(ev.events["ts"]) == [utc("2024-01-15 07:00"), utc("2024-01-15 07:00")]
    assert ev.warnings == [
        f"time zone 'CST' in app log {log} is not one Europe/Berlin uses: read in Europe/Berlin"
    ]
    assert ev.summary["warnings"] == ev.warnings


def test_without_app_tz_naive_times_are_in_this_machines_zone_and_the_summary_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "America/St_Johns")  # -03:30 in winter, west of UTC
    log = tmp_path / "naive.log"
    log.write_text("2024-01-15 08:30:00,000 ERROR app: server closed the connection unexpectedly\n")
    ev = read_app_logs([log])
    assert list(ev.events["ts"]) == [utc("2024-01-15 12:00")]
    assert ev.zone is not None and ev.zone.name == "America/St_Johns"
    assert ev.summary["zone"]["source"] == "machine"
    assert ev.summary["zone"]["description"] == "America/St_Johns (this machine's zone)"


def test_syslog_lines_take_the_files_year_and_december_before_a_january_file(tmp_path: Path) -> None:
    log = tmp_path / "syslog"
    log.write_text(
        "Dec 31 23:59:58 web-1 app[311]: psycopg2.OperationalError: server closed the connection"
        " unexpectedly\n"
        "Jan  2 00:00:01 web-1 app[311]: psycopg2.OperationalError: SSL SYSCALL error: EOF detected\n"
    )
    mtime = datetime(2025, 1, 2, 0, 5, tzinfo=timezone.utc).timestamp()
    os.utime(log, (mtime, mtime))
    ev = read_app_logs([log], UTC)
    assert list(ev.events["ts"]) == [utc("2024-12-31 23:59:58"), utc("2025-01-02 00:00:01")]
    assert list(ev.events["kind"]) == ["server_closed_unexpectedly", "ssl_eof"]
    # the same file on a clock in Tokyo: the year is still the file's, the times are Tokyo's
    tokyo = read_app_logs([log], zone_named("Asia/Tokyo"))
    assert list(tokyo.events["ts"]) == [utc("2024-12-31 14:59:58"), utc("2025-01-01 15:00:01")]


# bzip2 with its smallest block (100 kB), so half a file holds whole blocks to read
COMPRESSORS = {"gzip": gzip.compress, "bzip2": lambda data: bz2.compress(data, 1), "xz": lzma.compress}


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "xz", "plain"])
def test_compressed_invalid_utf8_garbage_and_giant_lines_do_not_stop_it(
    tmp_path: Path, compression: str
) -> None:
    plain = (DATA / "psycopg_pool.log").read_bytes()
    junk = b"\xff\xfe\x00\x81 not utf-8 \xc3\x28\n" + os.urandom(4096).replace(b"\n", b" ") + b"\n"
    giant = b"x" * (3 << 20) + b" server closed the connection unexpectedly\n"  # cut: the match is past 1 MiB
    body = junk + giant + plain
    path = tmp_path / "app.log.1"  # no suffix: compression is recognised by its magic
    path.write_bytes(COMPRESSORS[compression](body) if compression in COMPRESSORS else body)
    ev = read_app_logs([path], UTC)
    assert list(ev.events["kind"]) == list(read_app_logs([DATA / "psycopg_pool.log"], UTC).events["kind"])
    assert ev.events["line_no"].iloc[0] == 2 + 1 + 2  # junk (2 lines) + giant (1) + the sample's line 2
    assert ev.lines_read == 3 + 29
    assert ev.warnings == []


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "xz"])
def test_a_truncated_compressed_log_keeps_what_was_read_and_says_so(tmp_path: Path, compression: str) -> None:
    data = COMPRESSORS[compression]((DATA / "psycopg2_celery.log").read_bytes() * 300)
    path = tmp_path / "cut.log"
    path.write_bytes(data[: len(data) // 2])
    ev = read_app_logs([path], UTC)
    assert len(ev.events) > 0
    assert len(ev.warnings) == 1
    assert ev.warnings[0].startswith(f"app log {path} is truncated after line ")
    assert ev.warnings[0].endswith("; the rest was not read")
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
    with pytest.raises(PlaybookError, match=r"^app log .* is a directory; pass the log files in it$"):
        read_app_logs([tmp_path])
    for compression, magic in (("gzip", b"\x1f\x8b"), ("bzip2", b"BZh"), ("xz", b"\xfd7zXZ\x00")):
        bad = tmp_path / f"bad.{compression}"
        bad.write_bytes(magic + b"\x00" * 40)
        with pytest.raises(
            PlaybookError, match=rf"^app log .*bad\.{compression} is not a valid {compression} file: "
        ):
            read_app_logs([bad])
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
    # PgBouncer's close reasons relayed to the client as 08P01 (janitor.c: disconnect_client(..., true, ...))
    (
        "pgbouncer_idle_transaction_timeout",
        "psycopg",
        "psycopg.errors.ProtocolViolation: idle transaction timeout",
    ),
    ("pgbouncer_query_timeout", "psycopg", "psycopg.errors.ProtocolViolation: query timeout"),
    ("pgbouncer_query_timeout", None, "error: query timeout"),  # node-postgres prints DatabaseError so
    # transaction pooling under session-level prepared statements (26000 / 42P05)
    (
        "prepared_statement_error",
        "psycopg",
        'psycopg.errors.InvalidSqlStatementName: prepared statement "_pg3_3" does not exist',
    ),
    (
        "prepared_statement_error",
        "asyncpg",
        "asyncpg.exceptions.InvalidSQLStatementNameError: prepared statement "
        '"__asyncpg_stmt_a__" does not exist',
    ),
    ("prepared_statement_error", None, 'ERROR: prepared statement "S_1" already exists'),
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
    ("connect_timeout", "hikaricp", "org.postgresql.util.PSQLException: Connection attempt timed out."),
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
    (
        "validation_failed",
        "sqlalchemy",
        "Disconnection detected on checkout, invalidating individual connection <psycopg.Connection [IDLE]"
        " (host=db database=app) at 0x7f> (reason: OperationalError('sending query failed: another command"
        " is already in progress'))",
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
    (
        "connection_lost",
        "sqlalchemy",
        "PendingRollbackError: Can't reconnect until invalid savepoint transaction is rolled back.  Please"
        " rollback() fully before proceeding",
    ),
    ("connection_lost", "hikaricp", "PSQLException: Database connection failed when writing to copy"),
    ("connect_failed", "prisma", "Can't reach database server at `db`:`5432`"),
    (
        "connect_failed",
        "hikaricp",
        "com.zaxxer.hikari.pool.HikariPool$PoolInitializationException: Failed to initialize pool:"
        ' FATAL: database "app" does not exist',
    ),
    ("connect_failed", "hikaricp", "PSQLException: The connection attempt failed."),
    ("connect_failed", "psycopg", "reconnection attempt in pool 'pool 1' failed after 300.0 sec"),
    ("connection_closed", None, "OperationalError: the connection is closed"),
    ("connection_closed", "psycopg2", "psycopg2.InterfaceError: connection already closed"),
    ("connection_closed", "asyncpg", "InterfaceError: cannot perform operation: connection is closed"),
    ("connection_closed", "node-postgres", "Error: Client was closed and is not queryable"),
    ("connection_closed", "hikaricp", "PSQLException: This connection has been closed."),
    ("connection_closed", "hikaricp", "org.postgresql.util.PSQLException: Connection has been closed."),
    ("pool_discarded_broken", "psycopg", "discarding broken connection: <psycopg.Connection [BAD] at 0x7f>"),
    (
        "pool_discarded_broken",
        "hikaricp",
        "HikariPool-1 - Connection PgConnection@1 marked as broken because of SQLSTATE(08006), ErrorCode(0)",
    ),
    (
        "pool_discarded_broken",
        "hikaricp",
        "HikariPool-1 - Connection PgConnection@1 marked as broken because of an exception closing open"
        " statements during Connection.close()",
    ),
    (
        "pool_discarded_broken",
        "sqlalchemy",
        "Invalidate connection <psycopg.Connection [BAD] at 0x7f> (reason: OperationalError:sending query"
        " failed: another command is already in progress)",
    ),
    (
        "returned_in_transaction",
        "psycopg",
        "rolling back returned connection: <psycopg.Connection [INTRANS] at 0x7f>",
    ),
    ("client_query_timeout", "node-postgres", "Error: Query read timeout"),
    ("client_query_timeout", "prisma", "Operations timed out after `10s`. Context: the query"),
    # Prisma 7's runtime (client-engine-runtime user-facing-error.ts) and driver-adapter kinds
    (
        "too_many_clients",
        "prisma",
        "Too many database connections opened: sorry, too many clients already",
    ),
    ("too_many_clients", "prisma", "    driverAdapterError: DriverAdapterError: TooManyConnections"),
    (
        "auth_failed",
        "prisma",
        "Authentication failed against the database server, the provided database credentials for `app`"
        " are not valid",
    ),
    ("auth_failed", "prisma", "User `app` was denied access on the database `app.public`"),
    ("unknown_database", None, 'FATAL:  database "billing" does not exist'),
    ("unknown_database", "prisma", "Database `billing` does not exist on the database server at `db:5432`."),
    ("pool_timeout", "prisma", "Transaction API error: Unable to start a transaction in the given time."),
    ("network_timeout", "prisma", "Operation has timed out"),
    ("server_closed_unexpectedly", "prisma", "    driverAdapterError: DriverAdapterError: ConnectionClosed"),
    (
        "server_closed_unexpectedly",
        "prisma",
        "prisma:error Error in PostgreSQL connection: Error { kind: Closed, cause: None }",
    ),
    (
        "connect_failed",
        "prisma",
        "Error opening a TLS connection: self-signed certificate in certificate chain",
    ),
    # Prisma's codes where a logger kept the code and not the message
    ("auth_failed", "prisma", '{"code":"P1000","clientVersion":"6.16.2"}'),
    ("connect_failed", "prisma", "  errorCode: 'P1001'"),
    ("connect_timeout", "prisma", "  code: 'P1002',"),
    ("unknown_database", "prisma", "  code: 'P1003',"),
    ("client_query_timeout", "prisma", "  code: 'P1008',"),
    ("auth_failed", "prisma", "  code: 'P1010',"),
    ("connect_failed", "prisma", "  code: 'P1011',"),
    ("server_closed_unexpectedly", "prisma", '{"error_code":"P1017","is_panic":false}'),
    ("pool_timeout", "prisma", "  code: 'P2024',"),
    ("too_many_clients", "prisma", "  code: 'P2037',"),
    # the SQLSTATE beside a translated server message says what the words cannot
    ("admin_shutdown", None, "Raw query failed. Code: `57P01`. Message: `由于管理员命令中断联接`"),
    ("crash_shutdown", None, '{"err":{"type":"DatabaseError","code":"57P02","severity":"ВАЖНО"}}'),
    ("cannot_connect_now", None, "  code: '57P03',"),
    ("idle_session_timeout", None, "  code: '57P05',"),
    ("idle_in_transaction_timeout", None, "  code: '25P03',"),
    ("transaction_timeout", None, "  code: '25P04',"),
    ("too_many_clients", None, "o.h.engine.jdbc.spi.SqlExceptionHelper   : SQL Error: 0, SQLState: 53300"),
    ("auth_failed", None, "  code: '28P01',"),
    ("unknown_database", None, "  code: '3D000',"),
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


# -- the drivers' exception hierarchies ----------------------------------------------------
def _exception_classes(*modules: object) -> list[type[BaseException]]:
    return [
        obj
        for module in modules
        for obj in vars(module).values()
        # the public classes a driver raises (private ones such as psycopg's _WaitTimeout never
        # leave it); Python's own are the suffix rule's
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ != "builtins"
        and not obj.__name__.startswith("_")
    ]


def test_every_class_of_the_installed_drivers_hierarchies_is_an_exception_line() -> None:
    classes = _exception_classes(psycopg.errors, psycopg_pool, asyncpg.exceptions)
    assert len(classes) > 300  # psycopg's SQLSTATE classes and asyncpg's: the check has something to check
    for cls in classes:
        qualified = f"{cls.__module__}.{cls.__qualname__}"
        for head in (
            f"{qualified}: terminating connection",
            f"{cls.__name__}: terminating connection",
            qualified,
        ):
            assert _is_exception_head(head), head
    # a plain sentence or a log level is not an exception line
    for text in ("Starting worker", "ERROR:app:job failed", "INFO something: else", "Done"):
        assert not _is_exception_head(text), text


@pytest.mark.parametrize(
    "exception",
    [
        "psycopg.errors.AdminShutdown: terminating connection due to administrator command",
        "psycopg.errors.QueryCanceled: canceling statement due to statement timeout",
        "psycopg.errors.ProtocolViolation: query_wait_timeout",
        "psycopg.errors.CannotConnectNow: the database system is shutting down",
        "psycopg2.errors.IdleInTransactionSessionTimeout: terminating connection due to idle-in-transaction"
        " timeout",
        "psycopg.errors.TooManyConnections: sorry, too many clients already",
        "psycopg_pool.TooManyRequests: the pool 'p' has already 4 requests waiting",
        "asyncpg.exceptions.TargetServerAttributeNotMatched: None of the hosts match the target attribute"
        " requirement <SessionAttribute.primary: 'primary'>: connection to server at \"db\" failed:"
        " Connection refused",
    ],
)
@pytest.mark.parametrize("traceback", [True, False], ids=["traceback", "exception-only"])
def test_an_exception_line_of_any_driver_class_keeps_its_records_time(
    tmp_path: Path, exception: str, traceback: bool
) -> None:
    # with a traceback (logger.exception) the line after the frames is the exception whatever its
    # name; without one (a handler that logs traceback.format_exception_only) only its name says so
    frames = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/worker.py", line 41, in handle\n'
        '    cur.execute("SELECT 1")\n'
    )
    log = tmp_path / "tb.log"
    log.write_text(
        "2024-05-01 12:00:05,313 ERROR app.worker: job 4711 failed\n"
        f"{frames if traceback else ''}"
        f"{exception}\n"
        "2024-05-01 12:00:06,000 INFO app.worker: job 4712 done\n"
    )
    ev = read_app_logs([log], UTC)
    assert len(ev.events) == 1
    assert ev.events["ts"].iloc[0] == utc("2024-05-01 12:00:05.313")
    assert ev.events["line_no"].iloc[0] == (5 if traceback else 2)


def test_node_postgres_database_error_under_a_dated_line_keeps_its_time(tmp_path: Path) -> None:
    # console.error(err) of pg-protocol's DatabaseError: its name is the message type, "error"
    log = tmp_path / "node.log"
    log.write_text(
        "2024-05-01T12:02:00.000Z ERROR query failed\n"
        "error: terminating connection due to administrator command\n"
        "    at Parser.parseErrorMessage (/app/node_modules/pg-protocol/dist/parser.js:285:98)\n"
        "    at Socket.<anonymous> (/app/node_modules/pg-protocol/dist/index.js:11:42) {\n"
        "  length: 116,\n"
        "  severity: 'FATAL',\n"
        "  code: '57P01',\n"
        "}\n"
        "2024-05-01T12:02:01.000Z INFO next request\n"
    )
    ev = read_app_logs([log], UTC)
    assert list(ev.events["kind"]) == ["admin_shutdown"]
    assert ev.events["ts"].iloc[0] == utc("2024-05-01 12:02:00")
    assert ev.events["stack"].iloc[0] == "node-postgres"


def test_soft_invalidation_and_expired_connections_are_normal_recycling_not_failures(tmp_path: Path) -> None:
    log = tmp_path / "recycle.log"
    log.write_text(
        "2024-05-01 12:00:00,000 INFO sqlalchemy.pool.impl.QueuePool: Soft Invalidate connection"
        " <psycopg.Connection [IDLE] at 0x7f> (reason: pool_recycle)\n"
        "2024-05-01 12:00:01,000 INFO psycopg.pool: discarding expired connection\n"
        "2024-05-01 12:00:02,000 WARNING com.zaxxer.hikari.HikariConfig: HikariPool-1 - maxLifetime is less"
        " than 30000ms, setting to default 1800000ms.\n"
    )
    assert read_app_logs([log], UTC).events.empty


# -- logs written for real ------------------------------------------------------------------
@pytest.fixture
def app_logger(tmp_path: Path) -> Iterator[tuple[logging.Logger, Path]]:
    """An application logger and psycopg's pool logger writing to one file, as an app would:
    logging's default asctime, the machine's local time without a zone."""
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


@pytest.fixture
def machine_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets this process's local zone (TZ), so logging's naive asctime is written in it."""

    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield use
    monkeypatch.undo()
    time.tzset()


def _gone(lab: LabServer, pid: int) -> bool:
    with lab.admin() as conn:
        return conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)", [pid]
        ).fetchone() == (True,)


def _active(lab: LabServer, pid: int) -> bool:
    with lab.admin() as conn:
        return conn.execute(
            "SELECT state = 'active' FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone() == (True,)


def _within(ts: pd.Timestamp, started: pd.Timestamp) -> bool:
    """A time read from the log lies in the test's own window: read in the wrong zone it would
    be hours away."""
    return bool(started <= ts <= pd.Timestamp.now(tz="UTC"))


def test_a_psycopg_pool_apps_log_of_a_terminated_session(
    lab: LabServer, app_logger: tuple[logging.Logger, Path], machine_tz: Callable[[str], None]
) -> None:
    machine_tz("Asia/Kolkata")  # +05:30, east of UTC
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
    assert _within(admin_row.ts, started)
    assert ev.summary["zone"]["description"] == "Asia/Kolkata (this machine's zone)"
    # the pool's own warning about the broken connection it took back
    assert "pool_discarded_broken" in kinds
    assert ev.events["ts"].map(lambda t: _within(t, started)).all()


def test_an_idle_session_timeout_seen_by_a_plain_psycopg_app(
    lab: LabServer, app_logger: tuple[logging.Logger, Path], machine_tz: Callable[[str], None]
) -> None:
    machine_tz("America/St_Johns")  # -03:30 / -02:30, west of UTC with a half hour
    log, path = app_logger
    started = pd.Timestamp.now(tz="UTC").floor("s")
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
    row = ev.events.iloc[0]
    assert row.stack == "psycopg"
    assert "IdleSessionTimeout" in row.text
    assert _within(row.ts, started)


def test_a_statement_timeout_raises_query_canceled_and_keeps_its_time(
    lab: LabServer, app_logger: tuple[logging.Logger, Path], machine_tz: Callable[[str], None]
) -> None:
    machine_tz("Australia/Adelaide")  # +09:30 / +10:30
    log, path = app_logger
    started = pd.Timestamp.now(tz="UTC").floor("s")
    with psycopg.connect(lab.dsn(APP_ROLE, LAB_DATABASE), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '100ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            try:
                conn.execute("SELECT pg_sleep(5)")
            except psycopg.errors.QueryCanceled:
                log.exception("report failed")
                raise
    ev = read_app_logs([path])
    assert list(ev.events["kind"]) == ["statement_timeout"]
    row = ev.events.iloc[0]
    assert row.text.startswith("psycopg.errors.QueryCanceled: ")  # its own line, under the dated one
    assert _within(row.ts, started)


def _asyncpg_args(lab: LabServer) -> dict[str, object]:
    """asyncpg's connect arguments for the lab's application role (asyncpg takes no libpq keyword DSN)."""
    info = conninfo_to_dict(lab.dsn(APP_ROLE, LAB_DATABASE))
    return {
        "host": info["host"],
        "port": int(str(info["port"])),
        "user": info["user"],
        "database": info["dbname"],
        "passfile": info["passfile"],
        "ssl": False,
    }


def test_asyncpgs_timeouts_are_told_apart_by_where_they_were_raised(
    lab: LabServer, app_logger: tuple[logging.Logger, Path], machine_tz: Callable[[str], None]
) -> None:
    machine_tz("America/Los_Angeles")
    log, path = app_logger
    args = _asyncpg_args(lab)
    started = pd.Timestamp.now(tz="UTC").floor("s")
    # a port that accepts and never answers: asyncpg's connect(timeout=...) runs out there
    silent = socket.create_server(("127.0.0.1", 0))

    async def app() -> None:
        pool = await asyncpg.create_pool(**args, min_size=1, max_size=1)
        try:
            async with pool.acquire():
                try:  # the only connection is out: pool.acquire(timeout=...) waits, then gives up
                    async with pool.acquire(timeout=0.2):
                        pass
                except (TimeoutError, asyncio.TimeoutError):  # one class since 3.11
                    log.exception("request failed: no connection from the pool")
            async with pool.acquire() as conn:
                try:  # asyncpg's own query timeout (the timeout argument, command_timeout)
                    await conn.execute("SELECT pg_sleep(5)", timeout=0.2)
                except (TimeoutError, asyncio.TimeoutError):  # one class since 3.11
                    log.exception("report failed")
        finally:
            await pool.close()
        try:
            await asyncpg.connect(**{**args, "port": silent.getsockname()[1]}, timeout=0.3)
        except (TimeoutError, asyncio.TimeoutError):
            log.exception("worker could not connect")

    try:
        asyncio.run(app())
    finally:
        silent.close()
    ev = read_app_logs([path])
    assert list(ev.events["kind"]) == ["pool_timeout", "client_query_timeout", "connect_timeout"]
    assert set(ev.events["stack"]) == {"asyncpg"}
    assert ev.events["ts"].map(lambda t: _within(t, started)).all()


def test_asyncpg_reports_a_query_cut_by_termination_with_the_servers_reason(
    lab: LabServer, app_logger: tuple[logging.Logger, Path], machine_tz: Callable[[str], None]
) -> None:
    machine_tz("Asia/Shanghai")
    log, path = app_logger
    started = pd.Timestamp.now(tz="UTC").floor("s")

    async def app() -> None:
        conn = await asyncpg.connect(**_asyncpg_args(lab))
        pid = conn.get_server_pid()
        query = asyncio.ensure_future(conn.execute("SELECT pg_sleep(30)"))
        await asyncio.to_thread(wait_until, lambda: _active(lab, pid), timeout=10, what="the query to run")
        with lab.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        try:
            await query
        except asyncpg.exceptions.ConnectionDoesNotExistError:
            log.exception("query failed")
        await conn.close()

    asyncio.run(app())
    ev = read_app_logs([path])
    # asyncpg raises ConnectionDoesNotExistError "connection was closed in the middle of operation:
    # terminating connection due to ..." chained to the server's AdminShutdownError: one event, the cause
    assert list(ev.events["kind"]) == ["admin_shutdown"]
    row = ev.events.iloc[0]
    assert row.stack == "asyncpg"
    assert (
        row.text
        == "asyncpg.exceptions.AdminShutdownError: terminating connection due to administrator command"
    )
    assert "ConnectionDoesNotExistError: connection was closed in the middle of operation" in path.read_text()
    assert _within(row.ts, started)


# -- per-stack fixes ------------------------------------------------------------------------
def test_every_stack_gets_its_own_knobs_and_one_retry_sentence() -> None:
    expected = {
        "psycopg": [
            "max_idle=48,",
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


def test_a_burst_of_failures_in_one_millisecond_counts_each(tmp_path: Path) -> None:
    """Waiters timed out together are as many failures (only PgBouncer's doubled lines are one)."""
    path = tmp_path / "app.log"
    path.write_text(
        "".join(
            f"2026-11-20 09:34:16,{ms} ERROR app.web: request failed: psycopg_pool.PoolTimeout: "
            "couldn't get a connection after 3.00 sec\n"
            for ms in ("839", "840", "840")
        )
    )
    assert list(read_app_logs([path]).events["kind"]) == ["pool_timeout"] * 3


# -- records of any shape ------------------------------------------------------------------
# Recorded for real (see tests/data/applogs/README.md for how): Prisma 7.9.1's adapter-pg losing
# its socket and the client's errors printed by Node 20, the Rust engine's (6.x) messages and
# log lines as Node prints them, node-postgres 8.23 against a server that hangs up and a port
# nobody listens on, pgJDBC 42.7.13 and psycopg 3.3 on a lab server that terminated them.
# (file, stack, [(line of the event's text, kind, time or None for unplaced), ...])
SHAPES = [
    (
        "prisma7.log",
        "prisma",
        [
            (5, "server_closed_unexpectedly", "2026-12-07 10:42:58.712"),  # P1017, ConnectionClosed below
            (26, "server_closed_unexpectedly", None),  # Prisma's own `prisma:error`, no time
            (35, "pool_timeout", "2026-12-07 10:42:58.714"),  # P2028 after the caller's source lines
        ],
    ),
    (
        "prisma6.log",
        "prisma",
        [
            (5, "pool_timeout", "2026-12-07 10:42:58.577"),  # P2024
            (17, "server_closed_unexpectedly", "2026-12-07 10:42:58.583"),  # the engine's kind: Closed
            (26, "server_closed_unexpectedly", "2026-12-07 10:42:58.583"),  # P1017 after `→ 412 …`
            (38, "connect_failed", "2026-12-07 10:42:58.585"),  # P1001 over three lines
            (51, "server_closed_unexpectedly", None),
        ],
    ),
    (
        "node_errors.log",
        "node-postgres",
        [
            (1, "server_closed_unexpectedly", "2026-12-07 10:42:58.716"),
            (8, "connect_refused", "2026-12-07 10:42:58.717"),  # with its { errno, code, … } dump
        ],
    ),
    (
        "java_trace.log",
        "hikaricp",  # pgJDBC without HikariCP counts as the JDBC stack
        [
            (5, "admin_shutdown", "2026-12-07 10:42:44.270"),  # under "Caused by:", then "... 1 more"
            (21, "connection_closed", "2026-12-07 10:42:44.295"),
        ],
    ),
    (
        "python_chained.log",
        "psycopg",
        [
            (8, "admin_shutdown", "2026-12-07 10:42:44.321"),  # "The above exception was the direct cause"
            (25, "connection_closed", "2026-12-07 10:42:44.326"),  # … and "During handling of the above"
        ],
    ),
]


@pytest.mark.parametrize(("name", "stack", "expected"), SHAPES, ids=[s[0] for s in SHAPES])
def test_a_record_of_any_shape_is_one_event_at_its_first_lines_time(
    name: str, stack: str, expected: list[tuple[int, str, str | None]]
) -> None:
    ev = read_app_logs([DATA / name], UTC)
    assert list(ev.events.columns) == COLUMNS
    assert ev.events["ts"].notna().all()
    got = list(zip(ev.events["line_no"], ev.events["kind"], ev.events["ts"], strict=True))
    assert got == [(line, kind, utc(ts)) for line, kind, ts in expected if ts is not None]
    assert [(u["line_no"], u["kind"]) for u in ev.unplaced] == [
        (line, kind) for line, kind, ts in expected if ts is None
    ]
    assert set(ev.events["stack"]) | {u["stack"] for u in ev.unplaced} == {stack}
    assert ev.primary_stack == stack


def test_the_first_lines_time_carries_the_record_whatever_its_length(tmp_path: Path) -> None:
    """The P1017 record of prisma6.log spans 20 lines (18 to 37), its message on the 9th; followed
    by a line dated hours later, it keeps its first line's time."""
    lines = (DATA / "prisma6.log").read_text().splitlines()
    record = lines[17:37]  # from its dated first line to the closing brace of its properties
    assert record[0].startswith("2026-12-07T10:42:58.583Z prisma error PrismaClientKnownRequestError")
    log = tmp_path / "app.log"
    log.write_text("\n".join(record) + "\n2026-12-07T18:00:00.000Z info: GET /health 200\n")
    ev = read_app_logs([log], UTC)
    assert list(ev.events["ts"]) == [utc("2026-12-07 10:42:58.583")]
    assert list(ev.events["kind"]) == ["server_closed_unexpectedly"]
    assert ev.unplaced == [] and ev.warnings == []


def test_prismas_pool_timeout_keeps_the_pools_limit_and_timeout_in_its_text(tmp_path: Path) -> None:
    """P2024 prints the pool it timed out on; the event's text keeps both figures, even when the
    message sits too deep in a JSON line for the text's first TEXT_MAX characters."""
    ev = read_app_logs([DATA / "prisma6.log"], UTC)
    text = ev.events.iloc[0]["text"]
    assert "Current connection pool timeout: 10, connection limit: 5" in text
    message = (
        "\nInvalid `prisma.message.findMany()` invocation:\n\n\nTimed out fetching a new connection"
        " from the connection pool. More info: http://pris.ly/d/connection-pool"
        " (Current connection pool timeout: 20, connection limit: 17)"
    )
    line = json.dumps(
        {
            "level": 50,
            "time": 1764931200000,
            "pid": 1,
            "hostname": "evolution-api-6c9d7",
            "req": {"id": 812, "method": "POST", "url": "/message/sendText/instance-42", "remotePort": 40112},
            "err": {"type": "PrismaClientKnownRequestError", "message": message, "code": "P2024"},
        }
    )
    log = tmp_path / "pino.log"
    log.write_text(line + "\n")
    assert line.index("connection limit") > 300
    event = read_app_logs([log], UTC).events.iloc[0]
    assert (event["kind"], event["stack"]) == ("pool_timeout", "prisma")
    assert event["text"].endswith("(connection pool timeout: 20 s, connection limit: 17)")
    assert len(event["text"]) <= 300


def test_a_failure_with_no_time_is_counted_and_listed_as_unplaced_never_nat(tmp_path: Path) -> None:
    """Prisma's own `prisma:error` on a bare stdout has no time: it is no row of the frame, but
    the summary counts and lists it and a warning names its file and line."""
    log = tmp_path / "stdout.log"
    shutil.copy(DATA / "prisma7.log", log)
    ev = read_app_logs([log], UTC)
    assert len(ev.events) == 2 and ev.events["ts"].notna().all()
    assert str(ev.events["ts"].dt.tz) == "UTC"
    unplaced = ev.summary["unplaced"]
    assert unplaced["count"] == 1 and unplaced["kinds"] == {"server_closed_unexpectedly": 1}
    assert unplaced["records"] == [
        {
            "file": str(log),
            "line_no": 26,
            "kind": "server_closed_unexpectedly",
            "stack": "prisma",
            "text": "Server has closed the connection.",
        }
    ]
    assert ev.summary["events"] == 2 and ev.summary["undated_events"] == 1
    assert ev.warnings == [
        f"app log {log}: 1 failure record(s) carry no time and are left off the timeline (unplaced): "
        "server_closed_unexpectedly at line 26; log with a timestamp on each record's first line to "
        "place them"
    ]
    assert ev.summary["warnings"] == ev.warnings
    json.dumps(ev.summary)  # the summary is stored as JSON
    # a log whose every failure is untimed gives an empty frame that is still one of times
    bare = tmp_path / "bare.log"
    bare.write_text("".join(log.read_text().splitlines(keepends=True)[20:26]))
    alone = read_app_logs([bare], UTC)
    assert alone.events.empty and str(alone.events["ts"].dt.tz) == "UTC"
    assert [u["line_no"] for u in alone.unplaced] == [6]


def test_no_figure_fails_on_an_event_without_a_time() -> None:
    """Evidence saved before the reader set untimed failures apart can still hold NaT: the
    timeline and the pooler figure of the timeouts page draw what can be placed."""
    import io

    from playbook import plots, plots_layers
    from playbook.evidence import Evidence

    events = pd.DataFrame(
        {
            "ts": pd.to_datetime([None, "2026-12-07T10:42:58.712Z"], utc=True),
            "kind": ["pool_timeout", "server_closed_unexpectedly"],
            "stack": ["prisma", "prisma"],
            "line_no": [1, 5],
            "file": ["app.log", "app.log"],
            "text": ["Timed out fetching a new connection", "Server has closed the connection."],
        }
    )
    # A PgBouncer log was read (and held nothing): without one there is no pooler figure at all.
    evidence = Evidence(
        manifest={"collected": ["app_log", "pgbouncer_log"]}, frames={"app_log_events": events}
    )
    for figure in (
        plots.incident_timeline(evidence),
        plots.incident_timeline(evidence, categories=("timeout",)),
        plots_layers.pooler_closes(evidence),
    ):
        figure.savefig(io.BytesIO(), format="png")  # drawing converts the times: NaT would raise here
    labels = [t.get_text() for t in plots_layers.pooler_closes(evidence).axes[0].get_yticklabels()]
    assert labels == ["application: server_closed_unexpectedly"]  # the untimed kind has no row


def test_the_timeouts_page_runs_on_a_prisma_log_with_an_unplaced_failure(tmp_path: Path) -> None:
    """The run that used to fail its timeouts page (ConversionError: … NaT) on such a log."""
    from conftest import run_cli

    out = tmp_path / "report"
    result = run_cli(
        "run", "--offline", "--app-log", str(DATA / "prisma7.log"), "--app-tz", "UTC",
        "--notebooks", "timeouts", "--out", str(out),
    )  # fmt: skip
    assert result.returncode in (0, 1, 2), result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [(nb["name"], nb["status"], nb["error"]) for nb in summary["notebooks"]] == [
        ("timeouts", "ok", None)
    ]
    assert any("(unplaced): server_closed_unexpectedly at line 26" in w for w in summary["evidence_warnings"])
    assert "notebooks failed" not in result.stdout
    events = pd.read_parquet(out / "evidence" / "app_log_events.parquet")
    assert len(events) == 2 and events["ts"].notna().all()


# -- what a run says when one of its notebooks failed --------------------------------------
def test_a_failed_notebook_qualifies_the_verdict_line_and_the_exit_code() -> None:
    from playbook.errors import EXIT_CRITICAL, EXIT_ERROR, EXIT_OK, EXIT_WARNING
    from playbook.report.summary import exit_code
    from playbook.report.verdict import verdict_line

    def notebook(name: str, error: str | None = None) -> dict[str, object]:
        return {"name": name, "status": "failed" if error else "ok", "error": error}

    conversion = (
        "ConversionError: Failed to convert value(s) to axis units: 0   NaT\n"
        "Name: ts, dtype: datetime64[us, UTC]"
    )
    names = ("triage", "leaks", "timeouts", "network", "pool_config")
    ran = [notebook(n, conversion if n == "timeouts" else None) for n in names]
    ok = {"status": "ok", "root_causes": [], "evidence_warnings": [], "notebooks": ran}
    assert verdict_line(ok) == (
        "OK: no cause of closed sessions found in this window — 1 of 5 notebooks failed: timeouts "
        "(ConversionError: Failed to convert value(s) to axis units: 0   NaT)"
    )
    cause = {"category": "timeout", "summary": "idle_session_timeout ended 3 pooled sessions"}
    critical = {**ok, "status": "critical", "root_causes": [cause]}
    assert verdict_line(critical).startswith("CRITICAL: most likely timeout — idle_session_timeout")
    assert verdict_line(critical).endswith("— 1 of 5 notebooks failed: timeouts (ConversionError: Failed to"
                                           " convert value(s) to axis units: 0   NaT)")  # fmt: skip
    long = {**ok, "notebooks": [notebook("triage"), notebook("network", "RuntimeError: " + "x" * 200)]}
    assert verdict_line(long).endswith("network (RuntimeError: " + "x" * 65 + "…)")  # 80 characters
    # nothing failed: the line is unqualified; everything failed: the run could not diagnose
    assert verdict_line({**ok, "notebooks": [notebook(n) for n in names]}) == (
        "OK: no cause of closed sessions found in this window"
    )
    every = {"status": "error", "root_causes": [], "notebooks": [notebook(n, conversion) for n in names]}
    assert verdict_line(every) == "ERROR: no notebook could run, so nothing was diagnosed"
    # the exit code: a partial failure is at least a warning, moved by --fail-on like one
    assert exit_code("ok", "warning", failed_notebooks=1) == EXIT_WARNING
    assert exit_code("ok", "critical", failed_notebooks=1) == EXIT_OK
    assert exit_code("ok", "never", failed_notebooks=1) == EXIT_OK
    assert exit_code("critical", "warning", failed_notebooks=1) == EXIT_CRITICAL
    assert exit_code("ok", "warning", failed_notebooks=0) == EXIT_OK
    assert exit_code("error", "warning", failed_notebooks=5) == EXIT_ERROR


def test_a_code_is_prismas_only_beside_its_field(tmp_path: Path) -> None:
    """`code: 'P1017'` names a failure; an HTTP status code or an unknown P-code does not."""
    log = tmp_path / "app.log"
    log.write_text(
        "2026-12-07T10:00:00.000Z info: GET /orders 200 code=200 12ms\n"
        '2026-12-07T10:00:01.000Z warn: payment declined {"code":"P2002","field":"card"}\n'
        '2026-12-07T10:00:02.000Z error: request failed {"code":"P1017","clientVersion":"6.16.2"}\n'
    )
    ev = read_app_logs([log], UTC)
    assert list(zip(ev.events["line_no"], ev.events["kind"], ev.events["stack"], strict=True)) == [
        (3, "server_closed_unexpectedly", "prisma")
    ]


def test_every_word_of_the_drivers_vocabulary_names_its_source_and_a_known_kind() -> None:
    from playbook.vocabulary import drivers

    for entry in (*drivers.WORDINGS, *drivers.PRISMA_CODES, *drivers.STACK_MARKS):
        assert entry.source.strip() and any(c.isdigit() for c in entry.source), entry  # a version
    assert {c.kind for c in drivers.PRISMA_CODES} - {None} <= set(drivers.KIND_IDS)
    assert {w.stack for w in drivers.WORDINGS} - {None} <= set(STACKS)
    assert set(drivers.STACK_PRECEDENCE) == set(STACKS) - {"unknown"}
    assert KIND_IDS == drivers.KIND_IDS

"""Server-log readers against logs a real PostgreSQL wrote while we broke its sessions.

One module-scoped lab server lives through an incident: every cause the classifier knows is
provoked for real (pg_terminate_backend, the idle and transaction timeouts, connection limits,
clients that vanish, a reset socket, a backend crash, a restart), with stderr, jsonlog and
csvlog written side by side. The tests then read the three logs and check what was counted.
Small recorded samples in tests/data/logs/ cover the parsing corners and the bad inputs.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from conftest import run_main_as_nobody
from playbook.collect import log_events
from playbook.collect.serverlog import (
    EVENT_COLUMNS,
    SESSION_COLUMNS,
    ServerLogEvidence,
    compile_prefix,
    read_server_logs,
)
from playbook.errors import PlaybookError
from playbook.lab.server import APP_ROLE, STDERR_PREFIX, LabServer
from playbook.lab.wait import wait_until

DATA = Path(__file__).parent / "data" / "logs"


# -- the incident --------------------------------------------------------------------------------


@dataclass
class Incident:
    """The lab after the incident, and what we did to it (pids of the victims by event)."""

    lab: LabServer
    victims: dict[str, int] = field(default_factory=dict)
    major: int = 0

    @property
    def csvlog(self) -> Path:
        return self.lab.log_dir / "postgresql.csv"

    @property
    def jsonlog(self) -> Path:
        return self.lab.log_dir / "postgresql.json"


def _log_text(lab: LabServer) -> str:
    try:
        return lab.stderr_log.read_text(errors="replace")
    except OSError:
        return ""


def _await_log(lab: LabServer, wording: str, *, count: int = 1, timeout: float = 15) -> None:
    wait_until(
        lambda: _log_text(lab).count(wording) >= count, timeout=timeout, what=f"{wording!r} in the log"
    )


def _child(code: str, dsn: str) -> subprocess.Popen[str]:
    """A separate Python process holding a connection: killing it is a client that vanishes."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_OPEN_TRANSACTION = """
    import sys, time, psycopg
    conn = psycopg.connect(sys.argv[1], application_name="vanishing-worker")
    conn.execute("SELECT 1")  # a transaction is now open (no autocommit)
    print(conn.info.backend_pid, flush=True)
    time.sleep(60)
"""

_RESET_SOCKET = """
    import socket, struct, sys, os, psycopg
    conn = psycopg.connect(sys.argv[1], application_name="reset-socket", autocommit=True)
    print(conn.info.backend_pid, flush=True)
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sys.stdin.readline()
    os._exit(0)  # the kernel closes the socket with linger 0: an RST, as a firewall sends
"""


def _run_incident(lab: LabServer) -> Incident:
    incident = Incident(lab, major=lab.major_version)
    structured = "jsonlog,csvlog" if incident.major >= 15 else "csvlog"
    lab.alter_system({"log_destination": f"stderr,{structured}"})
    wait_until(lambda: incident.csvlog.exists(), timeout=15, what="the csvlog file")
    app_dsn = lab.dsn(APP_ROLE)
    victims = incident.victims

    # pg_terminate_backend, as a reaper job does
    victim = psycopg.connect(app_dsn, application_name="reaped-app", autocommit=True)
    victims["admin_terminate"] = victim.info.backend_pid
    with lab.admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [victims["admin_terminate"]])
    _await_log(lab, "terminating connection due to administrator command")
    victim.close()

    # idle_session_timeout on a pooled connection that sits idle
    idle = psycopg.connect(app_dsn, application_name="idle-pool", options="-c idle_session_timeout=300")
    victims["idle_session_timeout"] = idle.info.backend_pid
    _await_log(lab, "terminating connection due to idle-session timeout")
    idle.close()

    # a transaction left open
    in_tx = psycopg.connect(app_dsn, options="-c idle_in_transaction_session_timeout=300")
    victims["idle_in_transaction_timeout"] = in_tx.info.backend_pid
    in_tx.execute("SELECT 1")
    _await_log(lab, "terminating connection due to idle-in-transaction timeout")
    in_tx.close()

    if incident.major >= 17:
        long_tx = psycopg.connect(app_dsn, options="-c transaction_timeout=300")
        victims["transaction_timeout"] = long_tx.info.backend_pid
        with pytest.raises(psycopg.Error, match="transaction timeout"):
            long_tx.execute("SELECT pg_sleep(5)")
        _await_log(lab, "terminating connection due to transaction timeout")
        long_tx.close()

    # statement_timeout and lock_timeout: errors, the sessions survive
    with psycopg.connect(app_dsn, autocommit=True, options="-c statement_timeout=100") as slow:
        victims["statement_timeout"] = slow.info.backend_pid
        with pytest.raises(psycopg.errors.QueryCanceled):
            slow.execute("SELECT pg_sleep(5)")
    with (
        psycopg.connect(app_dsn) as holder,
        psycopg.connect(app_dsn, options="-c lock_timeout=100") as waiter,
    ):
        holder.execute("CREATE TABLE IF NOT EXISTS locked (id int)")
        holder.commit()
        holder.execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        victims["lock_timeout"] = waiter.info.backend_pid
        with pytest.raises(psycopg.errors.LockNotAvailable):
            waiter.execute("SELECT * FROM locked")
    _await_log(lab, "canceling statement due to lock timeout")

    # per-role and per-database connection limits
    limited_dsn = lab.create_role("limited_app", "CONNECTION LIMIT 1")
    with lab.admin() as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'tiny'").fetchone():
            admin.execute("CREATE DATABASE tiny CONNECTION LIMIT 1")
    with psycopg.connect(limited_dsn), pytest.raises(psycopg.OperationalError, match="too many connections"):
        psycopg.connect(limited_dsn)
    tiny_dsn = lab.dsn(APP_ROLE, "tiny")
    with psycopg.connect(tiny_dsn), pytest.raises(psycopg.OperationalError, match="too many connections"):
        psycopg.connect(tiny_dsn)

    # bad credentials and an unknown database
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(app_dsn + " password=wrong-password passfile=/dev/null")
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(lab.dsn(APP_ROLE, "no_such_db"))

    # a client killed in the middle of a transaction
    child = _child(_OPEN_TRANSACTION, app_dsn)
    assert child.stdout is not None
    victims["unexpected_eof_in_transaction"] = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    _await_log(lab, "unexpected EOF on client connection with an open transaction")

    # a reset socket (SO_LINGER 0), what a firewall or a NAT gateway sends
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_RESET_SOCKET), app_dsn],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    victims["connection_reset"] = int(child.stdout.readline())
    child.stdin.write("go\n")
    child.stdin.close()
    child.wait(timeout=10)
    _await_log(lab, "Connection reset by peer")

    # a health check that opens TCP, sends half a startup packet and leaves
    with socket.create_connection(("127.0.0.1", lab.port), timeout=5) as probe:
        probe.sendall(b"\x00\x00")
    _await_log(lab, "incomplete startup packet")

    # a backend crash: the postmaster ends every session and reinitializes
    doomed = psycopg.connect(app_dsn, application_name="doomed", autocommit=True)
    victims["backend_crash"] = doomed.info.backend_pid
    lab.crash_backend(victims["backend_crash"])
    _await_log(lab, "all server processes terminated; reinitializing")
    _await_log(lab, "database system is ready to accept connections", count=2)
    doomed.close()
    lab.wait_ready()

    # too many clients: a restart lowers max_connections (3 usable beside the 3 reserved slots)
    lab.alter_system({"max_connections": 6, "superuser_reserved_connections": 3})
    lab.down()
    lab.up()
    app_dsn = lab.dsn(APP_ROLE)  # up() may have moved to another port if the old one is in TIME_WAIT
    held: list[psycopg.Connection] = []
    try:
        for _ in range(3):
            held.append(psycopg.connect(app_dsn))
        with pytest.raises(psycopg.OperationalError, match="reserved"):
            psycopg.connect(app_dsn)
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            for _ in range(4):
                held.append(psycopg.connect(lab.dsn("postgres", "postgres")))
        # the restart ends the sessions still open: fast shutdown terminates them (57P01)
        lab.down()
    finally:
        for conn in held:
            conn.close()
    lab.up()
    lab.alter_system({"max_connections": None, "superuser_reserved_connections": None})
    return incident


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Incident]:
    """A lab server of this module's own that went through the whole incident."""
    lab = LabServer(tmp_path_factory.mktemp("incident"))
    lab.up()
    try:
        yield _run_incident(lab)
    finally:
        lab.destroy()


# Events the incident provokes in every log format (transaction_timeout needs 17+).
PROVOKED = {
    "admin_terminate": "server",
    "idle_session_timeout": "timeout",
    "idle_in_transaction_timeout": "timeout",
    "statement_timeout": "timeout",
    "lock_timeout": "timeout",
    "role_conn_limit": "pool_config",
    "database_conn_limit": "pool_config",
    "reserved_slots": "pool_config",
    "too_many_clients": "pool_config",
    "auth_failed": "pool_config",
    "unknown_database": "pool_config",
    "unexpected_eof_in_transaction": "leak",
    "connection_reset": "network",
    "incomplete_startup_packet": "network",
    "backend_crash": "server",
    "terminating_other_processes": "server",
    "crash_reinitializing": "server",
    "crash_recovery": "server",
    "shutdown_requested": "server",
    "shut_down": "server",
    "ready_to_accept": "",
    "server_start": "",
}


def _counts(evidence: ServerLogEvidence) -> dict[str, int]:
    return {str(k): int(v) for k, v in evidence.events["event"].value_counts().items() if v}


def _read(incident: Incident, fmt: str) -> ServerLogEvidence:
    if fmt == "stderr":
        return read_server_logs([incident.lab.stderr_log], prefix=STDERR_PREFIX)
    path = incident.csvlog if fmt == "csvlog" else incident.jsonlog
    return read_server_logs([path], fmt=fmt)


FORMATS_BUILT = ["stderr", "csvlog", "jsonlog"]


@pytest.mark.parametrize("fmt", FORMATS_BUILT)
def test_every_provoked_event_is_counted(incident: Incident, fmt: str) -> None:
    evidence = _read(incident, fmt)
    assert evidence.format == fmt
    counts = _counts(evidence)
    expected = dict(PROVOKED)
    if incident.major >= 17:
        expected["transaction_timeout"] = "timeout"
    missing = sorted(set(expected) - set(counts))
    assert not missing, f"{fmt}: not counted: {missing}; counted: {counts}"
    for event_id, category in expected.items():
        rows = evidence.events[evidence.events["event"] == event_id]
        assert set(rows["category"].astype(str)) == {category}, event_id
    # the restart: two clean starts and the start after the crash
    assert counts["ready_to_accept"] >= 3
    assert counts["shutdown_requested"] >= 2
    # the six sessions still open at the restart were ended by it (57P01), plus the reaped one
    assert counts["admin_terminate"] >= 2
    assert list(evidence.events.columns) == EVENT_COLUMNS
    assert str(evidence.events["ts"].dt.tz) == "UTC"


@pytest.mark.parametrize("fmt", FORMATS_BUILT)
def test_victims_carry_their_pid_user_and_application(incident: Incident, fmt: str) -> None:
    events = _read(incident, fmt).events
    for event_id in (
        "admin_terminate",
        "idle_session_timeout",
        "idle_in_transaction_timeout",
        "lock_timeout",
    ):
        pid = incident.victims[event_id]
        rows = events[(events["event"] == event_id) & (events["pid"] == pid)]
        assert len(rows) == 1, f"{fmt}: {event_id} for pid {pid}"
        row = rows.iloc[0]
        assert row["user"] == APP_ROLE
        assert row["database"] == "lab"
        assert row["level"] == ("ERROR" if event_id == "lock_timeout" else "FATAL")
    reaped = events[
        (events["event"] == "admin_terminate") & (events["pid"] == incident.victims["admin_terminate"])
    ]
    # stderr's prefix has no %a: the application comes from the session's authorized line
    assert reaped.iloc[0]["application"] == "reaped-app"
    assert reaped.iloc[0]["host"] == "127.0.0.1"
    eof = events[events["event"] == "unexpected_eof_in_transaction"]
    assert incident.victims["unexpected_eof_in_transaction"] in set(eof["pid"])
    assert set(eof["application"].astype(str)) == {"vanishing-worker"}


@pytest.mark.parametrize("fmt", ["csvlog", "jsonlog"])
def test_structured_logs_carry_sqlstates(incident: Incident, fmt: str) -> None:
    events = _read(incident, fmt).events
    expected = {
        "admin_terminate": "57P01",
        "idle_session_timeout": "57P05",
        "idle_in_transaction_timeout": "25P03",
        "statement_timeout": "57014",
        "lock_timeout": "55P03",
        "too_many_clients": "53300",
        "reserved_slots": "53300",
        "role_conn_limit": "53300",
        "database_conn_limit": "53300",
        "auth_failed": "28P01",
        "unknown_database": "3D000",
        "unexpected_eof_in_transaction": "08006",
        "connection_reset": "08006",
        "incomplete_startup_packet": "08P01",
    }
    for event_id, code in expected.items():
        codes = set(events.loc[events["event"] == event_id, "sqlstate"].astype(str))
        assert codes == {code}, f"{fmt} {event_id}: {codes}"
        assert code in log_events.CATALOG[event_id].sqlstates


def test_the_three_formats_agree(incident: Incident) -> None:
    # stderr began before the structured logs were switched on: compare from their first line
    start = read_server_logs([incident.csvlog]).events["ts"].min().to_pydatetime()
    counts = {
        "stderr": _counts(read_server_logs([incident.lab.stderr_log], prefix=STDERR_PREFIX, since=start)),
        "csvlog": _counts(read_server_logs([incident.csvlog], since=start)),
        "jsonlog": _counts(read_server_logs([incident.jsonlog], since=start)),
    }
    keys = set(PROVOKED) | {"connection_authorized", "disconnection"}
    for key in keys:
        assert counts["stderr"].get(key) == counts["csvlog"].get(key) == counts["jsonlog"].get(key), key


@pytest.mark.parametrize("fmt", FORMATS_BUILT)
def test_sessions_pair_logins_with_their_end(incident: Incident, fmt: str) -> None:
    evidence = _read(incident, fmt)
    sessions = evidence.sessions
    assert list(sessions.columns) == SESSION_COLUMNS
    by_pid = sessions.set_index("pid")
    reaped = by_pid.loc[[incident.victims["admin_terminate"]]].iloc[-1]
    assert reaped["application"] == "reaped-app"
    assert reaped["user"] == APP_ROLE and reaped["database"] == "lab"
    assert reaped["ended_by"] == "admin_terminate"
    assert reaped["end"] >= reaped["start"]
    idle = by_pid.loc[[incident.victims["idle_session_timeout"]]].iloc[-1]
    assert idle["ended_by"] == "idle_session_timeout"
    assert idle["duration_s"] >= 0.3  # the 300 ms timeout
    # the crashed backend never wrote a disconnection line: its end is unknown
    crashed = by_pid.loc[[incident.victims["backend_crash"]]].iloc[-1]
    assert pd.isna(crashed["end"])
    ended = sessions.dropna(subset=["end"])
    assert (ended["duration_s"] >= 0).all()
    assert len(ended) == _counts(evidence)["disconnection"]


def test_stderr_prefix_and_format_are_detected(incident: Incident) -> None:
    guessed = read_server_logs([incident.lab.stderr_log])
    assert guessed.format == "stderr" and guessed.prefix == STDERR_PREFIX
    assert _counts(guessed) == _counts(_read(incident, "stderr"))
    assert read_server_logs([incident.csvlog]).format == "csvlog"
    assert read_server_logs([incident.jsonlog]).format == "jsonlog"


def test_summary_is_json_and_counts_by_category(incident: Incident) -> None:
    import json

    evidence = _read(incident, "stderr")
    summary = json.loads(json.dumps(evidence.summary))
    assert summary["format"] == "stderr"
    assert summary["categories"]["server"] == sum(
        e["count"] for e in summary["events"].values() if e["category"] == "server"
    )
    assert summary["events"]["idle_session_timeout"]["users"] == {APP_ROLE: 1}
    assert summary["events"]["idle_session_timeout"]["meaning"]
    assert summary["by_user"][APP_ROLE]["events"]["idle_session_timeout"] == 1
    assert summary["by_application"]["reaped-app"]["events"]["admin_terminate"] == 1
    assert summary["timeline"] and all("minute" in m for m in summary["timeline"])
    assert sum(m.get("timeout", 0) for m in summary["timeline"]) == summary["categories"]["timeout"]
    assert summary["sessions"]["count"] == len(evidence.sessions)
    assert summary["sessions"]["ended_by"]["admin_terminate"] >= 1
    assert evidence.bytes_read == incident.lab.stderr_log.stat().st_size
    assert evidence.lines == incident.lab.stderr_log.read_bytes().count(b"\n")


def test_since_until_window_on_real_log(incident: Incident) -> None:
    full = _read(incident, "stderr").events
    crash = full.loc[full["event"] == "backend_crash", "ts"].iloc[0]
    after = read_server_logs([incident.lab.stderr_log], prefix=STDERR_PREFIX, since=crash.to_pydatetime())
    before = read_server_logs([incident.lab.stderr_log], prefix=STDERR_PREFIX, until=crash.to_pydatetime())
    assert after.events["ts"].min() >= crash
    assert before.events["ts"].max() <= crash
    assert "idle_session_timeout" in set(before.events["event"].astype(str))
    assert "idle_session_timeout" not in set(after.events["event"].astype(str))
    assert "too_many_clients" in set(after.events["event"].astype(str))


# -- every PostgreSQL build on the machine -------------------------------------------------------


def test_any_server_build_logs_are_classified(any_server: LabServer) -> None:
    """Debian's 15 (where installed) and the embedded 18 word things alike, in stderr and structured logs."""
    jsonlog = ",jsonlog" if any_server.major_version >= 15 else ""
    any_server.alter_system({"log_destination": f"stderr,csvlog{jsonlog}"})
    csv_path = any_server.log_dir / "postgresql.csv"
    try:
        wait_until(csv_path.exists, timeout=15, what="the csvlog file")
        victim = psycopg.connect(any_server.dsn(APP_ROLE), application_name="any-build", autocommit=True)
        pid = victim.info.backend_pid
        with any_server.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        victim.close()
        idle = psycopg.connect(any_server.dsn(APP_ROLE), options="-c idle_in_transaction_session_timeout=200")
        idle_pid = idle.info.backend_pid
        idle.execute("SELECT 1")
        wait_until(
            lambda: "idle-in-transaction timeout" in csv_path.read_text(errors="replace"),
            timeout=15,
            what="the idle-in-transaction FATAL in the csvlog",
        )
        idle.close()
    finally:
        any_server.alter_system({"log_destination": None})
    for evidence in (
        read_server_logs([any_server.stderr_log], prefix=STDERR_PREFIX),
        read_server_logs([csv_path]),
        read_server_logs([any_server.structured_log]),
    ):
        events = evidence.events
        term = events[(events["event"] == "admin_terminate") & (events["pid"] == pid)]
        assert len(term) == 1, evidence.format
        assert term.iloc[0]["application"] == "any-build"
        tx = events[(events["event"] == "idle_in_transaction_timeout") & (events["pid"] == idle_pid)]
        assert len(tx) == 1, evidence.format


# -- recorded samples --------------------------------------------------------------------------


def test_multiline_entries_belong_to_their_entry() -> None:
    evidence = read_server_logs([DATA / "multiline.log"], prefix=STDERR_PREFIX)
    events = evidence.events
    eof = events[events["event"] == "unexpected_eof_in_transaction"].iloc[0]
    assert eof["pid"] == 4242
    auth = events[events["event"] == "auth_failed"].iloc[0]
    assert auth["detail"].startswith('Connection matched file "/etc/postgresql/16/main/pg_hba.conf" line 122')
    assert events.loc[events["event"] == "admin_terminate", "detail"].tolist() == [""]
    crash = events[events["event"] == "backend_crash"].iloc[0]
    # the failed process's query is a DETAIL of the crash line, with its tab-continued lines
    assert crash["detail"].startswith("Failed process was running: SELECT *\nFROM orders")
    # a statement spanning lines is not mistaken for entries, nor its words for events
    assert "terminating connection due to idle-session timeout" not in set(events["message"])
    assert _counts(evidence) == {
        "connection_received": 1,
        "connection_authorized": 1,
        "disconnection": 1,
        "unexpected_eof_in_transaction": 1,
        "auth_failed": 1,
        "admin_terminate": 1,
        "backend_crash": 1,
        "statement_timeout": 1,
    }
    assert evidence.lines == (DATA / "multiline.log").read_bytes().count(b"\n")


def test_recorded_pg18_formats_agree() -> None:
    """The same 1.5 s of an 18.6 incident as stderr, csvlog and jsonlog (recorded by the lab)."""
    stderr = read_server_logs([DATA / "pg18_incident.log"])
    csvlog = read_server_logs([DATA / "pg18_incident.csv"])
    jsonlog = read_server_logs([DATA / "pg18_incident.json"])
    assert (stderr.format, csvlog.format, jsonlog.format) == ("stderr", "csvlog", "jsonlog")

    # The reload that switched the structured logs on reached stderr and jsonlog, not csvlog yet.
    def core(evidence: ServerLogEvidence) -> dict[str, int]:
        return {k: v for k, v in _counts(evidence).items() if k not in ("config_reload", "parameter_changed")}

    assert core(stderr) == core(csvlog) == core(jsonlog)
    assert "config_reload" not in _counts(csvlog) and _counts(jsonlog)["config_reload"] == 1
    assert {"admin_terminate", "idle_session_timeout", "idle_in_transaction_timeout", "transaction_timeout",
            "statement_timeout", "lock_timeout", "role_conn_limit", "database_conn_limit",
            "auth_failed"} <= set(_counts(stderr))  # fmt: skip
    # csvlog and jsonlog carry the DETAIL in a field, stderr on a line of its own
    for evidence in (stderr, csvlog, jsonlog):
        auth = evidence.events[evidence.events["event"] == "auth_failed"].iloc[0]
        assert auth["detail"].startswith('Connection matched file "/var/lib/postgresql/18/main/pg_hba.conf"')
    for evidence in (stderr, csvlog, jsonlog):
        sessions = evidence.sessions
        assert sessions["ended_by"].tolist().count("idle_session_timeout") == 1
        assert set(sessions["application"]) >= {"reaped-app", "idle-pool"}
    # the stray csvlog record PostgreSQL wrote into the stderr file is skipped, not misread
    assert stderr.lines > stderr.summary["entries"]


def test_csvlog_fields_with_newlines(tmp_path: Path) -> None:
    head = (
        '2025-03-01 10:00:0{}.000 UTC,"app","shop",11,"10.0.0.1:5000",65e1.b,{},"idle",2025-03-01 10:00 UTC,'
    )
    tail = ',,,"report ""daily""","client backend",,0\n'
    path = tmp_path / "postgresql.csv"
    path.write_text(
        head.format(0, 1)
        + '3/4,0,ERROR,57014,"canceling statement due to statement timeout",,,,,,"SELECT 1,\n  pg_sleep(9)"'
        + tail
        + head.format(1, 2)
        + '3/0,0,FATAL,57P05,"terminating connection due to idle-session timeout",,,,,,'
        + tail
    )
    events = read_server_logs([path]).events
    assert events["event"].astype(str).tolist() == ["statement_timeout", "idle_session_timeout"]
    assert set(events["application"]) == {'report "daily"'}
    assert set(events["host"]) == {"10.0.0.1"}


def test_gzip_and_plain_read_the_same(tmp_path: Path) -> None:
    plain = DATA / "multiline.log"
    packed = tmp_path / "postgresql.log.1.gz"
    with gzip.open(packed, "wb") as out:
        out.write(plain.read_bytes())
    a = read_server_logs([plain], prefix=STDERR_PREFIX)
    b = read_server_logs([packed], prefix=STDERR_PREFIX)
    assert _counts(a) == _counts(b)
    assert b.bytes_read == plain.stat().st_size
    pd.testing.assert_frame_equal(a.events, b.events)


def test_rotated_set_is_read_in_time_order(tmp_path: Path) -> None:
    # logrotate's numbering: .2.gz is the oldest, the bare name the newest; pass them shuffled
    lines = (DATA / "rotated.log").read_bytes().splitlines(keepends=True)
    (tmp_path / "postgresql.log").write_bytes(b"".join(lines[8:]))
    (tmp_path / "postgresql.log.1").write_bytes(b"".join(lines[4:8]))
    with gzip.open(tmp_path / "postgresql.log.2.gz", "wb") as out:
        out.write(b"".join(lines[:4]))
    paths = [tmp_path / "postgresql.log", tmp_path / "postgresql.log.2.gz", tmp_path / "postgresql.log.1"]
    evidence = read_server_logs(paths, prefix=STDERR_PREFIX)
    assert evidence.files == [str(paths[1]), str(paths[2]), str(paths[0])]
    assert evidence.events["ts"].is_monotonic_increasing
    whole = read_server_logs([DATA / "rotated.log"], prefix=STDERR_PREFIX)
    pd.testing.assert_frame_equal(evidence.events, whole.events)
    # a session that spans two files is still one session
    spanning = evidence.sessions[evidence.sessions["pid"] == 3001].iloc[0]
    assert spanning["application"] == "spanning-app" and spanning["ended_by"] == "idle_session_timeout"


def test_since_until_on_sample() -> None:
    path = DATA / "rotated.log"
    since = datetime(2025, 3, 1, 10, 1, tzinfo=timezone.utc)
    until = datetime(2025, 3, 1, 10, 3, tzinfo=timezone.utc)
    evidence = read_server_logs([path], prefix=STDERR_PREFIX, since=since, until=until)
    assert evidence.events["ts"].min() >= pd.Timestamp(since)
    assert evidence.events["ts"].max() <= pd.Timestamp(until)
    assert len(evidence.events) == 4
    # naive datetimes are UTC
    naive = read_server_logs([path], prefix=STDERR_PREFIX, since=since.replace(tzinfo=None))
    assert naive.events["ts"].min() >= pd.Timestamp(since)


def test_invalid_utf8_never_stops_the_reader() -> None:
    evidence = read_server_logs([DATA / "invalid_utf8.log"], prefix=STDERR_PREFIX)
    counts = _counts(evidence)
    assert counts["connection_authorized"] == 2
    assert counts["idle_session_timeout"] == 1
    apps = set(evidence.events["application"].astype(str))
    assert "caf\ufffd-app" in apps  # the latin-1 byte is replaced, the rest is kept


def test_prefix_without_pid_still_gives_sessions(tmp_path: Path) -> None:
    # the same lines with the prefix '%m ' only: no pid to pair logins with their end
    path = tmp_path / "no_pid.log"
    path.write_bytes(re.sub(rb" \[\d+\] [^ ]+@[^ ]+ | \[\d+\] ", b" ", (DATA / "rotated.log").read_bytes()))
    evidence = read_server_logs([path], prefix="%m ")
    sessions = evidence.sessions
    assert len(sessions) == 2  # from the two disconnection lines alone
    assert set(sessions["application"]) == {""}
    assert sorted(sessions["duration_s"]) == [60.0, 239.991]
    assert set(sessions["user"]) == {"app"}


def test_epoch_prefix_and_sqlstate_escape(tmp_path: Path) -> None:
    path = tmp_path / "epoch.log"
    path.write_text(
        "1740823200.500 [77] 00000 LOG:  connection authorized: user=app database=shop application_name=x\n"
        "1740823201.250 [77] 57P05 FATAL:  Verbindung wegen Leerlauf beendet\n"  # a translated wording
        "1740823201.251 [77] 00000 LOG:  disconnection: session time: 0:00:00.751 user=app database=shop"
        " host=h\n"
    )
    events = read_server_logs([path], prefix="%n [%p] %e ").events
    timeout = events[events["event"] == "idle_session_timeout"].iloc[0]  # by SQLSTATE alone
    assert timeout["ts"] == pd.Timestamp("2025-03-01 10:00:01.250", tz="UTC")
    assert timeout["sqlstate"] == "57P05" and timeout["application"] == "x"


def test_time_zones_are_converted_to_utc() -> None:
    evidence = read_server_logs(
        [DATA / "cet_prefix.log"], prefix="%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h "
    )
    events = evidence.events
    term = events[events["event"] == "admin_terminate"].iloc[0]
    assert term["ts"] == pd.Timestamp("2025-01-15 09:00:05", tz="UTC")  # 10:00:05 CET
    assert term["application"] == "billing api" and term["host"] == "10.1.2.3"


@pytest.mark.parametrize(
    ("prefix", "line", "fields"),
    [
        ("%m [%p] %q%u@%d ", b"2025-01-01 00:00:00.123 UTC [42] bob@shop LOG:  hi", ("42", "bob", "shop")),
        ("%m [%p] %q%u@%d ", b"2025-01-01 00:00:00.123 UTC [42] LOG:  hi", ("42", None, None)),
        (
            "%t:%r:%u@%d:[%p]:",
            b"2025-01-01 00:00:00 UTC:10.0.0.9(5432):bob@shop:[42]:LOG:  hi",
            ("42", "bob", "shop"),
        ),
        ("%n [%-6p] %e ", b"1735689600.123 [42    ] 57P01 FATAL:  hi", ("42", None, None)),
        (
            "%m %c %x %v %i %b %l %Q %% ",
            b"2025-01-01 00:00:00.1 UTC 6b0.1a 0 3/7 idle client backend 9 -1 % LOG:  hi",
            (None, None, None),
        ),
    ],
)
def test_prefix_escapes(prefix: str, line: bytes, fields: tuple[str | None, str | None, str | None]) -> None:
    compiled = compile_prefix(prefix)
    rows = compiled.regex.findall(b"\n" + line)
    assert len(rows) == 1, compiled.regex.pattern
    row = dict(zip(compiled.fields, rows[0], strict=True))
    assert row["level"] in (b"LOG", b"FATAL") and row["message"] == b"hi"
    for name, want in zip(("pid", "user", "database"), fields, strict=True):
        if want is not None:
            assert row[name] == want.encode()


# -- bad input: one clear sentence ----------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match=r"server log .*nope\.log does not exist$"):
        read_server_logs([tmp_path / "nope.log"])


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="is a directory"):
        read_server_logs([tmp_path])


def test_unreadable_file(tmp_path: Path) -> None:
    """A real permission refusal: as root, the command runs in a child that dropped to nobody."""
    path = tmp_path / "secret.log"
    path.write_text("x\n")
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(PlaybookError, match="is not readable"):
            read_server_logs([path])
        return
    for folder in [tmp_path, *tmp_path.parents]:
        folder.chmod(folder.stat().st_mode | 0o001)  # nobody may reach the file, not read it
    code, stderr = run_main_as_nobody(["logs", str(path)])
    assert code == 3
    assert stderr.strip() == f"playbook: server log {path} is not readable (permission denied)"


def test_binary_garbage() -> None:
    with pytest.raises(PlaybookError, match=r"garbage\.bin is binary data, not a PostgreSQL log"):
        read_server_logs([DATA / "garbage.bin"])


def test_broken_gzip(tmp_path: Path) -> None:
    path = tmp_path / "postgresql.log.gz"
    path.write_bytes(gzip.compress((DATA / "multiline.log").read_bytes())[:-40] + b"\x00" * 8)
    with pytest.raises(PlaybookError, match="is not a valid gzip file"):
        read_server_logs([path], prefix=STDERR_PREFIX)


def test_unknown_format() -> None:
    with pytest.raises(PlaybookError, match="unknown log format 'syslog'"):
        read_server_logs([DATA / "multiline.log"], fmt="syslog")


def test_unrecognisable_text(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("INFO 12:00 started the app\nWARN 12:01 slow request\n")
    with pytest.raises(PlaybookError, match="could not recognise the log_line_prefix"):
        read_server_logs([path])


def test_prefix_that_matches_nothing() -> None:
    with pytest.raises(
        PlaybookError, match=r"the log_line_prefix '%t <%u> ' matches no line of .*multiline\.log"
    ):
        read_server_logs([DATA / "multiline.log"], prefix="%t <%u> ")


def test_unknown_prefix_escape() -> None:
    with pytest.raises(PlaybookError, match="unknown escape %y"):
        read_server_logs([DATA / "multiline.log"], prefix="%m %y ")


def test_empty_file_is_empty_evidence(tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    evidence = read_server_logs([path])
    assert evidence.events.empty and evidence.sessions.empty
    assert evidence.summary["sessions"]["count"] == 0


# -- the catalog ---------------------------------------------------------------------------------


def test_catalog_ids_categories_and_meanings() -> None:
    for event_id, kind in log_events.CATALOG.items():
        assert event_id == kind.id and kind.id.islower() and " " not in kind.id
        assert kind.category in ("", *log_events.CATEGORIES)
        assert kind.meaning.endswith(".") and "\n" not in kind.meaning


@pytest.mark.parametrize(
    ("message", "level", "sqlstate", "expected"),
    [
        ("terminating connection due to administrator command", "FATAL", "57P01", "admin_terminate"),
        ("terminating connection due to administrator command", "ERROR", "P0001", None),  # a user's RAISE
        ("Verbindung wird abgebrochen (Befehl des Administrators)", "FATAL", "57P01", "admin_terminate"),
        ("unbekannt", "FATAL", "53300", "connection_limit"),
        ('database "x" does not exist', "ERROR", "3D000", None),  # DROP DATABASE x, not a login
        ('database "x" does not exist', "FATAL", "3D000", "unknown_database"),
        ("could not receive data from client: Connection timed out", "LOG", "08006", "client_recv_timeout"),
        ("could not send data to client: Broken pipe", "LOG", None, "broken_pipe"),
        ("server process (PID 12) was terminated by signal 11: Segmentation fault", "LOG", None,
         "backend_crash"),
        ('background worker "logical replication launcher" (PID 9) exited with exit code 1', "LOG", None,
         None),
        ("remaining connection slots are reserved for non-replication superuser connections", "FATAL", None,
         "reserved_slots"),
        ("anything at all", "PANIC", None, "panic"),
    ],
)  # fmt: skip
def test_classify(message: str, level: str, sqlstate: str | None, expected: str | None) -> None:
    kind = log_events.classify(message, level, sqlstate)
    assert (kind.id if kind else None) == expected


def test_session_seconds() -> None:
    assert (
        log_events.session_seconds("disconnection: session time: 1:02:03.456 user=a database=b") == 3723.456
    )
    assert log_events.session_seconds("connection received: host=x") is None


@pytest.mark.skipif(shutil.which("pgbadger") is None, reason="pgbadger not installed")
def test_bench_generator_output_is_read_by_both(tmp_path: Path) -> None:
    """The benchmark's log is valid for us (and pgBadger parses it without complaint)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    try:
        import log_throughput
    finally:
        sys.path.pop(0)
    path = tmp_path / "bench.log"
    log_throughput.generate(path, 0.3)
    evidence = read_server_logs([path], prefix=log_throughput.PREFIX)
    counts = _counts(evidence)
    assert counts["disconnection"] > 100
    assert len(evidence.sessions) == counts["connection_authorized"]
    done = subprocess.run(
        ["pgbadger", "-j", "1", "-f", "stderr", "--prefix", log_throughput.PREFIX, "-q", "-o",
         str(tmp_path / "out.json"), "--pid-dir", str(tmp_path), str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_log_copied_through_windows_reads_as_the_original(tmp_path: Path) -> None:
    """CRLF line ends: no name or message keeps a "\\r", and the results are the original's."""
    original = DATA / "pg18_incident.log"
    crlf = tmp_path / "crlf.log"
    crlf.write_bytes(original.read_bytes().replace(b"\n", b"\r\n"))
    plain, copied = read_server_logs([original]), read_server_logs([crlf])
    pd.testing.assert_frame_equal(plain.events.drop(columns=["file"], errors="ignore"),
                                  copied.events.drop(columns=["file"], errors="ignore"))  # fmt: skip
    for column in ("user", "database", "application", "message"):
        if column in copied.events:
            assert not copied.events[column].astype(str).str.contains("\r").any(), column
    for key in ("events", "by_user", "by_database", "by_application", "by_host", "sessions", "lines"):
        assert copied.summary[key] == plain.summary[key], key


def test_a_pid_too_long_to_be_one_does_not_end_the_read(tmp_path: Path) -> None:
    """A run of digits where %p goes that no process id can be (it would overflow int64) is read
    as no pid: before, casting it aborted the whole read with "could not be read"."""
    path = tmp_path / "postgresql.log"
    path.write_text(
        "2025-03-01 10:00:00.000 UTC [11] app@shop FATAL:  terminating connection due to "
        "administrator command\n"
        "2025-03-01 10:00:01.000 UTC [99999999999999999999] app@shop FATAL:  terminating connection due to "
        "administrator command\n"
    )
    evidence = read_server_logs([path], prefix="%m [%p] %q%u@%d ")
    assert evidence.events["pid"].tolist() == [11, 0]
    assert evidence.events["event"].astype(str).tolist() == ["admin_terminate", "admin_terminate"]

"""Network probes against the real lab server (and the lab's chaos proxy for a silent drop)."""

from __future__ import annotations

import json
import math

import pandas as pd
import psycopg
import pytest

from conftest import refused_port
from playbook import APPLICATION_NAME
from playbook.errors import PlaybookError
from playbook.lab.proxy import ChaosProxy
from playbook.lab.server import LabServer
from playbook.lab.wait import wait_until
from playbook.probes.keepalive import SURVIVAL_COLUMNS, client_keepalive_settings, idle_survival
from playbook.probes.latency import (
    CONNECT_COLUMNS,
    RTT_COLUMNS,
    latency_summary,
    measure_connects,
    measure_round_trips,
    probe_connect_kwargs,
)


def closed_port_dsn() -> str:
    return f"host=127.0.0.1 port={refused_port()} user=nobody dbname=nothing sslmode=disable"


def test_connects_are_timed_one_after_another(lab: LabServer) -> None:
    frame = measure_connects(lab.dsn(), count=4, timeout_s=5)
    assert list(frame.columns) == CONNECT_COLUMNS
    assert list(frame["attempt"]) == [1, 2, 3, 4]
    assert frame["ok"].all()
    assert (frame["connect_ms"] > 0).all() and (frame["connect_ms"] < 5000).all()
    assert frame["error"].isna().all() and frame["sqlstate"].isna().all()
    assert str(frame["ts"].dt.tz) == "UTC" and frame["ts"].is_monotonic_increasing
    summary = latency_summary(frame)
    assert summary["samples"] == summary["ok"] == 4 and summary["failures"] == 0
    assert summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    json.dumps(summary)


def test_probe_sessions_are_named_read_only_and_bounded(lab: LabServer) -> None:
    kwargs = probe_connect_kwargs(lab.dsn() + " options='-c work_mem=8MB'", timeout_s=3)
    with psycopg.connect(lab.dsn() + " options='-c work_mem=8MB'", **kwargs) as conn:
        row = conn.execute(
            "SELECT current_setting('application_name'), current_setting('default_transaction_read_only'),"
            " current_setting('statement_timeout'), current_setting('work_mem')"
        ).fetchone()
    assert row == (APPLICATION_NAME, "on", "5s", "8MB")  # the user's own options are kept
    assert kwargs["connect_timeout"] == 3 and kwargs["tcp_user_timeout"] == 3000


def test_a_closed_port_gives_failed_rows_with_libpqs_text(lab: LabServer) -> None:
    frame = measure_connects(closed_port_dsn(), count=3, timeout_s=2)
    assert len(frame) == 3 and not frame["ok"].any()
    assert frame["error"].str.contains("Connection refused").all()
    assert frame["connect_ms"].notna().all()
    summary = latency_summary(frame)
    assert summary["failures"] == 3 and summary["failure_rate"] == 1.0
    assert summary["p50_ms"] is None
    assert len(summary["failure_texts"]) == 1 and summary["failure_texts"][0]["count"] == 3
    assert "Connection refused" in summary["failure_texts"][0]["error"]


def test_round_trips_on_an_open_connection(lab: LabServer) -> None:
    with psycopg.connect(lab.dsn()) as conn:  # not autocommit: the probe must not leave a transaction open
        frame = measure_round_trips(conn, count=30)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert list(frame.columns) == RTT_COLUMNS
    assert len(frame) == 30 and frame["error"].isna().all()
    assert (frame["rtt_ms"] > 0).all()
    summary = latency_summary(frame)
    assert summary["metric"] == "rtt_ms" and summary["ok"] == 30
    assert summary["min_ms"] <= summary["p50_ms"] <= summary["max_ms"]


def test_round_trips_end_with_an_error_row_when_the_session_is_killed(lab: LabServer) -> None:
    with psycopg.connect(lab.dsn(), autocommit=True) as conn:
        pid = conn.info.backend_pid
        with lab.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            wait_until(
                lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone(),
                timeout=10,
                what=f"backend {pid} to end",
            )
        frame = measure_round_trips(conn, count=10)
    assert len(frame) == 1
    assert math.isnan(frame["rtt_ms"].iloc[0])
    assert "terminating connection due to administrator command" in frame["error"].iloc[0]
    assert latency_summary(frame)["failures"] == 1


def test_round_trips_close_a_connection_left_mid_command(lab: LabServer) -> None:
    # The state psycopg can leave after a FATAL that reached the client before the server closed
    # the socket: libpq still counts a command as running and refuses every other one, the COMMIT
    # of the `with` exit included. A query sent by hand and never read makes the same state.
    with psycopg.connect(lab.dsn(), autocommit=True) as conn:
        conn.pgconn.send_query(b"SELECT pg_sleep(30)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE
        frame = measure_round_trips(conn, count=5)
        assert conn.closed
    assert len(frame) == 1
    assert "another command is already in progress" in frame["error"].iloc[0]


def test_keepalive_settings_are_read_back_from_the_socket(lab: LabServer) -> None:
    dsn = (
        lab.dsn()
        + " keepalives=1 keepalives_idle=7 keepalives_interval=3 keepalives_count=4 tcp_user_timeout=9000"
    )
    with psycopg.connect(dsn) as conn:
        got = client_keepalive_settings(conn)
        # the probe used a duplicate of libpq's fd: the connection still works
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert got["family"] == "AF_INET"
    assert got["so_keepalive"] is True
    assert (got["tcp_keepidle_s"], got["tcp_keepintvl_s"], got["tcp_keepcnt"]) == (7, 3, 4)
    assert got["tcp_user_timeout_ms"] == 9000
    assert got["dead_peer_after_s"] == 7 + 3 * 4
    assert set(got["os_defaults"]) == {"tcp_keepalive_time", "tcp_keepalive_intvl", "tcp_keepalive_probes"}
    json.dumps(got)


def test_without_keepalive_parameters_the_os_defaults_apply(lab: LabServer) -> None:
    with psycopg.connect(lab.dsn()) as conn:
        got = client_keepalive_settings(conn)
    defaults = got["os_defaults"]
    if defaults["tcp_keepalive_time"] is None:
        pytest.skip("/proc/sys/net/ipv4/tcp_keepalive_time is not readable here")
    # libpq turns SO_KEEPALIVE on by default but leaves the timers to the kernel
    assert got["so_keepalive"] is True
    assert got["tcp_keepidle_s"] == defaults["tcp_keepalive_time"]
    with psycopg.connect(lab.dsn() + " keepalives=0") as conn:
        assert client_keepalive_settings(conn)["so_keepalive"] is False


def test_keepalive_probe_of_a_closed_connection_is_bad_input(lab: LabServer) -> None:
    conn = psycopg.connect(lab.dsn())
    conn.close()
    with pytest.raises(PlaybookError, match="already closed"):
        client_keepalive_settings(conn)


def test_idle_survival_against_the_servers_idle_session_timeout(lab: LabServer) -> None:
    lab.alter_system({"idle_session_timeout": "1s"})
    try:
        # new sessions must see the reloaded value before the probe relies on it
        def reloaded() -> bool:
            with lab.admin() as admin:
                return admin.execute("SHOW idle_session_timeout").fetchone() == ("1s",)

        wait_until(reloaded, timeout=10, what="idle_session_timeout = 1s to reach new sessions")
        frame = idle_survival(lab.dsn(), idle_s=[2.0, 0.0], timeout_s=3)
    finally:
        lab.alter_system({"idle_session_timeout": None})
    assert list(frame.columns) == SURVIVAL_COLUMNS
    long, short = frame.iloc[0], frame.iloc[1]
    assert (long.idle_s, bool(long.survived), long.phase) == (2.0, False, "query")
    assert "terminating connection due to idle-session timeout" in long.error
    assert long.idle_actual_s >= 2.0
    assert (short.idle_s, bool(short.survived)) == (0.0, True)
    assert pd.isna(short.error) and pd.isna(short.phase)
    assert short.elapsed_ms < 3000


def test_idle_survival_on_a_closed_port_fails_at_connect(lab: LabServer) -> None:
    frame = idle_survival(closed_port_dsn(), idle_s=[0.1, 0.2], timeout_s=2)
    assert not frame["survived"].any()
    assert (frame["phase"] == "connect").all()
    assert frame["error"].str.contains("Connection refused").all()


def test_a_silent_drop_is_seen_at_the_deadline_and_keepalives_prevent_it(lab: LabServer) -> None:
    with ChaosProxy("127.0.0.1", lab.port) as proxy:
        proxy.drop_idle_after(1.5)
        dsn = proxy.dsn_for(lab.dsn())
        quiet = idle_survival(dsn, idle_s=[2.5], timeout_s=1.0).iloc[0]
        kept = idle_survival(
            dsn + " keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=5",
            idle_s=[2.5],
            timeout_s=1.0,
        ).iloc[0]
    assert not quiet.survived and quiet.phase == "query"
    assert "no reply within 1 s" in quiet.error
    assert 900 <= quiet.elapsed_ms < 3000  # the probe's own deadline ended the wait
    assert kept.survived, kept.error


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda dsn: measure_connects(dsn, count=0), "count must be a positive whole number"),
        (lambda dsn: measure_connects(dsn, timeout_s=-1), "timeout_s must be a positive number"),
        (lambda dsn: measure_connects("host=127.0.0.1 port", count=1), "the DSN is malformed"),
        (lambda dsn: idle_survival(dsn, idle_s=[]), "non-empty list"),
        (lambda dsn: idle_survival(dsn, idle_s=[-1.0]), "must be a number of seconds >= 0"),
        (lambda dsn: idle_survival(dsn, idle_s=[1.0], timeout_s=0), "timeout_s must be a positive number"),
        (lambda dsn: latency_summary(pd.DataFrame({"x": [1]})), "needs a frame from measure_connects"),
    ],
)
def test_bad_input_is_one_sentence(lab: LabServer, call: object, message: str) -> None:
    with pytest.raises(PlaybookError, match=message):
        call(lab.dsn())  # type: ignore[operator]

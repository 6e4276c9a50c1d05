"""Keepalives and idle survival, seen from the client host.

A NAT gateway, firewall or load balancer that forgets an idle flow drops it silently: nothing
tells either end until the next query hangs or is reset. Two probes show whether that happens
here: what keepalive timers the client's socket really runs with, and whether a connection
left idle for N seconds still answers. Failures are evidence (rows), never exceptions.
"""

from __future__ import annotations

import math
import os
import select
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import pq

from playbook.errors import PlaybookError
from playbook.probes.latency import error_text, probe_connect_kwargs
from playbook.target import OwnSessionLost, reopen_after_loss

SURVIVAL_COLUMNS = ["idle_s", "survived", "error", "elapsed_ms", "sqlstate", "phase", "idle_actual_s"]
PROC_KEEPALIVE = Path("/proc/sys/net/ipv4")
OS_KEYS = ("tcp_keepalive_time", "tcp_keepalive_intvl", "tcp_keepalive_probes")


def _os_defaults() -> dict[str, int | None]:
    """Linux's keepalive defaults (seconds, seconds, probes) where /proc lets us read them."""
    out: dict[str, int | None] = {}
    for key in OS_KEYS:
        try:
            out[key] = int((PROC_KEEPALIVE / key).read_text().strip())
        except (OSError, ValueError):
            out[key] = None
    return out


def _getsockopt(sock: socket.socket, level: int, name: str) -> int | None:
    opt = getattr(socket, name, None)
    if opt is None:
        return None  # this platform has no such option
    try:
        return int(sock.getsockopt(level, opt))
    except OSError:
        return None


def client_keepalive_settings(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What the connection's socket actually uses, read with getsockopt on a duplicate of its fd.

    Keys: so_keepalive (bool), tcp_keepidle_s, tcp_keepintvl_s, tcp_keepcnt, tcp_user_timeout_ms
    (None where the platform does not say), os_defaults (Linux sysctls), dead_peer_after_s (how
    long after the last traffic a vanished peer is noticed, when keepalives are on).
    A session of the playbook's that was already lost is replaced, once, by a fresh one opened
    like it, which has the same socket options (OwnSessionLost when none answers).
    """
    if conn.closed:
        try:
            fresh = reopen_after_loss(conn)
        except psycopg.OperationalError as exc:
            raise OwnSessionLost(
                "the playbook's own session was lost before the keepalive probe and no fresh session "
                f"answered ({error_text(exc)})"
            ) from None
        if fresh is None:
            raise PlaybookError("the connection given to the keepalive probe is already closed")
        try:  # a session opened like the lost one runs with the same socket options
            return _socket_settings(fresh)
        finally:
            fresh.close()
    return _socket_settings(conn)


def _socket_settings(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError as ex:
        raise PlaybookError(f"the connection has no usable socket ({error_text(ex)})") from None
    # A socket object of our own on a dup of the fd: closing it must not close libpq's socket.
    sock = socket.socket(fileno=os.dup(fd))
    try:
        family = sock.family
        keepalive = _getsockopt(sock, socket.SOL_SOCKET, "SO_KEEPALIVE")
        tcp = family in (socket.AF_INET, socket.AF_INET6)
        result: dict[str, Any] = {
            "family": family.name,
            "so_keepalive": bool(keepalive) if keepalive is not None else None,
            "tcp_keepidle_s": _getsockopt(sock, socket.IPPROTO_TCP, "TCP_KEEPIDLE") if tcp else None,
            "tcp_keepintvl_s": _getsockopt(sock, socket.IPPROTO_TCP, "TCP_KEEPINTVL") if tcp else None,
            "tcp_keepcnt": _getsockopt(sock, socket.IPPROTO_TCP, "TCP_KEEPCNT") if tcp else None,
            "tcp_user_timeout_ms": _getsockopt(sock, socket.IPPROTO_TCP, "TCP_USER_TIMEOUT") if tcp else None,
        }
    finally:
        sock.close()
    result["os_defaults"] = _os_defaults()
    idle, intvl, cnt = result["tcp_keepidle_s"], result["tcp_keepintvl_s"], result["tcp_keepcnt"]
    if result["so_keepalive"] and None not in (idle, intvl, cnt):
        result["dead_peer_after_s"] = idle + intvl * cnt
    else:
        result["dead_peer_after_s"] = None
    return result


def query_within(conn: psycopg.Connection[Any], timeout_s: float) -> tuple[bool, str | None, str | None]:
    """Send `SELECT 1` and wait for its reply at most timeout_s: (ok, error, sqlstate).

    Done on libpq's non-blocking interface so a silently dropped flow (no reply, no reset)
    ends the wait at the deadline instead of at the kernel's retransmission timeout.
    """
    pgconn = conn.pgconn
    deadline = time.monotonic() + timeout_s
    try:
        pgconn.send_query(b"SELECT 1")
        while pgconn.flush() != 0:
            if not _wait(pgconn.socket, deadline, write=True):
                return False, f"no reply within {timeout_s:g} s (sending)", None
        error: tuple[str, str | None] | None = None
        while True:
            while pgconn.is_busy():
                if not _wait(pgconn.socket, deadline, write=False):
                    return (
                        False,
                        f"no reply within {timeout_s:g} s: the path may drop idle flows silently",
                        None,
                    )
                pgconn.consume_input()
            res = pgconn.get_result()
            if res is None:
                break
            if res.status == pq.ExecStatus.FATAL_ERROR and error is None:
                state = res.error_field(pq.DiagnosticField.SQLSTATE)
                error = (
                    " ".join(res.error_message.decode(errors="replace").split()),
                    state.decode() if state else None,
                )
    except psycopg.OperationalError as ex:
        # a FATAL the server sent before closing (57P05, 57P01) reaches us only as text here
        return False, error_text(ex), getattr(ex, "sqlstate", None)
    if error:
        return False, error[0][:300], error[1]
    if pgconn.status != pq.ConnStatus.OK:
        return False, " ".join(pgconn.get_error_message().split())[:300] or "connection lost", None
    return True, None, None


def _wait(fd: int, deadline: float, *, write: bool) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    r, w, _ = select.select([] if write else [fd], [fd] if write else [], [], remaining)
    return bool(r or w)


def idle_survival(conninfo: str, *, idle_s: Sequence[float], timeout_s: float = 5.0) -> pd.DataFrame:
    """Does a connection left idle for each of `idle_s` seconds still answer `SELECT 1`?

    All connections are opened first and checked at their own deadlines, so the probe takes as
    long as the longest idle period, not their sum. Rows, in the order given: idle_s, survived,
    error, elapsed_ms (the final round trip, or how long its failure took), sqlstate, phase
    ("connect" or "query" when it failed), idle_actual_s.
    """
    if isinstance(idle_s, str | bytes) or not isinstance(idle_s, Sequence) or not idle_s:
        raise PlaybookError("idle_s must be a non-empty list of idle periods in seconds")
    for value in idle_s:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise PlaybookError(f"each idle period must be a number of seconds >= 0, not {value!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
        raise PlaybookError(f"timeout_s must be a positive number, not {timeout_s!r}")
    kwargs = probe_connect_kwargs(conninfo, timeout_s)

    rows: list[dict[str, Any]] = [
        {
            "idle_s": float(v),
            "survived": False,
            "error": None,
            "elapsed_ms": math.nan,
            "sqlstate": None,
            "phase": None,
            "idle_actual_s": math.nan,
        }
        for v in idle_s
    ]
    conns: dict[int, tuple[psycopg.Connection[Any], float]] = {}
    try:
        for i, row in enumerate(rows):
            t0 = time.perf_counter()
            try:
                conn = psycopg.connect(conninfo, **kwargs)
            except psycopg.Error as ex:
                row.update(
                    error=error_text(ex),
                    sqlstate=ex.sqlstate,
                    phase="connect",
                    elapsed_ms=(time.perf_counter() - t0) * 1000,
                )
                continue
            # the idle clock starts when the connection has gone quiet, after its start-up
            conns[i] = (conn, time.monotonic())

        for i in sorted(conns, key=lambda i: rows[i]["idle_s"]):
            conn, quiet_since = conns[i]
            row = rows[i]
            due = quiet_since + row["idle_s"]
            # the idle wait is the measurement itself
            while (left := due - time.monotonic()) > 0:
                time.sleep(left)
            row["idle_actual_s"] = time.monotonic() - quiet_since
            t0 = time.perf_counter()
            ok, error, sqlstate = query_within(conn, timeout_s)
            row.update(
                survived=ok,
                error=error,
                sqlstate=sqlstate,
                phase=None if ok else "query",
                elapsed_ms=(time.perf_counter() - t0) * 1000,
            )
            conn.close()
    finally:
        for conn, _ in conns.values():
            conn.close()
    frame = pd.DataFrame(rows, columns=SURVIVAL_COLUMNS)
    frame["survived"] = frame["survived"].astype(bool)
    return frame

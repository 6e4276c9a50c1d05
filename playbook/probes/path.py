"""The path's idle cut-off, probed: connections left idle on a ladder of durations, with and without
TCP keepalives, each asked `SELECT 1` when its time is up (issue 18, `playbook probe path`).

A hop that cuts idle flows (a NAT, a firewall, a load balancer, an application-level proxy, the
server's own idle_session_timeout) ends every connection left idle longer than its limit. Leaving
one connection idle per rung (geometric, up to `max_idle_s`) answers where the cut is; a second one
per rung with keepalives sent well below the smallest rung answers whether keepalives keep a flow
alive through it: a hop that counts packets (NAT, conntrack, cloud load balancer) sees them, an
application-level hop (HAProxy's `timeout client`, PgBouncer's idle timeouts) counts only payload.

All connections wait at once, so the probe takes as long as its longest rung (plus the bounded
query), never their sum. While they wait, their sockets are watched: a reset, a FIN or the server's
FATAL is seen the moment it arrives (its idle age is then measured, not bounded); a silent drop is
found only by the rung's query, which waits at most `timeout_s`. Read-only (`SELECT 1`, the
playbook's safe session), at most MAX_CONNECTIONS connections, every one closed whatever happens
(Ctrl-C included). Failures are rows, never exceptions; only bad input raises.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import pq

from playbook.errors import PlaybookError
from playbook.evidence.contract import PATH_ENDINGS, PATH_PROBE
from playbook.probes.keepalive import query_within
from playbook.probes.latency import error_text
from playbook.target import OwnSession, Target

RUNGS = 6  # rungs per ladder: with two keepalive modes, at most 12 connections
MAX_CONNECTIONS = 2 * RUNGS
MIN_RUNG_S = 1.0
MIN_MAX_IDLE_S = 2.0
MAX_MAX_IDLE_S = 3600.0  # bounded in time: an hour at most
DEFAULT_MAX_IDLE_S = 600.0
DEFAULT_TIMEOUT_S = 5.0  # the rung's query: a silent drop is found within this
WATCH_STEP_S = 0.25  # how often the wait wakes to show progress
FRAME_NAME = PATH_PROBE.name  # the evidence frame, and the file `playbook run --path-probe` reads
FRAME_FILE = f"{FRAME_NAME}.parquet"
META_FILE = f"{FRAME_NAME}.json"
SCHEMA_ID = "pg-session-playbook/path-probe/v1"

# How a connection ended (column `ended`, the contract's PATH_ENDINGS); None when it survived.
RESET, CLOSED, SILENT_DROP, SERVER_END, CONNECT_FAILED, OTHER = PATH_ENDINGS
COLUMNS = PATH_PROBE.column_names


def check_max_idle(value: object) -> float:
    """--max-idle as seconds, or one sentence: a number between MIN_MAX_IDLE_S and MAX_MAX_IDLE_S."""
    try:
        seconds = float(str(value).strip().removesuffix("s")) if not isinstance(value, bool) else math.nan
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and MIN_MAX_IDLE_S <= seconds <= MAX_MAX_IDLE_S):
        raise PlaybookError(
            f"--max-idle must be a number of seconds from {MIN_MAX_IDLE_S:g} to {MAX_MAX_IDLE_S:g}, "
            f"not {value!r}"
        )
    return seconds


def ladder(max_idle_s: float) -> list[float]:
    """The rungs, smallest first: max_idle_s halved until MIN_RUNG_S, at most RUNGS of them."""
    seconds = check_max_idle(max_idle_s)
    rungs = [seconds]
    while len(rungs) < RUNGS and rungs[-1] / 2 >= MIN_RUNG_S:
        rungs.append(rungs[-1] / 2)
    return [round(r, 3) for r in reversed(rungs)]


def keepalive_idle_for(rungs: list[float]) -> int:
    """Keepalives start well below the smallest rung (a quarter of it, whole seconds, at least 1),
    so a hop that counts packets sees the flow busy long before any rung's idle time."""
    return max(1, math.floor(min(rungs) / 4))


def ending_of(error: str | None, sqlstate: str | None, fatal: str | None) -> str:
    """How a connection ended, from libpq's words, the SQLSTATE and a FATAL the server sent."""
    text = (error or "").lower()
    if fatal or (sqlstate or "").startswith("57") or "terminating connection" in text:
        return SERVER_END
    if "no reply within" in text:
        return SILENT_DROP
    if "reset by peer" in text or "connection reset" in text:
        return RESET
    if "closed the connection" in text or "eof" in text or "broken pipe" in text:
        return CLOSED
    return OTHER


@dataclass
class _Probe:
    """One connection on one rung, and what became of it (its row)."""

    rung_s: float
    keepalives: bool
    keepalives_idle_s: int | None
    conn: OwnSession | None = None
    quiet_since: float = 0.0
    fatal: str | None = None
    fatal_state: str | None = None
    row: dict[str, Any] | None = None

    def finish(
        self,
        survived: bool,
        *,
        seen: str | None,
        error: str | None,
        sqlstate: str | None,
        asked_at: float | None = None,
        ended: str | None = None,
    ) -> None:
        """The row: `asked_at` when the rung's query was sent (the idle age is counted to it),
        `ended` when the socket itself told how (a reset or a FIN seen while idle)."""
        now = asked_at or time.monotonic()
        age = now - self.quiet_since if self.quiet_since else math.nan
        if not survived and ended is None:
            ended = ending_of(error, sqlstate or self.fatal_state, self.fatal)
        if ended == SERVER_END and self.fatal:
            error, sqlstate = self.fatal, sqlstate or self.fatal_state
        self.row = {
            "rung_s": self.rung_s,
            "keepalives": self.keepalives,
            "keepalives_idle_s": self.keepalives_idle_s,
            "survived": survived,
            "ended": None if survived else ended,
            "seen": seen,
            "ended_at_s": math.nan if survived or seen == "connect" else round(age, 3),
            "idle_actual_s": round(age, 3),
            "error": error,
            "sqlstate": sqlstate,
        }
        if self.conn is not None:
            self.conn.close()


def _connect_kwargs(target: Target, keepalives: bool, keepidle: int, timeout_s: float) -> dict[str, Any]:
    """The playbook's safe session (target.connect_kwargs: named, read-only, bounded, path_defaults),
    with the keepalives of this probe's mode replacing the playbook's own: on, starting after
    `keepidle` s, or off, whatever the DSN says; tcp_user_timeout bounds a write into a dead path."""
    kwargs = target.connect_kwargs(pooled=target.pooled)
    for key in ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"):
        kwargs.pop(key, None)
    if keepalives:
        kwargs.update(
            keepalives=1, keepalives_idle=keepidle, keepalives_interval=keepidle, keepalives_count=3
        )
    else:
        kwargs["keepalives"] = 0
    kwargs["tcp_user_timeout"] = max(1000, math.ceil(timeout_s * 1000))
    return kwargs


def _watch_fatal(probe: _Probe) -> None:
    """A FATAL the server sends on an idle session reaches libpq as a notice: keep it."""
    assert probe.conn is not None

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        if (diag.severity_nonlocalized or diag.severity or "").upper() in ("FATAL", "PANIC"):
            probe.fatal = " ".join((diag.message_primary or "").split())[:300] or "FATAL"
            probe.fatal_state = diag.sqlstate

    probe.conn.add_notice_handler(keep)


def _peek(fd: int) -> str | None:
    """What waits on a readable socket, without taking it from libpq: RESET (an RST), CLOSED (a
    FIN, nothing before it) or None (bytes for libpq). libpq words both ends alike ("server closed
    the connection unexpectedly"), the socket tells them apart."""
    sock = socket.socket(fileno=os.dup(fd))  # our own object on a dup: closing it leaves libpq's
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except ConnectionResetError:
        return RESET
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return OTHER
    finally:
        sock.close()
    return CLOSED if data == b"" else None


def _ended_while_idle(probe: _Probe) -> bool:
    """Something arrived on an idle connection: a reset or FIN (the flow ended) or the server's
    FATAL (it ended the session). A mere notice or parameter report leaves it waiting."""
    assert probe.conn is not None
    pgconn = probe.conn.pgconn
    how = _peek(pgconn.socket)
    if how is not None:
        text = "the connection was reset (RST)" if how == RESET else "the connection was closed (FIN)"
        if probe.fatal:  # the server said why before it closed
            how, text = SERVER_END, probe.fatal
        probe.finish(False, seen="idle", error=text, sqlstate=probe.fatal_state, ended=how)
        return True
    try:
        pgconn.consume_input()
        pgconn.is_busy()  # parses what came: a FATAL while idle goes to the notice handler
    except psycopg.OperationalError as exc:
        with contextlib.suppress(psycopg.Error):
            pgconn.is_busy()  # a FATAL read just before the end still says why
        probe.finish(False, seen="idle", error=error_text(exc), sqlstate=getattr(exc, "sqlstate", None))
        return True
    if probe.fatal or pgconn.status != pq.ConnStatus.OK:
        probe.finish(False, seen="idle", error=probe.fatal or "connection lost", sqlstate=probe.fatal_state)
        return True
    return False


def probe_path(
    target: Target,
    *,
    max_idle_s: float = DEFAULT_MAX_IDLE_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """Leave one connection idle per rung of `ladder(max_idle_s)` with keepalives and one without,
    all at once; at each rung's time ask `SELECT 1` (at most `timeout_s`). One row per connection
    (COLUMNS), smallest rung first, without keepalives first:

    - rung_s, keepalives, keepalives_idle_s: the rung and the mode (keepalives start after that);
    - survived; ended: None, "reset", "closed", "silent drop", "server end", "connect failed" or
      "error"; seen: "idle" (it ended while waiting: ended_at_s is the idle age it ended at,
      measured), "query" (found by the rung's query: ended_at_s bounds the cut from above),
      "connect" (never opened), None (survived);
    - idle_actual_s, error (one line), sqlstate.

    `target` should have been checked (Target.check) so that a pooler's refusal of the startup
    options is known (target.pooled). `on_row` is told each finished row, `on_tick` the seconds
    elapsed. Every connection is closed before this returns or raises (KeyboardInterrupt too).
    """
    rungs = ladder(max_idle_s)
    keepidle = keepalive_idle_for(rungs)
    probes = [_Probe(r, ka, keepidle if ka else None) for r in rungs for ka in (False, True)]
    started = time.monotonic()
    try:
        for probe in probes:
            try:
                probe.conn = OwnSession.connect(
                    target.dsn, **_connect_kwargs(target, probe.keepalives, keepidle, timeout_s)
                )
            except psycopg.Error as exc:
                probe.finish(
                    False, seen="connect", error=error_text(exc), sqlstate=exc.sqlstate, ended=CONNECT_FAILED
                )
                _told(on_row, probe)
                continue
            _watch_fatal(probe)
            probe.quiet_since = time.monotonic()  # the idle clock starts once its start-up is over
        waiting = [p for p in probes if p.row is None]
        while waiting:
            now = time.monotonic()
            for probe in [p for p in waiting if now - p.quiet_since >= p.rung_s]:
                assert probe.conn is not None
                asked_at = time.monotonic()
                ok, error, sqlstate = query_within(probe.conn, timeout_s)
                seen = None if ok else "query"
                probe.finish(ok, seen=seen, error=error, sqlstate=sqlstate, asked_at=asked_at)
                _told(on_row, probe)
            waiting = [p for p in waiting if p.row is None]
            if not waiting:
                break
            due = min(p.quiet_since + p.rung_s for p in waiting)
            by_fd = {p.conn.pgconn.socket: p for p in waiting if p.conn is not None}
            wait = max(0.0, min(due - time.monotonic(), WATCH_STEP_S))
            readable, _, _ = select.select(list(by_fd), [], [], wait)  # the idle wait is the measurement
            for fd in readable:
                if _ended_while_idle(by_fd[fd]):
                    _told(on_row, by_fd[fd])
            waiting = [p for p in waiting if p.row is None]
            if on_tick is not None:
                on_tick(time.monotonic() - started)
    finally:
        for probe in probes:
            if probe.conn is not None and not probe.conn.closed:
                probe.conn.close()
    frame = pd.DataFrame([p.row for p in probes if p.row is not None], columns=COLUMNS)
    frame["survived"] = frame["survived"].astype(bool)
    frame["keepalives"] = frame["keepalives"].astype(bool)
    return frame


def _told(on_row: Callable[[dict[str, Any]], None] | None, probe: _Probe) -> None:
    if on_row is not None and probe.row is not None:
        on_row(probe.row)


def write_probe(folder: Path, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
    """The probe's evidence in `folder`: its rows (FRAME_FILE) and what it was run with (META_FILE)."""
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / FRAME_FILE, index=False)
    (folder / META_FILE).write_text(json.dumps({"schema": SCHEMA_ID, **meta}, indent=2, default=str))


def read_probe(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A `playbook probe path` folder's rows and meta, or one sentence saying why it is not one."""
    where = f"--path-probe {folder}"
    if not folder.is_dir():
        raise PlaybookError(f"{where} is not a folder written by `playbook probe path`")
    try:
        meta = json.loads((folder / META_FILE).read_text())
        frame = pd.read_parquet(folder / FRAME_FILE)
    except FileNotFoundError as exc:
        name = Path(str(exc.filename)).name
        raise PlaybookError(f"{where} holds no {name}: give a `playbook probe path` --out folder") from None
    except (OSError, ValueError) as exc:
        raise PlaybookError(f"{where} cannot be read ({' '.join(str(exc).split())[:200]})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA_ID or missing:
        raise PlaybookError(f"{where} is not a `playbook probe path` result (schema {SCHEMA_ID} expected)")
    return frame[COLUMNS], meta


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat()

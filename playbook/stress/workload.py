"""What `playbook stress` runs: the limits in force, the cap, the schedule, the record and the monitor.

The schedule alternates bursts (every worker running units back to back) with idle gaps sized to
cross each idle limit in force: the server's idle_session_timeout as the pool's sessions see it
(role and database settings included), PgBouncer's client_idle_timeout when its console is given.
Statement and transaction limits are read and reported, never crossed on purpose: each unit is a
read-only transaction holding a pg_sleep far below them.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

# Settings the pool's sessions run under (seconds; 0 or absent: off), read as those sessions see them.
SERVER_LIMITS = (
    "idle_session_timeout",
    "idle_in_transaction_session_timeout",
    "statement_timeout",
    "transaction_timeout",
    "lock_timeout",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "tcp_user_timeout",
)
# PgBouncer's own limits (SHOW CONFIG of its admin console), seconds.
POOLER_LIMITS = (
    "client_idle_timeout",
    "server_idle_timeout",
    "server_lifetime",
    "query_timeout",
    "query_wait_timeout",
    "idle_transaction_timeout",
)
# Idle limits the gaps cross, and the layer and link each belongs to.
IDLE_LIMITS = {
    "idle_session_timeout": ("server", "client pool → server (idle_session_timeout)"),
    "client_idle_timeout": ("pooler", "client pool → pooler (client_idle_timeout)"),
}
MIN_DURATION_S, MAX_DURATION_S = 5.0, 600.0
BURST_S = 1.0
SHORT_GAP_S = 0.5
CROSS_FACTOR = 1.5  # a gap this much longer than a limit crosses it whatever the poll's jitter
CROSS_MIN_EXTRA_S = 1.0
NO_LIMIT_GAPS_S = (0.5, 2.0, 5.0)
SLOT_MARGIN_MIN = 3
SLOT_MARGIN_SHARE = 0.1
MONITOR_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Phase:
    """One burst and the idle gap after it, in seconds from the run's start."""

    start: float
    burst_end: float
    end: float
    crosses: str | None  # the idle limit the gap crosses, None for a short gap


@dataclass
class Recorder:
    """Everything the workers, the pool hooks and the monitor observed, timed from the start."""

    started: float = field(default_factory=time.monotonic)
    start_epoch: float = field(default_factory=time.time)
    units: list[dict[str, Any]] = field(default_factory=list)
    opens: list[dict[str, Any]] = field(default_factory=list)
    closes: list[dict[str, Any]] = field(default_factory=list)
    vanished: list[dict[str, Any]] = field(default_factory=list)
    server_counts: list[tuple[float, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, epoch: float | None = None) -> None:
        """Start the clock the schedule runs on: now, once the pool is built (importing and
        configuring a library must not eat the first burst), or at `epoch` (the node script's)."""
        epoch = time.time() if epoch is None else epoch
        self.started = time.monotonic() - (time.time() - epoch)
        self.start_epoch = epoch

    def now(self) -> float:
        return time.monotonic() - self.started

    def opened(self, pid: int, at: float | None = None) -> None:
        with self._lock:
            self.opens.append({"t": self.now() if at is None else at, "pid": pid})

    def closed(
        self,
        pid: int,
        *,
        by_pool: bool,
        at: float | None = None,
        error: str | None = None,
        sqlstate: str | None = None,
    ) -> None:
        with self._lock:
            self.closes.append(
                {
                    "t": self.now() if at is None else at,
                    "pid": pid,
                    "by_pool": by_pool,
                    "error": error,
                    "sqlstate": sqlstate,
                }
            )

    def unit(
        self,
        worker: int,
        started: float,
        *,
        ok: bool,
        wait_s: float | None = None,
        pid: int = 0,
        sqlstate: str | None = None,
        error: str | None = None,
        pool_timeout: bool = False,
        ended: float | None = None,
    ) -> None:
        end = self.now() if ended is None else ended
        with self._lock:
            self.units.append(
                {
                    "worker": worker,
                    "t": started,
                    "latency_s": max(0.0, end - started),
                    "wait_s": wait_s,
                    "ok": ok,
                    "pid": pid,
                    "sqlstate": sqlstate,
                    "error": error,
                    "pool_timeout": pool_timeout,
                }
            )


def seconds_of(setting: str, unit: str | None) -> float:
    """A pg_settings value in seconds (its unit 'ms', 's' or 'min')."""
    value = float(setting)
    return value / 1000 if unit == "ms" else value * 60 if unit == "min" else value


def read_server_limits(conn: psycopg.Connection[Any]) -> dict[str, float]:
    """The limits a pool's session runs under, read in that very session (so ALTER ROLE and ALTER
    DATABASE values count), in seconds; a setting the server lacks (transaction_timeout before 17)
    is left out."""
    rows = read_only_rows(
        conn, "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", [list(SERVER_LIMITS)]
    )
    return {str(name): seconds_of(str(setting), unit) for name, setting, unit in rows}


def read_only_rows(conn: psycopg.Connection[Any], query: str, params: list[Any] | None = None) -> list[Any]:
    """The rows of `query`, run in a READ ONLY transaction of its own and rolled back.

    A driver error rolls back (when the session still can) and propagates. An interrupt (Ctrl-C)
    closes the session and propagates untouched: psycopg cut mid-query may leave the session busy,
    and a ROLLBACK sent then fails ("another command is already in progress") with a driver error
    that would replace the interrupt, so nothing more is sent on it."""
    try:
        conn.execute("BEGIN READ ONLY")
        rows = conn.execute(query, params).fetchall()
    except Exception:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")
        raise
    except BaseException:
        conn.close()
        raise
    conn.execute("ROLLBACK")
    return rows


def read_pooler_limits(console_dsn: str) -> dict[str, Any]:
    """PgBouncer's own limits and pool_mode from SHOW CONFIG on its admin console (seconds)."""
    with psycopg.connect(console_dsn, autocommit=True, prepare_threshold=None, connect_timeout=5) as conn:
        cur = conn.execute("SHOW CONFIG")
        names = [d.name for d in cur.description or []]
        config = {str(r[names.index("key")]): r[names.index("value")] for r in cur.fetchall()}
    found: dict[str, Any] = {name: float(config[name]) for name in POOLER_LIMITS if name in config}
    found["pool_mode"] = config.get("pool_mode")
    return found


@dataclass(frozen=True)
class Slots:
    """The server's connection slots as the stress sees them before it opens any."""

    max_connections: int
    reserved: int
    in_use: int
    role_limit: int | None  # the role's CONNECTION LIMIT minus its sessions, None when unlimited

    def cap(self, margin: int | None = None) -> int:
        """How many connections the stress may open: the free slots minus a margin (never the
        last ones: admin, migrations and the applications need them), within the role's limit."""
        free = self.max_connections - self.reserved - self.in_use
        margin = margin if margin is not None else max(SLOT_MARGIN_MIN, math.ceil(free * SLOT_MARGIN_SHARE))
        cap = free - margin - 1  # -1: the stress's own monitor session
        if self.role_limit is not None:
            cap = min(cap, self.role_limit - 1)
        return max(0, cap)


def read_slots(conn: psycopg.Connection[Any]) -> Slots:
    rows = read_only_rows(
        conn,
        "SELECT current_setting('max_connections')::int,"
        " current_setting('superuser_reserved_connections')::int"
        " + coalesce(current_setting('reserved_connections', true), '0')::int,"
        " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,"
        " (SELECT CASE WHEN rolconnlimit < 0 THEN NULL ELSE rolconnlimit - (SELECT count(*)"
        "   FROM pg_stat_activity WHERE usename = current_user)::int END"
        "  FROM pg_roles WHERE rolname = current_user)",
    )
    row = rows[0] if rows else None
    assert row is not None
    return Slots(int(row[0]), int(row[1]), int(row[2]), None if row[3] is None else int(row[3]))


def idle_limits_in_force(server: dict[str, float], pooler: dict[str, Any]) -> dict[str, float]:
    """The idle limits the gaps must cross (seconds, > 0)."""
    found = {}
    if server.get("idle_session_timeout", 0) > 0:
        found["idle_session_timeout"] = float(server["idle_session_timeout"])
    if float(pooler.get("client_idle_timeout") or 0) > 0:
        found["client_idle_timeout"] = float(pooler["client_idle_timeout"])
    return found


def gap_for(limit_s: float) -> float:
    return round(max(limit_s * CROSS_FACTOR, limit_s + CROSS_MIN_EXTRA_S), 1)


def build_schedule(limits: dict[str, float], duration_s: float) -> tuple[list[Phase], list[str]]:
    """Bursts of BURST_S separated by gaps cycling through: a short one, then one crossing each idle
    limit (shortest first). A limit whose crossing gap does not fit twice in the duration is not
    crossed, and the notes say so."""
    gaps: list[tuple[float, str | None]] = [(SHORT_GAP_S, None)]
    notes = []
    for name, value in sorted(limits.items(), key=lambda kv: kv[1]):
        gap = gap_for(value)
        if 2 * (gap + BURST_S) > duration_s:
            notes.append(
                f"{name} ({value:g} s) is not crossed: a gap of {gap:g} s does not fit twice in "
                f"--duration {duration_s:g} s"
            )
            continue
        gaps.append((gap, name))
    if len(gaps) == 1:
        gaps += [(g, None) for g in NO_LIMIT_GAPS_S[1:]]
    phases, t, i = [], 0.0, 0
    while t + BURST_S < duration_s:
        gap, crosses = gaps[i % len(gaps)]
        end = min(duration_s, t + BURST_S + gap)
        phases.append(Phase(t, t + BURST_S, end, crosses if end - t - BURST_S >= gap else None))
        t, i = end, i + 1
    # the run ends on a burst: whatever the last gap did to the pool is found by the next checkout
    if phases and phases[-1].end - phases[-1].burst_end > 0:
        last = phases[-1]
        phases.append(Phase(last.end, last.end + BURST_S, last.end + BURST_S, None))
    return phases, notes


class Monitor:
    """Polls pg_stat_activity for the pool's sessions (by application_name) every
    MONITOR_INTERVAL_S on a session of its own: when a backend disappears, when it was last seen,
    its state then and how long it had been in it. Only meaningful directly on the server (through
    a pooler the backends are the pooler's)."""

    def __init__(self, session: psycopg.Connection[Any], application_name: str, recorder: Recorder) -> None:
        self.session, self.app, self.recorder = session, application_name, recorder
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.seen: dict[int, dict[str, Any]] = {}

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def _poll(self) -> dict[int, dict[str, Any]]:
        rows = self.session.execute(
            "SELECT pid, state, extract(epoch FROM now() - state_change)::float8"
            " FROM pg_stat_activity WHERE application_name = %s",
            [self.app],
        ).fetchall()
        at = self.recorder.now()
        return {int(pid): {"t": at, "state": state, "state_age_s": age} for pid, state, age in rows}

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                now = self._poll()
            except psycopg.Error as exc:
                self.recorder.notes.append(
                    f"the monitor's session was lost ({exc.__class__.__name__}): "
                    "losses after that are counted from the pool's errors only"
                )
                return
            at = self.recorder.now()
            # A backend missing from one poll and back in the next was never gone (seen under load
            # at the pool's start): only a pid that stays away counts as vanished.
            back = [g for g in self.recorder.vanished if g["pid"] in now]
            for gone in back:
                self.recorder.vanished.remove(gone)
            for pid, last in self.seen.items():
                if pid not in now:
                    self.recorder.vanished.append(
                        {
                            "pid": pid,
                            "t": at,
                            "last_seen": last["t"],
                            "last_state": last["state"],
                            "idle_s_at_last_seen": last["state_age_s"],
                            "idle_s_at_most": (last["state_age_s"] or 0) + at - last["t"],
                        }
                    )
            self.seen = now
            self.recorder.server_counts.append((at, len(now)))
            self.stop.wait(MONITOR_INTERVAL_S)

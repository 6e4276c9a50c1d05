"""Connect and round-trip latency, measured from the client host.

A slow or flaky path shows up here before it shows up anywhere else: connections that take
seconds to open (TCP, TLS, authentication), attempts that fail now and then, round trips that
spike. Failures are evidence, so they are rows, never exceptions; only bad input raises.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import psycopg

from playbook import APPLICATION_NAME
from playbook.errors import PlaybookError
from playbook.progress import progress_bar
from playbook.target import (
    OwnSessionLost,
    cannot_run_commands,
    parse_dsn,
    reopen_after_loss,
    session_lost,
    session_options,
)

CONNECT_COLUMNS = ["ts", "attempt", "ok", "connect_ms", "error", "sqlstate"]
RTT_COLUMNS = ["ts", "rtt_ms", "error"]
ERROR_MAX = 300


def _now() -> datetime:
    return datetime.now(timezone.utc)


def error_text(exc: BaseException) -> str:
    """libpq's message on one line (it spreads hints over several), bounded."""
    return " ".join(str(exc).split())[:ERROR_MAX] or type(exc).__name__


def probe_connect_kwargs(conninfo: str, timeout_s: float, pooled: bool = False) -> dict[str, Any]:
    """Connection arguments for a probe: the playbook's safe, named session, bounded in time.

    connect_timeout bounds TCP + TLS + authentication (libpq counts at least 2 s);
    tcp_user_timeout makes the kernel give up on unacknowledged data, so a path that
    drops packets fails the probe instead of hanging it. `pooled` (Target.pooled): without the
    safety options a pooler refuses; the probe's one statement is `SELECT 1`, nothing to make safe.
    """
    params = parse_dsn(conninfo)
    user_options = str(params.get("options") or "")
    options = " ".join(part for part in (user_options, "" if pooled else session_options()) if part)
    return {
        "application_name": APPLICATION_NAME,
        **({"options": options} if options else {}),
        **({"prepare_threshold": None} if pooled else {}),
        "autocommit": True,
        "connect_timeout": max(1, math.ceil(timeout_s)),
        "tcp_user_timeout": max(1, math.ceil(timeout_s * 1000)),
    }


def _check_positive(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise PlaybookError(f"{name} must be a positive number, not {value!r}")


def measure_connects(
    conninfo: str, *, count: int = 10, timeout_s: float = 5.0, progress: bool = False, pooled: bool = False
) -> pd.DataFrame:
    """Open `count` fresh connections one after another, timing each up to its first `SELECT 1`
    (`pooled`: through a pooler that refuses the safety options, see probe_connect_kwargs).

    Rows: ts (UTC, start of the attempt), attempt (1..count), ok, connect_ms (TCP + TLS + auth +
    the first query's round trip; also set for failures: how long the failure took), error,
    sqlstate.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise PlaybookError(f"count must be a positive whole number, not {count!r}")
    _check_positive("timeout_s", timeout_s)
    kwargs = probe_connect_kwargs(conninfo, timeout_s, pooled)
    rows: list[dict[str, Any]] = []
    with progress_bar("connect probe", total=count, enabled=progress) as advance:
        for attempt in range(1, count + 1):
            ts = _now()
            t0 = time.perf_counter()
            try:
                with psycopg.connect(conninfo, **kwargs) as conn:
                    conn.execute("SELECT 1").fetchone()
                    elapsed = (time.perf_counter() - t0) * 1000
                rows.append(
                    {
                        "ts": ts,
                        "attempt": attempt,
                        "ok": True,
                        "connect_ms": elapsed,
                        "error": None,
                        "sqlstate": None,
                    }
                )
            except psycopg.Error as ex:
                elapsed = (time.perf_counter() - t0) * 1000
                rows.append(
                    {
                        "ts": ts,
                        "attempt": attempt,
                        "ok": False,
                        "connect_ms": elapsed,
                        "error": error_text(ex),
                        "sqlstate": ex.sqlstate,
                    }
                )
            advance(attempt)
    return _frame(rows, CONNECT_COLUMNS)


def measure_round_trips(conn: psycopg.Connection[Any], *, count: int = 50) -> pd.DataFrame:
    """`SELECT 1` round trips on an open connection. Rows: ts (UTC), rtt_ms, error.

    A failure is a row whose rtt_ms is NaN and whose error says why. When the failure lost the
    playbook's own session (`session_lost`; the path reset it, the server ended it), the series
    goes on, once, on a fresh session opened like it (`reopen_after_loss`), which is closed at the
    end; otherwise, or when no fresh session answers, the failure ends the series. A session of the
    playbook's that is already closed when the probe starts is replaced the same way, and
    OwnSessionLost says so when none answers. A connection that can run no further command after it
    (see `cannot_run_commands`) is closed here, so that the caller's `with` block ends cleanly. A
    transaction this opens is rolled back.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise PlaybookError(f"count must be a positive whole number, not {count!r}")
    fresh: psycopg.Connection[Any] | None = None
    if conn.closed:
        try:
            fresh = reopen_after_loss(conn)
        except psycopg.OperationalError as exc:
            raise OwnSessionLost(
                "the playbook's own session was lost before the round-trip probe and no fresh session "
                f"answered ({error_text(exc)})"
            ) from None
        if fresh is None:
            raise PlaybookError("the connection given to the round-trip probe is already closed")
    try:
        return _round_trips(fresh or conn, count, may_reopen=fresh is None)
    finally:
        if fresh is not None:
            fresh.close()


def _round_trips(conn: psycopg.Connection[Any], count: int, *, may_reopen: bool) -> pd.DataFrame:
    opened_tx = not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    rows: list[dict[str, Any]] = []
    fresh: psycopg.Connection[Any] | None = None
    session = conn
    try:
        while len(rows) < count:
            ts = _now()
            t0 = time.perf_counter()
            try:
                session.execute("SELECT 1").fetchone()
            except psycopg.Error as ex:
                rows.append({"ts": ts, "rtt_ms": math.nan, "error": error_text(ex)})
                if not (may_reopen and fresh is None and session_lost(session, ex)):
                    break
                try:
                    fresh = reopen_after_loss(session)
                except psycopg.OperationalError as again:
                    rows[-1]["error"] += f"; no fresh session answered ({error_text(again)})"
                    break
                if fresh is None:
                    break
                session = fresh
                continue
            rows.append({"ts": ts, "rtt_ms": (time.perf_counter() - t0) * 1000, "error": None})
    finally:
        if fresh is not None:
            fresh.close()
    if cannot_run_commands(conn):
        conn.close()  # a session the server ended: else the caller's `with` exit fails on COMMIT
    elif opened_tx and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with suppress(psycopg.Error):
            conn.rollback()  # leave no idle-in-transaction session behind the probe
    return _frame(rows, RTT_COLUMNS)


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def _ms(value: Any) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 3)


def latency_summary(frame: pd.DataFrame) -> dict[str, Any]:
    """p50/p95/p99/max of the successful samples, failures and their texts (JSON-ready).

    Works on both frames: measure_connects' (connect_ms, ok) and measure_round_trips' (rtt_ms), and
    on an empty frame without columns (a probe that could not run): no samples, metric None.
    """
    if "connect_ms" in frame.columns:
        column = "connect_ms"
        ok = frame["ok"].astype(bool) if "ok" in frame.columns else frame["error"].isna()
    elif "rtt_ms" in frame.columns:
        column = "rtt_ms"
        ok = frame["error"].isna() if "error" in frame.columns else frame["rtt_ms"].notna()
    elif frame.columns.empty:
        column = None  # nothing was measured (the probe could not run): no samples, not an error
        ok = pd.Series(dtype=bool)
    else:
        raise PlaybookError("latency_summary needs a frame from measure_connects or measure_round_trips")
    values = frame.loc[ok, column].astype(float) if column else pd.Series(dtype=float)
    failures = frame.loc[~ok]
    texts: Mapping[str, int] = Counter(str(t) for t in failures["error"]) if "error" in frame else {}
    summary: dict[str, Any] = {
        "metric": column,
        "samples": int(len(frame)),
        "ok": int(ok.sum()),
        "failures": int(len(failures)),
        "failure_rate": round(len(failures) / len(frame), 4) if len(frame) else None,
        "failure_texts": [{"error": t, "count": n} for t, n in sorted(texts.items(), key=lambda kv: -kv[1])],
    }
    if len(values):
        summary.update(
            {
                "p50_ms": _ms(values.quantile(0.50)),
                "p95_ms": _ms(values.quantile(0.95)),
                "p99_ms": _ms(values.quantile(0.99)),
                "max_ms": _ms(values.max()),
                "min_ms": _ms(values.min()),
                "mean_ms": _ms(values.mean()),
            }
        )
    else:
        summary.update({k: None for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "min_ms", "mean_ms")})
    return summary

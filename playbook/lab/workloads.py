"""Real applications for the lab: psycopg_pool pools serving "requests" from worker threads.

Each service writes the application log a real service would (timestamps, the driver's own
exception text, psycopg_pool's own warnings) and records its pool's get_stats() every second to
a JSON-lines file next to that log, so the playbook reads what it would read in production, not
a simulation of it.

Traffic shapes, because incidents depend on them:
- steady: every worker serves a request every `request_interval` seconds;
- bursty (`burst_seconds` > 0): traffic for `burst_seconds`, then `idle_gap` seconds of silence,
  on one clock for all workers, so every pooled connection sits idle through the gap (what
  idle_session_timeout, idle reapers and path idle limits then cut);
- a slow call inside the transaction (`think_in_transaction`): the request holds its transaction
  open while it "calls another service" (what idle_in_transaction_session_timeout kills);
- a leaking endpoint (`leak_every`): every N seconds one request checks a connection out and
  never gives it back, half of them with a transaction left open.

`request_deadline` is the service's own request timeout. A request still waiting on the database
after it is abandoned and its socket torn down, which is what the kernel does when TCP
retransmissions time out (tcp_user_timeout, or ~15 min by default). The lab needs it because a
userspace proxy that drops a flow still ACKs at the kernel level, so no TCP timeout ever fires.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
POOL_LOGGER = "psycopg.pool"  # psycopg_pool's own logger: "error connecting in …", "discarding …"


def app_logger(name: str, path: Path | None) -> logging.Logger:
    """A logger that writes like a service would: one line per event, the exception's own text."""
    # A logger of its own, outside logging's registry: two services of the same name in one process
    # (two scenarios side by side) must not write into each other's application log.
    logger = logging.Logger(f"lab.{name}", logging.INFO)
    logger.propagate = False
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    return logger


def stats_log_for(app_log: Path) -> Path:
    """Where a service records its pool's get_stats(): next to its application log."""
    return app_log.with_name(f"{app_log.stem}.pool-stats.jsonl")


class _PoolRecords(logging.Filter):
    """Only this pool's psycopg_pool records: from its own threads, or naming it."""

    def __init__(self, pool_name: str) -> None:
        super().__init__()
        name = re.escape(pool_name)
        self._thread = re.compile(rf"^{name}-(?:worker-\d+|scheduler|\d+|leak|deadline)$")
        self._quoted = f"'{pool_name}'"

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(self._thread.match(record.threadName or "")) or self._quoted in record.getMessage()


@dataclass
class _InFlight:
    conn: psycopg.Connection[Any]
    started: float
    aborted: bool = False


@dataclass
class Service:
    """A pool per process, worker threads serving requests: how most Python services use PostgreSQL."""

    dsn: str
    name: str
    workers: int = 2
    min_size: int = 2
    max_size: int = 4
    pool_timeout: float = 5.0
    request_interval: float = 0.05
    query: str = "SELECT count(*) FROM pg_class"
    app_log: Path | None = None
    pool_kwargs: dict[str, Any] = field(default_factory=dict)
    connect_kwargs: dict[str, Any] = field(default_factory=dict)
    burst_seconds: float = 0.0  # 0: steady traffic
    idle_gap: float = 0.0  # silence between bursts
    think_in_transaction: tuple[float, float] | None = None  # (min, max) seconds of a call mid-transaction
    # LEAK-005's fix, as code: the same slow call made before the transaction opens, not inside it
    think_outside_transaction: bool = False
    leak_every: float | None = None  # seconds between requests that never give their connection back
    request_deadline: float | None = None
    stats_interval: float = 1.0
    # The retry pool_snippets.RETRY_ADVICE offers: a request that met a broken connection
    # (OperationalError, not a PoolTimeout: a full pool is not helped by asking again) runs once more.
    retry_once: bool = False

    def __post_init__(self) -> None:
        self.log = app_logger(self.name, self.app_log)
        self.stats_log = stats_log_for(self.app_log) if self.app_log is not None else None
        self._stop = threading.Event()  # ends the traffic
        self._halt = threading.Event()  # ends the helpers, once no request is left in flight
        self._threads: list[threading.Thread] = []
        self._helpers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.requests_ok = 0
        self.requests_failed = 0
        self.deadline_aborts = 0
        self.retries = 0
        self.leaks = 0
        self.errors: list[str] = []
        self.held: list[psycopg.Connection[Any]] = []
        self._inflight: dict[int, _InFlight] = {}
        self._random = random.Random()
        self._started_at = 0.0
        self._next_leak = 0.0
        self._pool_handler: logging.Handler | None = None
        self.pool = ConnectionPool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            timeout=self.pool_timeout,
            kwargs={"application_name": self.name, **self.connect_kwargs},
            name=self.name,
            open=False,
            **self.pool_kwargs,
        )

    # -- life cycle ------------------------------------------------------------------------
    def start(self, *, wait: bool = True) -> Service:
        """Open the pool (waiting for its min_size when `wait`) and start serving."""
        self.open(wait=wait)
        return self.serve()

    def open(self, *, wait: bool = True) -> Service:
        """Open the pool without sending traffic yet: a scenario whose pools share a few slots opens them
        all first, so that one pool growing under load cannot take the slots another needs for its
        min_size."""
        self._attach_pool_log()
        self.pool.open(wait=wait, timeout=30)
        return self

    def serve(self) -> Service:
        """Start the workers (and the deadline and stats helpers) on an opened pool."""
        self._started_at = time.monotonic()
        if self.leak_every is not None:
            self._next_leak = self._started_at + self.leak_every
        self._spawn(self._threads, self._serve, *[f"{self.name}-{n}" for n in range(self.workers)])
        if self.request_deadline is not None:
            self._spawn(self._helpers, self._enforce_deadlines, f"{self.name}-deadline")
        if self.stats_log is not None:
            self._spawn(self._helpers, self._record_stats, f"{self.name}-stats")
        self.log.info(
            "service %s started: pool min_size=%s max_size=%s timeout=%s",
            self.name,
            self.min_size,
            self.max_size,
            self.pool_timeout,
        )
        return self

    @staticmethod
    def _spawn(into: list[threading.Thread], target: Callable[[], None], *names: str) -> None:
        for name in names:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            into.append(thread)

    def _attach_pool_log(self) -> None:
        """psycopg_pool's warnings about this pool go to the app log, as a service's logging config would."""
        if self.app_log is None:
            return
        handler = logging.FileHandler(self.app_log)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(_PoolRecords(self.name))
        logging.getLogger(POOL_LOGGER).addHandler(handler)
        self._pool_handler = handler

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)  # a hung request ends at its deadline: the watchdog still runs
        self._threads.clear()
        self._halt.set()
        for thread in self._helpers:
            thread.join(timeout=10)
        self._helpers.clear()
        for conn in self.held:
            try:
                conn.rollback()  # what the buggy code path should have done
                self.pool.putconn(conn)
            except Exception:  # the session may be gone already: that was the point
                conn.close()
        self.held.clear()
        self.pool.close(timeout=5)
        self._write_stats()
        self.log.info("service %s stopped: %s", self.name, self.stats())
        for handler in list(self.log.handlers):
            self.log.removeHandler(handler)
            handler.close()
        if self._pool_handler is not None:
            logging.getLogger(POOL_LOGGER).removeHandler(self._pool_handler)
            self._pool_handler.close()
            self._pool_handler = None

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests --------------------------------------------------------------------------
    def request(self) -> None:
        """One request: borrow, query, give back. Errors are logged as the driver words them; with
        `retry_once`, a request that met a broken connection is logged as retried and runs again."""
        try:
            self._request()
        except PoolTimeout as exc:
            self._failed(exc)
        except psycopg.OperationalError as exc:
            if not self.retry_once:
                self._failed(exc)
                return
            text = " ".join(f"{type(exc).__module__}.{type(exc).__name__}: {exc}".split())
            self.log.warning("request retried once after: %s", text)
            with self._lock:
                self.retries += 1
            try:
                self._request()
            except (PoolTimeout, psycopg.Error) as again:
                self._failed(again)
        except psycopg.Error as exc:
            self._failed(exc)

    def _request(self) -> None:
        with self.pool.connection() as conn, self._deadline(conn):
            if self.think_in_transaction is None:
                conn.execute(self.query).fetchall()
            else:
                # e.g. a payment provider called between two statements of one transaction
                low, high = self.think_in_transaction
                if self.think_outside_transaction:
                    self._stop.wait(self._random.uniform(low, high))
                with conn.transaction():
                    conn.execute(self.query).fetchall()
                    if not self.think_outside_transaction:
                        self._stop.wait(self._random.uniform(low, high))
                    conn.execute(self.query).fetchall()
        with self._lock:
            self.requests_ok += 1

    def _failed(self, exc: Exception) -> None:
        text = " ".join(f"{type(exc).__module__}.{type(exc).__name__}: {exc}".split())  # one line
        # The record first, the count after: whoever waits on the count finds the record written.
        self.log.error("request failed: %s", text)
        with self._lock:
            self.requests_failed += 1
            self.errors.append(text)

    def uptime(self) -> float:
        """Seconds since start()."""
        return time.monotonic() - self._started_at if self._started_at else 0.0

    def in_burst(self) -> bool:
        """Whether the traffic clock is in a burst (always, for steady traffic)."""
        if self.burst_seconds <= 0:
            return True
        period = self.burst_seconds + self.idle_gap
        return (time.monotonic() - self._started_at) % period < self.burst_seconds

    def _until_next_burst(self) -> float:
        period = self.burst_seconds + self.idle_gap
        return period - (time.monotonic() - self._started_at) % period

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.in_burst():
                self._stop.wait(self._until_next_burst())
                continue
            if self._leak_due():
                self._leaky_request()
            else:
                self.request()
            self._stop.wait(self.request_interval)

    # -- the leak ----------------------------------------------------------------------------
    def _leak_due(self) -> bool:
        if self.leak_every is None:
            return False
        with self._lock:
            if time.monotonic() < self._next_leak:
                return False
            self._next_leak += self.leak_every
            return True

    def _leaky_request(self) -> None:
        """The buggy code path: an early return skips putconn(); every other one leaves a transaction open."""
        try:
            self.leak_connection(in_transaction=self.leaks % 2 == 0)
        except (PoolTimeout, psycopg.Error) as exc:
            self._failed(exc)

    def leak_connection(self, *, in_transaction: bool = True) -> psycopg.Connection[Any]:
        """Check a connection out and never give it back; with a transaction left open, or just held."""
        conn = self.pool.getconn()
        if in_transaction:
            conn.execute("SELECT 1")  # psycopg opens a transaction: the session is now idle in transaction
        with self._lock:
            self.held.append(conn)
            self.leaks += 1
        return conn

    def leak_transaction(self) -> psycopg.Connection[Any]:
        """Check a connection out, open a transaction and never give it back: the classic leak."""
        return self.leak_connection(in_transaction=True)

    # -- the request deadline ----------------------------------------------------------------------
    @contextmanager
    def _deadline(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        if self.request_deadline is None:
            yield
            return
        key = threading.get_ident()
        with self._lock:
            self._inflight[key] = _InFlight(conn, time.monotonic())
        try:
            yield
        finally:
            with self._lock:  # the watchdog only touches a socket while its request is still here
                self._inflight.pop(key, None)

    def _enforce_deadlines(self) -> None:
        assert self.request_deadline is not None
        while not self._halt.wait(0.1):
            now = time.monotonic()
            with self._lock:
                for flight in self._inflight.values():
                    if flight.aborted or now - flight.started < self.request_deadline:
                        continue
                    flight.aborted = True
                    self.log.warning(
                        "request still waiting for the database after %.1f s: abandoning its connection",
                        now - flight.started,
                    )
                    self.deadline_aborts += 1  # after the record, as in _failed
                    _tear_down(flight.conn)

    # -- stats -------------------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = dict(self.pool.get_stats())
        with self._lock:
            stats.update(
                requests_ok=self.requests_ok,
                requests_failed=self.requests_failed,
                leaked=len(self.held),
                deadline_aborts=self.deadline_aborts,
                retries=self.retries,
            )
        return stats

    def _record_stats(self) -> None:
        while not self._halt.wait(self.stats_interval):
            self._write_stats()

    def _write_stats(self) -> None:
        if self.stats_log is None:
            return
        line = json.dumps(
            {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "service": self.name}
            | self.stats()
        )
        with self.stats_log.open("a") as out:  # one small write per line: services may share the file
            out.write(line + "\n")


def _tear_down(conn: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down under libpq's feet: its blocked read returns EOF."""
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError:
        return  # already closed
    try:
        sock = socket.socket(fileno=os.dup(fd))  # a duplicate: libpq keeps owning its descriptor
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def wait_for_requests(service: Service, count: int, timeout: float = 30) -> int:
    from playbook.lab.wait import wait_until

    return wait_until(
        lambda: service.requests_ok if service.requests_ok >= count else None,
        timeout=timeout,
        what=f"{count} successful requests of {service.name}",
    )

"""Real applications for the lab: psycopg_pool pools serving "requests" from worker threads.

Each service writes the application log a real service would (timestamps, the driver's own
exception text) and records its pool's get_stats(), so the playbook reads what it would read in
production, not a simulation of it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def app_logger(name: str, path: Path | None) -> logging.Logger:
    """A logger that writes like a service would: one line per event, the exception's own text."""
    logger = logging.getLogger(f"lab.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    return logger


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

    def __post_init__(self) -> None:
        self.log = app_logger(self.name, self.app_log)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.requests_ok = 0
        self.requests_failed = 0
        self.errors: list[str] = []
        self.held: list[psycopg.Connection[Any]] = []
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

    def start(self, *, wait: bool = True) -> Service:
        self.pool.open(wait=wait, timeout=30)
        for number in range(self.workers):
            thread = threading.Thread(target=self._serve, name=f"{self.name}-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.log.info(
            "service %s started: pool min_size=%s max_size=%s", self.name, self.min_size, self.max_size
        )
        return self

    def request(self) -> None:
        """One request: borrow, query, give back. Errors are logged as the driver words them."""
        try:
            with self.pool.connection() as conn:
                conn.execute(self.query).fetchall()
            self.requests_ok += 1
        except PoolTimeout as exc:
            self._failed(exc)
        except psycopg.Error as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.requests_failed += 1
        text = f"{type(exc).__module__}.{type(exc).__name__}: {exc}".replace("\n", " ")
        self.errors.append(text)
        self.log.error("request failed: %s", text)

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.request()
            self._stop.wait(self.request_interval)

    def leak_transaction(self) -> psycopg.Connection[Any]:
        """Check a connection out, open a transaction and never give it back: the classic leak."""
        conn = self.pool.getconn()
        conn.execute("SELECT 1")  # psycopg opens a transaction: the session is now idle in transaction
        self.held.append(conn)
        return conn

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = dict(self.pool.get_stats())
        stats.update(requests_ok=self.requests_ok, requests_failed=self.requests_failed)
        return stats

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        for conn in self.held:
            try:
                conn.rollback()  # what the buggy code path should have done
                self.pool.putconn(conn)
            except Exception:  # the session may be gone already: that was the point
                conn.close()
        self.held.clear()
        self.pool.close(timeout=5)
        self.log.info("service %s stopped: %s", self.name, self.stats())
        for handler in list(self.log.handlers):
            self.log.removeHandler(handler)
            handler.close()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_requests(service: Service, count: int, timeout: float = 30) -> int:
    from playbook.lab.wait import wait_until

    return wait_until(
        lambda: service.requests_ok if service.requests_ok >= count else None,
        timeout=timeout,
        what=f"{count} successful requests of {service.name}",
    )

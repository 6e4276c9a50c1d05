"""The client pools `playbook stress` drives, each configured and modelled as its library behaves.

What each library really does with an idle connection (read from the installed sources):

- psycopg_pool 3.3 (`ConnectionPool`): a ShrinkPool task runs every `max_idle` seconds and closes
  ONE unused connection, and only while the pool holds more than `min_size` (pool.py
  `_shrink_pool`): the min_size connections stay idle for ever. `max_lifetime` is checked when a
  connection is returned (`_return_connection`), never while it sits idle. `check=` tests a
  connection at checkout and replaces a dead one (it masks a cut, it does not prevent it).
- SQLAlchemy 2.1 `QueuePool`: no idle limit at all; up to `pool_size` connections stay idle for
  ever. `pool_recycle` is an age checked at checkout; `pool_pre_ping` tests at checkout. Both
  replace a dead connection before the application sees it (masking), neither stops the cut.
- asyncpg 0.32 `create_pool`: `max_inactive_connection_lifetime` closes a released connection
  idle that long, unless the pool is at or below `min_size` (pool.py
  `_deactivate_inactive_connection`: "a floor connection needs no further inactivity checks"); a
  connection closed under it is replaced in the background to keep the floor. No lifetime limit,
  no pre-ping (acquire only checks `is_closed()`).
- node-postgres 8 (`pg.Pool`, pg-pool 3.14): `idleTimeoutMillis` (default 10 s) ends an idle
  client only while the pool holds more than `min` (default 0); `maxLifetimeSeconds` is a timer
  from connect that ends the client when idle (or at its release). An idle client whose
  connection the server ends emits 'error' on the pool and is removed.

`PoolSettings.idle_bound_s()` says, from that model, how long the pool may keep a connection idle
(None: for ever), which is what a layer that cuts idle connections breaks against.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from playbook.errors import PlaybookError
from playbook.stress.workload import Phase, Recorder

PoolName = Literal["psycopg", "sqlalchemy", "asyncpg", "node-postgres"]
POOLS: tuple[PoolName, ...] = ("psycopg", "sqlalchemy", "asyncpg", "node-postgres")
# The library defaults, as their sources set them (seconds; None: no such limit).
DEFAULT_MAX_IDLE: dict[PoolName, float | None] = {
    "psycopg": 600.0,  # psycopg_pool ConnectionPool(max_idle=10 * 60)
    "sqlalchemy": None,  # QueuePool has none
    "asyncpg": 300.0,  # create_pool(max_inactive_connection_lifetime=300.0)
    "node-postgres": 10.0,  # pg-pool idleTimeoutMillis = 10000
}
DEFAULT_MAX_LIFETIME: dict[PoolName, float | None] = {
    "psycopg": 3600.0,  # ConnectionPool(max_lifetime=60 * 60)
    "sqlalchemy": None,  # pool_recycle=-1
    "asyncpg": None,  # no such setting
    "node-postgres": None,  # maxLifetimeSeconds = 0
}
# The setting's own name in each library, as the report and the YAML say it.
SETTING_NAMES: dict[PoolName, dict[str, str]] = {
    "psycopg": {
        "size": "max_size",
        "min_size": "min_size",
        "max_idle": "max_idle",
        "max_lifetime": "max_lifetime",
        "check": "check=ConnectionPool.check_connection",
    },
    "sqlalchemy": {
        "size": "pool_size (max_overflow=0)",
        "max_lifetime": "pool_recycle",
        "check": "pool_pre_ping=True",
    },
    "asyncpg": {"size": "max_size", "min_size": "min_size", "max_idle": "max_inactive_connection_lifetime"},
    "node-postgres": {
        "size": "max",
        "min_size": "min",
        "max_idle": "idleTimeoutMillis",
        "max_lifetime": "maxLifetimeSeconds",
    },
}
# What a library cannot do, in one sentence each (asked for anyway: bad input, exit 3).
UNSUPPORTED: dict[tuple[PoolName, str], str] = {
    ("sqlalchemy", "max_idle"): (
        "SQLAlchemy's QueuePool has no idle limit (pool_recycle, --max-lifetime, is its age limit, "
        "checked at checkout)"
    ),
    ("sqlalchemy", "min_size"): "SQLAlchemy's QueuePool has no min_size (pool_size idle connections stay)",
    ("asyncpg", "max_lifetime"): "asyncpg's pool has no lifetime limit (max_queries bounds reuse instead)",
    (
        "asyncpg",
        "check",
    ): "asyncpg's pool has no pre-ping: acquire() only checks whether a connection is closed",
    (
        "node-postgres",
        "check",
    ): "pg.Pool has no checkout test: an idle client's lost connection is an 'error' event",
}


@dataclass(frozen=True)
class PoolSettings:
    """One pool configuration. `size` is the most connections it opens; `min_size` None means the
    library's own default shape (psycopg_pool and asyncpg: a fixed pool, min = size; SQLAlchemy:
    pool_size; node-postgres: min 0). `max_idle`/`max_lifetime` None mean the library default."""

    pool: PoolName
    size: int = 4
    min_size: int | None = None
    max_idle: float | None = None
    max_lifetime: float | None = None
    check: bool = False
    pool_timeout: float = 5.0

    def effective_min(self) -> int:
        if self.min_size is not None:
            return self.min_size
        return 0 if self.pool == "node-postgres" else self.size

    def effective_max_idle(self) -> float | None:
        return self.max_idle if self.max_idle is not None else DEFAULT_MAX_IDLE[self.pool]

    def effective_max_lifetime(self) -> float | None:
        return self.max_lifetime if self.max_lifetime is not None else DEFAULT_MAX_LIFETIME[self.pool]

    def idle_bound_s(self) -> float | None:
        """How long this pool may keep a connection idle, from the library's model; None: for ever
        (connections it never closes while idle)."""
        idle, floor = self.effective_max_idle(), self.effective_min()
        if self.pool == "sqlalchemy" or idle is None or floor > 0:
            return None  # QueuePool and the min_size/min floor keep idle connections with no limit
        if self.pool == "psycopg":
            # one connection closed per max_idle period (and the period may just have begun): the
            # last of `size` idle ones goes within (size + 1) periods
            return idle * (self.size + 1)
        if self.pool == "node-postgres":
            life = self.effective_max_lifetime()
            return min(idle, life) if life else idle
        return idle

    def masks_cuts(self) -> bool:
        """Whether a dead connection is replaced before the application uses it (check=,
        pool_pre_ping, asyncpg's is_closed at acquire, pg.Pool's removal on 'error')."""
        return self.check or self.pool in ("asyncpg", "node-postgres")

    def described(self) -> dict[str, Any]:
        """The settings in force, with the library's names and defaults filled in."""
        return {
            **asdict(self),
            "effective_min_size": self.effective_min(),
            "effective_max_idle_s": self.effective_max_idle(),
            "effective_max_lifetime_s": self.effective_max_lifetime(),
            "idle_bound_s": self.idle_bound_s(),
            "names": SETTING_NAMES[self.pool],
        }


def expectation(settings: PoolSettings, idle_limits: dict[str, float]) -> dict[str, Any]:
    """What the library's model predicts against the idle limits in force, before anything runs:
    "breaks" when the pool may keep a connection idle as long as the shortest limit (masked when it
    replaces what was cut before a request uses it), else "holds"."""
    bound = settings.idle_bound_s()
    if not idle_limits:
        return {
            "expected": "holds",
            "masked": False,
            "idle_bound_s": bound,
            "sentence": "no idle limit is in force: nothing cuts an idle pooled connection",
        }
    name, limit = min(idle_limits.items(), key=lambda kv: kv[1])
    kept = "for ever (idle connections it never closes)" if bound is None else f"up to {bound:g} s"
    if bound is not None and bound < limit:
        return {
            "expected": "holds",
            "masked": False,
            "idle_bound_s": bound,
            "limit": name,
            "sentence": f"the pool keeps a connection idle {kept}, below {name} ({limit:g} s)",
        }
    masked = settings.masks_cuts()
    how = "replaced before a request uses it (masked)" if masked else "found by a request"
    return {
        "expected": "breaks",
        "masked": masked,
        "idle_bound_s": bound,
        "limit": name,
        "sentence": f"the pool keeps a connection idle {kept}, past {name} ({limit:g} s); a cut one is {how}",
    }


def validated(settings: PoolSettings) -> PoolSettings:
    """The settings, or a PlaybookError naming what the library cannot do or what is out of range."""
    asked = {
        "max_idle": settings.max_idle is not None,
        "max_lifetime": settings.max_lifetime is not None,
        "check": settings.check,
        "min_size": settings.min_size is not None,
    }
    for name, given in asked.items():
        reason = UNSUPPORTED.get((settings.pool, name))
        if given and reason:
            raise PlaybookError(f"{reason}: drop that setting for --pool {settings.pool}")
    if settings.size < 1:
        raise PlaybookError("--size must be at least 1")
    if settings.min_size is not None and not 0 <= settings.min_size <= settings.size:
        raise PlaybookError(f"min_size must be between 0 and --size ({settings.size})")
    for name, value in (("max_idle", settings.max_idle), ("max_lifetime", settings.max_lifetime)):
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise PlaybookError(f"{name} must be a positive number of seconds, not {value!r}")
    return settings


# -- the unit of work: read-only and bounded ------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """What each request runs: a read-only transaction holding one bounded pg_sleep."""

    sleep_s: float = 0.02
    statement_timeout_ms: int = 2000

    def statements(self) -> tuple[str, str]:
        """What a unit runs inside its READ ONLY transaction, the same text on every Python driver:
        its statement bound, then its sleep (far below that bound)."""
        return (
            f"SET LOCAL statement_timeout = {self.statement_timeout_ms}",
            f"SELECT pg_sleep({self.sleep_s:.3f})",
        )


@dataclass(frozen=True)
class Job:
    """Everything a runner needs: the pool's settings, where and as whom it connects (`app` is the
    sessions' application_name, `pooled` whether a pooler is in the way), the workers and the
    schedule they follow, the record they fill, the event that stops them, and the unit they run."""

    settings: PoolSettings
    dsn: str
    app: str
    pooled: bool
    workers: int
    phases: list[Phase]
    recorder: Recorder
    stop: threading.Event
    unit: Unit


def classify_exception(exc: BaseException) -> tuple[str | None, str]:
    """(SQLSTATE, one line of text) of a driver's exception, whatever library raised it."""
    code = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return (str(code) if code else None), f"{type(exc).__name__}: {text}"[:400]


def is_pool_timeout(exc: BaseException) -> bool:
    """The pool had no connection to hand out in time (psycopg_pool.PoolTimeout, SQLAlchemy's
    TimeoutError, asyncio's TimeoutError from asyncpg's acquire)."""
    name = type(exc).__name__
    return name in ("PoolTimeout", "TimeoutError") and "statement timeout" not in str(exc)


def _record_failure(recorder: Recorder, worker: int, started: float, exc: BaseException) -> None:
    """A failed unit as a result (report.py classifies it): its SQLSTATE and text, the backend pid
    the runner tagged it with (`_stress_pid`, 0 when no connection was out), whether it was a
    pool timeout."""
    code, text = classify_exception(exc)
    recorder.unit(
        worker,
        started,
        ok=False,
        pid=int(getattr(exc, "_stress_pid", 0) or 0),
        sqlstate=code,
        error=text,
        pool_timeout=is_pool_timeout(exc),
    )


# -- psycopg_pool and SQLAlchemy (threads) -------------------------------------------------------------


def _tracked_class(recorder: Recorder) -> Any:
    """A psycopg.Connection that tells the recorder when the pool closes it (and whether it was
    still usable then: a connection found dead is the server's or the path's doing)."""
    import psycopg

    class Tracked(psycopg.Connection[Any]):
        def close(self) -> None:
            pid = getattr(self, "_stress_pid", 0)
            usable = not self.closed and self.pgconn.status == psycopg.pq.ConnStatus.OK
            if pid:
                recorder.closed(pid, by_pool=usable)
            super().close()

    return Tracked


def psycopg_kwargs(application_name: str, pooled: bool) -> dict[str, Any]:
    """Connection arguments of the pools' sessions: named, autocommit (each unit opens its own
    READ ONLY transaction) and, through a pooler, no server-side prepared statements."""
    kwargs: dict[str, Any] = {"application_name": application_name, "autocommit": True}
    if pooled:
        kwargs["prepare_threshold"] = None
    return kwargs


def _opened_hook(recorder: Recorder) -> Callable[[Any], None]:
    """What a sync pool calls on each new psycopg connection: tag it with its backend pid (the
    Tracked close and the unit of work read it) and record the open."""

    def opened(conn: Any) -> None:
        conn._stress_pid = conn.info.backend_pid
        recorder.opened(conn.info.backend_pid)

    return opened


def _sync_unit(
    checkout: Callable[[], AbstractContextManager[Any]],
    session_of: Callable[[Any], tuple[int, Callable[[str], object]]],
    statements: tuple[str, ...],
    errors: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> tuple[float, int]:
    """One unit of work on a thread pool: check a connection out (`checkout()`, the pool's own
    context manager, which gives it back), take its backend pid and how to run SQL on it
    (`session_of`), run `statements` in order. Returns (seconds waited for the connection, pid).
    An `errors` exception carries that pid as `_stress_pid` (0 when none was out yet)."""
    asked, pid = time.monotonic(), 0
    try:
        with checkout() as conn:
            wait_s = time.monotonic() - asked
            pid, execute = session_of(conn)
            for statement in statements:
                execute(statement)
    except errors as exc:
        exc._stress_pid = pid  # type: ignore[attr-defined]
        raise
    return wait_s, pid


def _run_threads(workers: int, body: Callable[[int], None], stop: threading.Event) -> None:
    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # short joins: Ctrl-C reaches the main thread between them
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)


def _worker_loop(job: Job, worker: int, one_unit: Callable[[], tuple[float, int]]) -> None:
    """Each phase: units back to back until the burst ends, then idle until the phase ends."""
    recorder, stop = job.recorder, job.stop
    for phase in job.phases:
        while not stop.is_set() and recorder.now() < phase.burst_end:
            started = recorder.now()
            try:
                wait_s, pid = one_unit()
                recorder.unit(worker, started, ok=True, wait_s=wait_s, pid=pid)
            except Exception as exc:  # every driver error is a result here, classified by report.py
                _record_failure(recorder, worker, started, exc)
        if stop.wait(max(0.0, phase.end - recorder.now())):
            return


def _drive_threads(job: Job, one_unit: Callable[[], tuple[float, int]], close: Callable[[], None]) -> None:
    """Start the schedule's clock, run job.workers threads through it, then `close` the pool
    (whatever happened, Ctrl-C included)."""
    job.recorder.begin()
    try:
        _run_threads(job.workers, lambda i: _worker_loop(job, i, one_unit), job.stop)
    finally:
        close()


def run_psycopg(job: Job) -> None:
    from psycopg_pool import ConnectionPool

    # the pool's own warnings ("discarding closed connection") are counted, not printed
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    settings = job.settings
    pool = ConnectionPool(
        job.dsn,
        min_size=settings.effective_min(),
        max_size=settings.size,
        max_idle=settings.effective_max_idle() or 600.0,
        max_lifetime=settings.effective_max_lifetime() or 3600.0,
        check=ConnectionPool.check_connection if settings.check else None,
        timeout=settings.pool_timeout,
        kwargs=psycopg_kwargs(job.app, job.pooled),
        connection_class=_tracked_class(job.recorder),
        configure=_opened_hook(job.recorder),
        name="playbook-stress",
        open=False,
    )
    pool.open(wait=False)
    # autocommit sessions: the unit opens and commits its READ ONLY transaction itself
    statements = ("BEGIN READ ONLY", *job.unit.statements(), "COMMIT")

    def one() -> tuple[float, int]:
        return _sync_unit(
            pool.connection, lambda conn: (int(getattr(conn, "_stress_pid", 0)), conn.execute), statements
        )

    _drive_threads(job, one, lambda: pool.close(timeout=5))


def run_sqlalchemy(job: Job) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.pool import QueuePool

    tracked, opened = _tracked_class(job.recorder), _opened_hook(job.recorder)
    kwargs = {**psycopg_kwargs(job.app, job.pooled), "autocommit": False}

    def creator() -> Any:
        conn = tracked.connect(job.dsn, **kwargs)
        opened(conn)
        return conn

    settings = job.settings
    engine = create_engine(
        "postgresql+psycopg://",
        creator=creator,
        poolclass=QueuePool,
        pool_size=settings.size,
        max_overflow=0,
        pool_timeout=settings.pool_timeout,
        pool_recycle=int(math.ceil(settings.max_lifetime)) if settings.max_lifetime else -1,
        pool_pre_ping=settings.check,
    )
    # engine.begin() opens the transaction and commits it on the way out
    statements = ("SET TRANSACTION READ ONLY", *job.unit.statements())

    def session_of(conn: Any) -> tuple[int, Callable[[str], object]]:
        return int(getattr(conn.connection.driver_connection, "_stress_pid", 0)), conn.exec_driver_sql

    def one() -> tuple[float, int]:
        return _sync_unit(engine.begin, session_of, statements, sa_exc.SQLAlchemyError)

    _drive_threads(job, one, engine.dispose)


# -- asyncpg (one event loop) ---------------------------------------------------------------------------


def asyncpg_connect_args(dsn: str) -> dict[str, Any]:
    """asyncpg's keyword arguments for a libpq DSN (asyncpg reads URIs, not key=value strings)."""
    import psycopg

    params = psycopg.conninfo.conninfo_to_dict(dsn)
    args: dict[str, Any] = {}
    for libpq, ours in (
        ("host", "host"),
        ("user", "user"),
        ("dbname", "database"),
        ("password", "password"),
        ("passfile", "passfile"),
    ):
        if params.get(libpq):
            args[ours] = str(params[libpq])
    if params.get("port"):
        args["port"] = int(str(params["port"]))
    if params.get("sslmode"):
        args["ssl"] = str(params["sslmode"])
    if params.get("connect_timeout"):
        args["timeout"] = float(str(params["connect_timeout"]))
    return args


def _asyncpg_tracked_class(recorder: Recorder) -> Any:
    """An asyncpg.Connection that tells the recorder when the pool closes or terminates it (and
    whether it was still open then)."""
    import asyncpg

    class Tracked(asyncpg.Connection):
        async def close(self, *, timeout: float | None = None) -> None:
            recorder.closed(self.get_server_pid(), by_pool=not self.is_closed())
            await super().close(timeout=timeout)

        def terminate(self) -> None:
            recorder.closed(self.get_server_pid(), by_pool=not self.is_closed())
            super().terminate()

    return Tracked


async def _asyncpg_pool(job: Job) -> Any:
    """The asyncpg pool of the job's settings, its connections tracked and their opens recorded."""
    import asyncpg

    async def init(conn: Any) -> None:
        job.recorder.opened(conn.get_server_pid())

    return await asyncpg.create_pool(
        **asyncpg_connect_args(job.dsn),
        min_size=job.settings.effective_min(),
        max_size=job.settings.size,
        max_inactive_connection_lifetime=job.settings.effective_max_idle() or 0.0,
        connection_class=_asyncpg_tracked_class(job.recorder),
        init=init,
        server_settings={"application_name": job.app},
        statement_cache_size=0 if job.pooled else 100,
    )


async def _asyncpg_unit(job: Job, pool: Any) -> tuple[float, int]:
    """One unit of work on the asyncpg pool: (seconds waited for the connection, its backend pid);
    an error raised once the connection is out carries that pid as `_stress_pid`."""
    asked = time.monotonic()
    async with pool.acquire(timeout=job.settings.pool_timeout) as conn:
        wait_s, pid = time.monotonic() - asked, conn.get_server_pid()
        try:
            async with conn.transaction(readonly=True):
                for statement in job.unit.statements():
                    await conn.execute(statement)
        except Exception as exc:
            exc._stress_pid = pid  # type: ignore[attr-defined]
            raise
    return wait_s, pid


async def _asyncpg_worker(job: Job, pool: Any, worker: int) -> None:
    """_worker_loop on the event loop: units through each burst, then idle to the phase's end."""
    recorder, stop = job.recorder, job.stop
    for phase in job.phases:
        while not stop.is_set() and recorder.now() < phase.burst_end:
            started = recorder.now()
            try:
                wait_s, pid = await _asyncpg_unit(job, pool)
                recorder.unit(worker, started, ok=True, wait_s=wait_s, pid=pid)
            except Exception as exc:  # a result, classified by report.py
                _record_failure(recorder, worker, started, exc)
        while not stop.is_set() and recorder.now() < phase.end:
            await asyncio.sleep(min(0.1, max(0.0, phase.end - recorder.now())))
        if stop.is_set():
            return


async def _asyncpg_main(job: Job) -> None:
    """Build the pool, start the schedule's clock, run every worker, close the pool (5 s at most)."""
    pool = await _asyncpg_pool(job)
    job.recorder.begin()
    try:
        await asyncio.gather(*(_asyncpg_worker(job, pool, i) for i in range(job.workers)))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 5)


def run_asyncpg(job: Job) -> None:
    try:
        asyncio.run(_asyncpg_main(job))
    finally:
        job.stop.set()


# -- node-postgres (a node process running pg_stress.js) ------------------------------------------------

NODE_SCRIPT = Path(__file__).with_name("pg_stress.js")
NODE_MODULES = Path(__file__).resolve().parents[1] / "lab" / "prisma_app" / "node_modules"


def node_unavailable() -> str | None:
    """Why node-postgres cannot run here, in one sentence; None when it can."""
    if shutil.which("node") is None:
        return "node-postgres needs node, which is not on PATH here"
    if not (NODE_MODULES / "pg").is_dir():
        return f"node-postgres needs the `pg` package in {NODE_MODULES} (make install puts it there)"
    return None


def node_connection(dsn: str) -> tuple[dict[str, Any], dict[str, str]]:
    """pg.Pool's connection options and the environment it needs for a libpq DSN (the passfile
    travels as PGPASSFILE, which pg reads through its pgpass module)."""
    import psycopg

    params = psycopg.conninfo.conninfo_to_dict(dsn)
    options: dict[str, Any] = {}
    for libpq, ours in (("host", "host"), ("user", "user"), ("dbname", "database"), ("password", "password")):
        if params.get(libpq):
            options[ours] = str(params[libpq])
    if params.get("port"):
        options["port"] = int(str(params["port"]))
    if str(params.get("sslmode", "prefer")) not in ("disable", "allow", "prefer"):
        options["ssl"] = {"rejectUnauthorized": str(params["sslmode"]) in ("verify-ca", "verify-full")}
    env = {"PGPASSFILE": str(params["passfile"])} if params.get("passfile") else {}
    return options, env


def run_node(job: Job) -> None:
    reason = node_unavailable()
    if reason:
        raise PlaybookError(reason)
    settings, recorder, stop, unit = job.settings, job.recorder, job.stop, job.unit
    options, env = node_connection(job.dsn)
    idle = settings.effective_max_idle()
    config = {
        "connection": {**options, "application_name": job.app},
        "pool": {
            "max": settings.size,
            "min": settings.effective_min(),
            "idleTimeoutMillis": int(idle * 1000) if idle else 0,
            "maxLifetimeSeconds": int(settings.max_lifetime or 0),
            "connectionTimeoutMillis": int(settings.pool_timeout * 1000),
        },
        "workers": job.workers,
        "phases": [asdict(p) for p in job.phases],
        "sleep_s": unit.sleep_s,
        "statement_timeout_ms": unit.statement_timeout_ms,
    }
    process = subprocess.Popen(
        ["node", str(NODE_SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env, "NODE_PATH": str(NODE_MODULES)},
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(config))
    process.stdin.close()
    reader = threading.Thread(target=_read_node, args=(process.stdout, recorder), daemon=True)
    reader.start()
    try:
        while process.poll() is None:
            if stop.wait(0.2):
                process.terminate()  # the script closes its pool on SIGTERM
                break
        process.wait(15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        reader.join(5)
    if process.returncode not in (0, None, -15) and not stop.is_set():
        detail = (process.stderr.read() if process.stderr else "").strip().splitlines()
        raise PlaybookError(
            f"the node-postgres workload failed: {detail[-1] if detail else process.returncode}"
        )


def _read_node(lines: Iterator[str], recorder: Recorder) -> None:
    """The node script's JSON lines, as recorder calls (times are its epoch ms)."""
    for line in lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            event = json.loads(line)
            kind = event["ev"]
            at = event["at_ms"] / 1000 - (event["at_ms"] / 1000 if kind == "ready" else recorder.start_epoch)
            if kind == "ready":  # the script's pool exists: the schedule's clock starts now
                recorder.begin(event["at_ms"] / 1000)
            elif kind == "open":
                recorder.opened(int(event["pid"]), at=at)
            elif kind == "close":
                recorder.closed(
                    int(event["pid"]),
                    by_pool=bool(event["by_pool"]),
                    at=at,
                    error=event.get("error"),
                    sqlstate=event.get("code"),
                )
            elif kind == "unit":
                recorder.unit(
                    int(event["worker"]),
                    event["started_ms"] / 1000 - recorder.start_epoch,
                    ok=bool(event["ok"]),
                    wait_s=event.get("wait_s"),
                    pid=int(event.get("pid") or 0),
                    sqlstate=event.get("code"),
                    error=event.get("error"),
                    pool_timeout=bool(event.get("pool_timeout")),
                    ended=at,
                )


RUNNERS: dict[PoolName, Callable[[Job], None]] = {
    "psycopg": run_psycopg,
    "sqlalchemy": run_sqlalchemy,
    "asyncpg": run_asyncpg,
    "node-postgres": run_node,
}

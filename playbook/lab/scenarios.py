"""Scenarios: each root cause made to happen for real on a lab server, and kept happening.

`start_scenario(name, server, workdir)` applies the scenario's server settings (restored by
stop()), starts the chaos proxy where the application goes through one, the workloads and any
fault injector, and returns a RunningScenario: what to investigate with (the monitor role's DSN,
the server log, the application log) and `signature_seen()`, which turns True once the
scenario's evidence appeared. Every incident keeps recurring for as long as the scenario runs,
so a `playbook run` started a second or two later observes it within its window.

Fault injection refuses any server the lab did not start itself: the LabServer must run from its
own data directory, answering on its own port (checked through `data_directory` on the server).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import psycopg

from playbook.errors import PlaybookError
from playbook.lab.fixes import ScenarioFix, undo_statement
from playbook.lab.pgbouncer_process import PgBouncer
from playbook.lab.prisma import PrismaService, prepare_database
from playbook.lab.prisma import unavailable as prisma_unavailable
from playbook.lab.proxy import ChaosProxy
from playbook.lab.server import APP_ROLE, LAB_DATABASE, MONITOR_ROLE, LabServer
from playbook.lab.workloads import Service, app_logger, stats_log_for
from playbook.vocabulary.categories import Category

# Server log wordings the signatures look for (English lc_messages, which the lab sets).
IDLE_SESSION_FATAL = "terminating connection due to idle-session timeout"
IDLE_IN_XACT_FATAL = "terminating connection due to idle-in-transaction timeout"
ADMIN_FATAL = "terminating connection due to administrator command"
TOO_MANY = re.compile(r"sorry, too many clients already|remaining connection slots are reserved")
CRASHED = re.compile(r"\(PID \d+\) was terminated by signal 9")  # "server process" before 18
READY = "database system is ready to accept connections"
CLIENT_RESET = re.compile(r"could not receive data from client: Connection reset by peer")
TERMINATING_FATAL = re.compile(r"FATAL:\s+terminating connection")


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    expected_category: Category | None  # None: no incident expected (healthy, keepalives that survive)
    summary: str
    needs: str | None = None  # what else it runs on: "prisma" (node and the lab's npm packages)


def unavailable(name: str) -> str | None:
    """Why scenario `name` cannot run on this machine, in one sentence; None when it can."""
    spec = SCENARIOS.get(name)
    if spec is not None and spec.needs == "prisma":
        reason = prisma_unavailable()
        return f"{name} needs the Prisma 7 workload, which cannot run here: {reason}" if reason else None
    return None


SCENARIOS: dict[str, ScenarioSpec] = {
    spec.name: spec
    for spec in [
        ScenarioSpec(
            "healthy",
            None,
            "a steady service with a right-sized pool and no faults: the playbook should find nothing",
        ),
        ScenarioSpec(
            "leak",
            "leak",
            "billing checks a connection out every second and never returns it, half of them idle in "
            "transaction: its connection count only grows; the playbook should blame a leak",
        ),
        ScenarioSpec(
            "idle_session_timeout",
            "timeout",
            "idle_session_timeout=2s and a bursty pool idle 3 s between bursts: the server keeps killing "
            "pooled sessions (57P05) and search logs the errors; the playbook should blame the timeout",
        ),
        ScenarioSpec(
            "idle_in_transaction_timeout",
            "leak",
            "idle_in_transaction_session_timeout=1s and checkout calling a slow provider mid-transaction "
            "for 0.4-1.6 s: about half its requests die with 25P03; the playbook should blame the code "
            "that holds the transaction open (leak), with the timeout as the mechanism",
        ),
        ScenarioSpec(
            "too_many_connections",
            "pool_config",
            "max_connections=20 with 3+4 reserved slots leaves 13, three pools of up to 6 want 18: "
            "53300 refusals and PoolTimeouts; the playbook should blame the pool sizing",
        ),
        ScenarioSpec(
            "reset_path",
            "network",
            "profile goes through a path that resets flows idle 2 s, its pool idles 3 s between bursts: "
            "connections reset by peer on both sides; the playbook should blame the network",
        ),
        ScenarioSpec(
            "nat_drop",
            "network",
            "ledger goes through a NAT that silently drops flows idle 2 s, without keepalives: requests "
            "hang until ledger's 1.5 s deadline, then fail; the playbook should blame the network",
        ),
        ScenarioSpec(
            "nat_drop_keepalive",
            None,
            "the same NAT and traffic, but libpq keepalives every second keep the flows alive: no errors, "
            "and the playbook should find no incident",
        ),
        ScenarioSpec(
            "admin_terminate",
            "server",
            "an ops job (idle-reaper) terminates lab_app backends idle over 2 s every second while reports "
            "idles 4 s between bursts: 57P01 kills and app errors; the playbook should blame the reaper",
        ),
        ScenarioSpec(
            "server_restart",
            "server",
            "the server is restarted 2 s in and then every 8 s under a steady service: every session ends "
            "with 57P01, reconnects fail while it is down; the playbook should blame the restarts",
        ),
        ScenarioSpec(
            "backend_crash",
            "server",
            "one backend of orders is killed with kill -9 2 s in and then every 8 s: the postmaster ends "
            "every session and reinitializes; the playbook should blame the crashes",
        ),
        ScenarioSpec(
            "pgbouncer_idle_timeout",
            "timeout",
            "search goes through PgBouncer (transaction mode) with client_idle_timeout=2s and its pool "
            "idles 3 s between bursts, unaware of the pooler's limit: PgBouncer closes the pooled "
            "connections and search logs the errors; the playbook should blame the pooler's timeout",
        ),
        ScenarioSpec(
            "prisma_forgotten_flow",
            "network",
            "shop, a Prisma 7 service (@prisma/adapter-pg over pg.Pool), goes through a hop that forgets "
            "flows idle 2 s and answers the next packet with RST, as AWS's NLB and NAT gateway do; "
            'pg.Pool keeps idle clients 10 s and shop idles 3 s between bursts: P1017 "Server has '
            'closed the connection." (DriverAdapterError: ConnectionClosed); the playbook should blame '
            "the network",
            needs="prisma",
        ),
        ScenarioSpec(
            "prisma_pool_exhausted",
            "pool_config",
            "shop, a Prisma 7 service, sends 6 concurrent 0.5 s requests through a pg.Pool of max 2 with "
            "connectionTimeoutMillis=1000, every other one an interactive transaction with maxWait 800 ms: "
            'P2028 "Unable to start a transaction in the given time" and node-postgres\' "timeout '
            'exceeded when trying to connect"; the playbook should blame the pool sizing',
            needs="prisma",
        ),
        ScenarioSpec(
            "pgbouncer_saturation",
            "pool_config",
            "orders sends 8 concurrent 0.5 s queries through PgBouncer in transaction mode with "
            "default_pool_size=2 and query_wait_timeout=1s: clients queue (cl_waiting) and the ones that "
            "wait too long fail; the playbook should blame the pool sizing",
        ),
    ]
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def require_lab_server(server: LabServer) -> None:
    """Refuse, in one sentence, any server this LabServer did not start itself."""
    try:
        port = server.port
    except PlaybookError:
        raise PlaybookError(
            f"fault injection runs only against a lab server, and {server.base_dir} holds none"
        ) from None
    if not server.owns(server.dsn()):
        raise PlaybookError(
            f"fault injection runs only against a running lab server, and the one in {server.base_dir} "
            "is not running (start it with `playbook lab up`)"
        )
    try:
        with server.admin() as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    except psycopg.Error:
        row = None
    if row is None or Path(str(row[0])).resolve() != server.data_dir.resolve():
        raise PlaybookError(
            f"fault injection refuses the server on 127.0.0.1:{port}: it is not the one the lab "
            f"started from {server.data_dir}"
        )


class RunningScenario:
    """A scenario while it runs; stop() (or leaving the `with` block) ends everything it started."""

    def __init__(
        self, spec: ScenarioSpec, server: LabServer, workdir: Path, fix: ScenarioFix | None = None
    ) -> None:
        self.spec = spec
        self.fix = fix or ScenarioFix()  # a finding's fix applied to the applications (lab/fixes.py)
        self.server = server
        self.workdir = workdir
        self.server_log = server.stderr_log
        self.structured_log = server.structured_log
        self.app_log = workdir / "app.log"
        self.pool_stats_log = stats_log_for(self.app_log)
        self.dsn = server.dsn(MONITOR_ROLE)
        self.started_at = _now()
        self.services: list[Service | PrismaService] = []
        self.proxy: ChaosProxy | None = None
        self.extra_logs: list[Path] = []  # e.g. the ops job's own log
        self.pgbouncer: PgBouncer | None = None  # scenarios with PgBouncer between the app and the server
        self._pgbouncer_log_from = 0
        self._server_log_from = _size(self.server_log)
        self._app_log_from = _size(self.app_log)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cleanups: list[tuple[str, Callable[[], None]]] = []
        self._events: list[dict[str, Any]] = []
        self._events_lock = threading.Lock()
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._signature: Callable[[], bool] = lambda: False
        self._started_mono = time.monotonic()

    # -- what the caller reads ---------------------------------------------------------------------
    def signature_seen(self) -> bool:
        """True once the scenario's evidence appeared (for healthy ones: once health was shown)."""
        return self._signature()

    def stats(self) -> dict[str, Any]:
        """Pool stats per service, proxy counters, and what was injected when."""
        with self._events_lock:
            events = list(self._events)
        proxy = None
        if self.proxy is not None:
            proxy = self.proxy.stats()
            proxy.pop("flows", None)
        return {
            "scenario": self.spec.name,
            "started_at": self.started_at,
            "services": {s.name: s.stats() for s in self.services},
            "proxy": proxy,
            "injected": events,
        }

    def server_log_text(self) -> str:
        """What the server logged since the scenario started."""
        return _read_from(self.server_log, self._server_log_from)

    def app_log_text(self) -> str:
        """What the application logged since the scenario started."""
        return _read_from(self.app_log, self._app_log_from)

    def pgbouncer_log_text(self) -> str:
        """What PgBouncer logged since the scenario started it ("" without PgBouncer)."""
        if self.pgbouncer is None:
            return ""
        return _read_from(self.pgbouncer.log_file, self._pgbouncer_log_from)

    def app_errors(self) -> int:
        return sum(s.requests_failed for s in self.services)

    def elapsed(self) -> float:
        return time.monotonic() - self._started_mono

    # -- building blocks for the scenario definitions ------------------------------------------------
    def record(self, what: str, **details: Any) -> None:
        with self._events_lock:
            self._events.append({"at": _now(), "what": what, **details})

    def on_stop(self, what: str, action: Callable[[], None]) -> None:
        self._cleanups.append((what, action))

    def apply_settings(self, settings: dict[str, str | int], *, restart: bool = False) -> None:
        """ALTER SYSTEM the scenario's settings; stop() puts back what postgresql.auto.conf had."""
        with self.server.admin() as conn:
            rows = conn.execute(
                "SELECT name, setting FROM pg_file_settings "
                "WHERE sourcefile LIKE '%postgresql.auto.conf' ORDER BY seqno"
            ).fetchall()
        before = {str(name): str(value) for name, value in rows}
        previous: dict[str, str | int | None] = {name: before.get(name) for name in settings}

        def restore() -> None:
            self.server.alter_system(previous)
            if restart:
                self.server.restart()

        self.on_stop(f"restore {', '.join(settings)}", restore)
        self.server.alter_system(dict(settings))
        if restart:
            self.server.restart()
            self._server_log_from = _size(self.server_log)  # the set-up restart is not the incident
        self.record("settings", values={k: str(v) for k, v in settings.items()}, restart=restart)

    def start_proxy(self) -> ChaosProxy:
        proxy = ChaosProxy("127.0.0.1", self.server.port)
        proxy.start()
        self.proxy = proxy
        self.on_stop("stop the proxy", proxy.stop)
        self.dsn = proxy.dsn_for(self.server.dsn(MONITOR_ROLE))
        return proxy

    def start_pgbouncer(self, settings: dict[str, str | int | float]) -> PgBouncer:
        """PgBouncer of the scenario's own in front of the lab server (stopped by stop())."""
        settings = {**settings, **self.fix.pgbouncer}
        bouncer = PgBouncer(self.workdir / "pgbouncer", self.server, settings)
        bouncer.start()
        self.pgbouncer = bouncer
        self._pgbouncer_log_from = _size(bouncer.log_file)
        self.on_stop("stop PgBouncer", bouncer.stop)
        self.record("pgbouncer", version=bouncer.version, port=bouncer.port, settings=dict(settings))
        return bouncer

    def _app_dsn(self, options: dict[str, Any]) -> str:
        """Where an application connects by default: the server, or, when the fix puts a PgBouncer
        in front of a scenario that has none (POOL-002's), that PgBouncer, with psycopg's prepared
        statements off as transaction pooling needs."""
        if not self.fix.pgbouncer:  # (scenarios with a PgBouncer of their own pass its DSN)
            return self.server.dsn(APP_ROLE)
        bouncer = self.pgbouncer or self.start_pgbouncer({})
        options["connect_kwargs"] = {"prepare_threshold": None, **options.get("connect_kwargs", {})}
        return bouncer.dsn()

    def add_service(self, name: str, dsn: str | None = None, *, wait: bool = True, **options: Any) -> Service:
        options = self.fix.service_options(options)
        dsn = dsn or self._app_dsn(options)
        service = Service(dsn, name, app_log=self.app_log, **options)
        self.services.append(service)
        service.start(wait=wait)
        return service

    def add_prisma_service(self, name: str, dsn: str | None = None, **options: Any) -> PrismaService:
        """The Prisma 7 workload (playbook/lab/prisma.py), its table created first on the lab server."""
        prepare_database(self.server.dsn(APP_ROLE))
        options = {**options, **self.fix.prisma}
        service = PrismaService(dsn or self.server.dsn(APP_ROLE), name, self.app_log, **options)
        self.services.append(service)
        service.start()
        self.record("prisma", service=name, options={k: str(v) for k, v in options.items()})
        return service

    def add_services(self, names: Sequence[str], **options: Any) -> list[Service]:
        """Services alike but for their names, whose pools all reach min_size before any serves: on a
        server with few slots, the first pool to serve grows and would otherwise starve the next one's
        opening (it failed CI that way: "pool initialization incomplete after 30 sec")."""
        options = self.fix.service_options(options)
        dsn = self._app_dsn(options)
        services = [Service(dsn, name, app_log=self.app_log, **options) for name in names]
        for service in services:
            self.services.append(service)
            service.open()
        for service in services:
            service.serve()
        return services

    def every(self, what: str, first: float, interval: float, action: Callable[[], dict[str, Any]]) -> None:
        """Inject a fault `first` seconds in and then every `interval` seconds until stop()."""

        def loop() -> None:
            delay = first
            while not self._stop.wait(delay):
                try:
                    self.record(what, **action())
                except Exception as exc:  # the patient is sick; log it and try again next time
                    self.record(f"{what} failed", error=str(exc).splitlines()[0] if str(exc) else repr(exc))
                delay = interval

        thread = threading.Thread(target=loop, name=f"scenario-{self.spec.name}-{what}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def thread(self, name: str, target: Callable[[threading.Event], None]) -> None:
        """A helper thread that runs until stop() sets the event it is given."""
        thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def set_signature(self, check: Callable[[], bool]) -> None:
        self._signature = check

    def apply_fix_sql(self) -> None:
        """Run the fix's statements on the server (before any workload starts); stop() undoes each."""
        if not self.fix.sql:
            return
        undo = [u for u in (undo_statement(s) for s in self.fix.sql) if u is not None]

        def restore() -> None:
            with self.server.admin(LAB_DATABASE) as conn:
                for statement in undo:
                    conn.execute(statement)
                conn.execute("SELECT pg_reload_conf()")

        self.on_stop("undo the fix's SQL", restore)
        with self.server.admin(LAB_DATABASE) as conn:
            for statement in self.fix.sql:
                conn.execute(statement)
        self.record("fix sql", statements=list(self.fix.sql))

    # -- ending ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop injectors, workloads and the proxy, and restore the settings; safe to call twice."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self._stop.set()
            errors: list[str] = []
            for thread in self._threads:
                thread.join(timeout=90)  # an injector may be mid-restart; let it finish
            for service in self.services:
                try:
                    service.stop()
                except Exception as exc:
                    errors.append(f"stopping {service.name}: {exc}")
            for what, action in reversed(self._cleanups):
                try:
                    action()
                except Exception as exc:
                    errors.append(f"{what}: {exc}")
            self.record("stopped", errors=errors)
            if errors:
                raise PlaybookError(
                    f"the scenario {self.spec.name} did not stop cleanly: {'; '.join(errors)}"
                )

    def __enter__(self) -> RunningScenario:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


# -- the scenarios ----------------------------------------------------------------------------------
# Short timeouts and small pools make incidents happen within seconds; bursts are on one clock.
BURST: dict[str, Any] = {"burst_seconds": 1.0, "idle_gap": 3.0, "request_interval": 0.05}
LONG_GAPS: dict[str, Any] = {"burst_seconds": 1.0, "idle_gap": 4.0, "request_interval": 0.05}


def _healthy(run: RunningScenario) -> None:
    catalog = run.add_service("catalog", workers=3, min_size=3, max_size=4, pool_timeout=5.0)
    run.set_signature(lambda: catalog.requests_ok >= 20 and run.app_errors() == 0)


def _leak(run: RunningScenario) -> None:
    # max_size leaves room for ~25 s of growth before PoolTimeouts join in
    billing = run.add_service(
        "billing", workers=3, min_size=2, max_size=30, pool_timeout=2.0, request_interval=0.1, leak_every=1.0
    )

    def seen() -> bool:
        if len(billing.held) < 3:
            return False
        with run.server.admin() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'billing' "
                "AND state = 'idle in transaction'"
            ).fetchone()
        return row is not None and int(row[0]) >= 2

    run.set_signature(seen)


def _idle_session_timeout(run: RunningScenario) -> None:
    run.apply_settings({"idle_session_timeout": "2s"})
    search = run.add_service("search", workers=2, min_size=2, max_size=4, pool_timeout=3.0, **BURST)
    run.set_signature(lambda: IDLE_SESSION_FATAL in run.server_log_text() and search.requests_failed > 0)


def _idle_in_transaction_timeout(run: RunningScenario) -> None:
    run.apply_settings({"idle_in_transaction_session_timeout": "1s"})
    checkout = run.add_service(
        "checkout",
        workers=3,
        min_size=3,
        max_size=4,
        pool_timeout=3.0,
        request_interval=0.2,
        think_in_transaction=(0.4, 1.6),
    )
    run.set_signature(lambda: IDLE_IN_XACT_FATAL in run.server_log_text() and checkout.requests_failed > 0)


def _too_many_connections(run: RunningScenario) -> None:
    # 20 - 3 superuser - 4 pg_use_reserved_connections = 13 slots for the applications. The reserved
    # band is what lets the playbook's monitor role in while the pools hold every other slot.
    run.apply_settings(
        {"max_connections": 20, "superuser_reserved_connections": 3, "reserved_connections": 4}, restart=True
    )
    with run.server.admin() as conn:
        member = conn.execute(
            "SELECT pg_has_role(%s, 'pg_use_reserved_connections', 'MEMBER')", [MONITOR_ROLE]
        ).fetchone()
        if not (member and member[0]):
            conn.execute(f"GRANT pg_use_reserved_connections TO {MONITOR_ROLE}")

            def revoke() -> None:
                with run.server.admin() as admin:
                    admin.execute(f"REVOKE pg_use_reserved_connections FROM {MONITOR_ROLE}")

            run.on_stop("revoke pg_use_reserved_connections", revoke)
    # 30 workers holding a connection 1 s each want 30 connections; 13 slots shared by pools of at most 6
    # leave some pool with at most 4 for its 10 workers, whose requests then wait ~1.5 s > its 1 s timeout.
    # A failed grow attempt gives up after reconnect_timeout, so the next waiting request tries again.
    pool_kwargs = {"reconnect_timeout": 2.0}
    run.add_services(
        ("orders", "inventory", "notifications"),
        workers=10,
        min_size=2,
        max_size=6,
        pool_timeout=1.0,
        request_interval=0.02,
        query="SELECT pg_sleep(1.0)",
        pool_kwargs=pool_kwargs,
    )

    def seen() -> bool:
        # The services' own failures, not the pool's counter: the pool counts a timeout before it
        # raises, the service only once the application has logged it.
        timeouts = any("PoolTimeout" in error for s in run.services for error in list(s.errors))
        return bool(TOO_MANY.search(run.server_log_text())) and timeouts

    run.set_signature(seen)


def _reset_path(run: RunningScenario) -> None:
    proxy = run.start_proxy()
    proxy.reset_idle_after(2.0)
    run.record("proxy", reset_idle_after_s=2.0)
    profile = run.add_service(
        "profile", proxy.dsn_for(run.server.dsn(APP_ROLE)), workers=2, min_size=2, max_size=4, **BURST
    )
    run.set_signature(lambda: proxy.stats()["idle_resets"] > 0 and profile.requests_failed > 0)


KEEPALIVES = {"keepalives": 1, "keepalives_idle": 1, "keepalives_interval": 1, "keepalives_count": 3}


def _nat(run: RunningScenario, *, keepalives: bool) -> None:
    proxy = run.start_proxy()
    proxy.drop_idle_after(2.0)
    run.record("proxy", drop_idle_after_s=2.0, client_keepalives=keepalives)
    ledger = run.add_service(
        "ledger",
        proxy.dsn_for(run.server.dsn(APP_ROLE)),
        workers=2,
        min_size=2,
        max_size=4,
        pool_timeout=3.0,
        request_deadline=1.5,
        connect_kwargs=dict(KEEPALIVES) if keepalives else {},
        **LONG_GAPS,
    )
    if keepalives:
        # Survival: a burst after an idle gap longer than the NAT's limit went through untouched.
        period = LONG_GAPS["burst_seconds"] + LONG_GAPS["idle_gap"]
        run.set_signature(
            lambda: (
                ledger.uptime() > period + 1.0
                and proxy.stats()["drops"] == 0
                and ledger.requests_failed == 0
                and ledger.requests_ok > 0
            )
        )
    else:
        run.set_signature(
            lambda: proxy.stats()["drops"] > 0 and ledger.deadline_aborts > 0 and ledger.requests_failed > 0
        )


def _admin_terminate(run: RunningScenario) -> None:
    # The reaper runs as an ops role that may see every session and signal non-superuser ones.
    ops_dsn = run.server.create_role("lab_ops")
    with run.server.admin() as conn:
        conn.execute("GRANT pg_signal_backend, pg_read_all_stats TO lab_ops")
    # idle 4 s between bursts: every gap spans at least two reaper passes past the 2 s threshold
    reports = run.add_service("reports", workers=2, min_size=2, max_size=4, **LONG_GAPS)
    reaper_log = run.workdir / "idle-reaper.log"
    run.extra_logs.append(reaper_log)
    reaped: list[int] = []

    def reaper(stop: threading.Event) -> None:
        log = app_logger("idle-reaper", reaper_log)
        conn: psycopg.Connection[Any] | None = None
        try:
            while not stop.wait(1.0):
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(ops_dsn, autocommit=True, application_name="idle-reaper")
                    rows = conn.execute(
                        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE usename = %s AND state = 'idle' AND backend_type = 'client backend' "
                        "AND state_change < now() - interval '2 seconds'",
                        [APP_ROLE],
                    ).fetchall()
                except psycopg.Error as exc:
                    log.error("reaping failed: %s", str(exc).replace("\n", " "))
                    conn = None
                    continue
                pids = [int(pid) for pid, done in rows if done]
                if pids:
                    reaped.extend(pids)
                    run.record("pg_terminate_backend", pids=pids)
                    log.info("terminated %d idle backend(s) of %s: %s", len(pids), APP_ROLE, pids)
        finally:
            if conn is not None:
                conn.close()
            for handler in list(log.handlers):
                log.removeHandler(handler)
                handler.close()

    run.thread("idle-reaper", reaper)
    run.set_signature(
        lambda: bool(reaped) and ADMIN_FATAL in run.server_log_text() and reports.requests_failed > 0
    )


def _server_restart(run: RunningScenario) -> None:
    catalog = run.add_service("catalog", workers=3, min_size=3, max_size=4, pool_timeout=2.0)

    def restart() -> dict[str, Any]:
        require_lab_server(run.server)
        run.server.restart()
        return {"postmaster_pid": run.server.postmaster_pid()}

    run.every("restart", 2.0, 8.0, restart)

    def seen() -> bool:
        text = run.server_log_text()
        return READY in text and ADMIN_FATAL in text and catalog.requests_failed > 0

    run.set_signature(seen)


def _backend_crash(run: RunningScenario) -> None:
    orders = run.add_service("orders", workers=3, min_size=3, max_size=4, pool_timeout=2.0)

    def crash() -> dict[str, Any]:
        require_lab_server(run.server)
        with run.server.admin() as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'orders' "
                "AND backend_type = 'client backend' ORDER BY backend_start LIMIT 1"
            ).fetchone()
        if row is None:
            raise PlaybookError("orders has no backend to kill right now")
        pid = int(row[0])
        # Only a child of this lab's postmaster: never a process that merely reused the number.
        if psutil.Process(pid).ppid() != run.server.postmaster_pid():
            raise PlaybookError(f"process {pid} is not a backend of the lab server")
        run.server.crash_backend(pid)
        return {"killed_pid": pid, "signal": "SIGKILL"}

    run.every("kill -9", 2.0, 8.0, crash)

    def seen() -> bool:
        text = run.server_log_text()
        return bool(CRASHED.search(text)) and READY in text and orders.requests_failed > 0

    run.set_signature(seen)


def _pgbouncer_idle_timeout(run: RunningScenario) -> None:
    # The pool's max_idle stays at psycopg_pool's 600 s default: it never learns of PgBouncer's 2 s.
    # Transaction mode, because client_idle_timeout only closes clients holding no server connection
    # (janitor.c skips linked ones): in session mode every logged-in client holds one.
    bouncer = run.start_pgbouncer({"pool_mode": "transaction", "client_idle_timeout": 2})
    search = run.add_service(
        "search",
        bouncer.dsn(),
        workers=2,
        min_size=2,
        max_size=4,
        pool_timeout=3.0,
        connect_kwargs={"prepare_threshold": None},
        **BURST,
    )
    run.set_signature(
        lambda: (
            "closing because: client_idle_timeout" in run.pgbouncer_log_text() and search.requests_failed > 0
        )
    )


def _pgbouncer_saturation(run: RunningScenario) -> None:
    # 8 workers each wanting a server connection for 0.5 s, 2 server connections: a query waits ~1.5 s
    # for its turn, longer than query_wait_timeout. prepare_threshold=None is what psycopg users set
    # behind transaction pooling, so the only fault here is the sizing.
    bouncer = run.start_pgbouncer(
        {"pool_mode": "transaction", "default_pool_size": 2, "query_wait_timeout": 1}
    )
    orders = run.add_service(
        "orders",
        bouncer.dsn(),
        workers=8,
        min_size=2,
        max_size=8,
        pool_timeout=3.0,
        request_interval=0.02,
        query="SELECT pg_sleep(0.5)",
        connect_kwargs={"prepare_threshold": None},
    )
    run.set_signature(
        lambda: (
            "closing because: query_wait_timeout" in run.pgbouncer_log_text() and orders.requests_failed > 0
        )
    )


def _prisma_forgotten_flow(run: RunningScenario) -> None:
    # pg.Pool checks nothing when it hands out an idle client, and Prisma does not retry: the first
    # query after each idle gap meets the RST. The pool's idleTimeoutMillis (10 s, its default) is
    # what outlives the hop's limit, as 10 min of pooling outlives AWS's 350 s.
    proxy = run.start_proxy()
    proxy.drop_idle_after(2.0, reset_on_data=True)
    run.record("proxy", drop_idle_after_s=2.0, reset_on_data=True)
    run.add_prisma_service("shop", proxy.dsn_for(run.server.dsn(APP_ROLE)), workers=2, pool_max=4, **BURST)
    run.set_signature(lambda: proxy.stats()["dropped_resets"] > 0 and "P1017" in run.app_log_text())


def _prisma_pool_exhausted(run: RunningScenario) -> None:
    # 6 workers each holding a connection 0.5 s want 6; 2 serve them, so a request waits ~1.5 s,
    # longer than maxWait (transactions) and connectionTimeoutMillis (other queries).
    run.add_prisma_service(
        "shop",
        workers=6,
        pool_max=2,
        pool_timeout_ms=1000,
        hold_seconds=0.5,
        transaction_every=2,
        transaction_max_wait_ms=800,
        request_interval=0.02,
    )

    def seen() -> bool:
        text = run.app_log_text()
        return "P2028" in text and "timeout exceeded when trying to connect" in text

    run.set_signature(seen)


_BUILDERS: dict[str, Callable[[RunningScenario], None]] = {
    "healthy": _healthy,
    "leak": _leak,
    "idle_session_timeout": _idle_session_timeout,
    "idle_in_transaction_timeout": _idle_in_transaction_timeout,
    "too_many_connections": _too_many_connections,
    "reset_path": _reset_path,
    "nat_drop": lambda run: _nat(run, keepalives=False),
    "nat_drop_keepalive": lambda run: _nat(run, keepalives=True),
    "admin_terminate": _admin_terminate,
    "server_restart": _server_restart,
    "backend_crash": _backend_crash,
    "pgbouncer_idle_timeout": _pgbouncer_idle_timeout,
    "pgbouncer_saturation": _pgbouncer_saturation,
    "prisma_forgotten_flow": _prisma_forgotten_flow,
    "prisma_pool_exhausted": _prisma_pool_exhausted,
}
assert set(_BUILDERS) == set(SCENARIOS)


def start_scenario(
    name: str, server: LabServer, workdir: Path, *, fix: ScenarioFix | None = None
) -> RunningScenario:
    """Start scenario `name` on `server` (which the lab must have started); stop() the result.

    With `fix` (playbook/lab/fixes.py), the scenario runs with a finding's fix applied: its SQL run
    on the server first, its pool, connection and PgBouncer settings in the applications' own."""
    spec = SCENARIOS.get(name)
    if spec is None:
        raise PlaybookError(f"there is no scenario {name!r}; the scenarios are: {', '.join(SCENARIOS)}")
    reason = unavailable(name)
    if reason:
        raise PlaybookError(reason)
    require_lab_server(server)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = RunningScenario(spec, server, workdir, fix)
    try:
        run.apply_fix_sql()
        _BUILDERS[name](run)
    except BaseException:
        with contextlib.suppress(PlaybookError):  # the set-up error is the one to report
            run.stop()
        raise
    run.record("started", summary=spec.summary)
    (workdir / "scenario.json").write_text(
        json.dumps(
            {
                "scenario": name,
                "expected_category": spec.expected_category,
                "dsn": run.dsn,
                "server_log": str(run.server_log),
                "structured_log": str(run.structured_log),
                "app_log": str(run.app_log),
                "pool_stats_log": str(run.pool_stats_log),
                "started_at": run.started_at,
                **(
                    {
                        "pgbouncer_console_dsn": run.pgbouncer.console_dsn(),
                        "pgbouncer_log": str(run.pgbouncer.log_file),
                        "pgbouncer_version": run.pgbouncer.version,
                    }
                    if run.pgbouncer is not None
                    else {}
                ),
            },
            indent=2,
        )
    )
    return run

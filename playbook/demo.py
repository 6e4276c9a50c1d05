"""`playbook demo`: the lab server, a service with a leak, and a full `playbook run` against it."""

from __future__ import annotations

from pathlib import Path

from playbook.lab.server import APP_ROLE, LabServer, default_lab_dir
from playbook.lab.workloads import Service, wait_for_requests
from playbook.report.runner import RunOptions, available_notebooks, run
from playbook.target import resolve_target


def run_demo(*, out: Path, duration: float = 20.0, lab_dir: Path | None = None) -> int:
    server = LabServer(lab_dir or default_lab_dir())
    was_running = server.is_running()
    server.up()
    print(f"lab server: PostgreSQL {server.major_version} on 127.0.0.1:{server.port}")
    service = Service(server.dsn(APP_ROLE), "shop-api", workers=3, min_size=3, max_size=6)
    try:
        service.start()
        wait_for_requests(service, 20)
        service.leak_transaction()  # one request path forgets to commit: idle in transaction
        print("workload: shop-api (psycopg_pool, 3 workers) with one connection left idle in transaction")
        code = run(
            RunOptions(
                target=resolve_target(server.dsn()),
                out=out,
                duration=duration,
                interval=1.0,
                server_logs=[server.stderr_log],
                notebooks=available_notebooks(),
                jobs=2,
                progress=True,
            )
        )
    finally:
        service.stop()
        if not was_running:
            server.down()
            print("lab server stopped")
    return 0 if code in (0, 1, 2) else code

"""Record the raw materials of the PgBouncer diagnosis tests from real lab runs (needs pgbouncer).

    .venv/bin/python tests/data/pgbouncer/record.py [SECONDS]

For each PgBouncer scenario: a lab server, the scenario, the console sampled for SECONDS (default
8), then into tests/data/pgbouncer/<scenario>/: pgbouncer.log and app.log as written, the console's
frames as parquet and its config/console snapshots as JSON. The diagnosis tests read the logs with
the real readers, so a change to a reader is tested against the same raw lines.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from playbook.collect.pgbouncer_console import PgBouncerSampler
from playbook.lab.scenarios import start_scenario
from playbook.lab.server import LabServer
from playbook.lab.wait import wait_until

HERE = Path(__file__).parent
SCENARIOS = ("pgbouncer_idle_timeout", "pgbouncer_saturation")


def record(name: str, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = LabServer(Path(tmp) / "lab")
        server.up()
        try:
            with start_scenario(name, server, Path(tmp) / "work") as run:
                assert run.pgbouncer is not None
                evidence = PgBouncerSampler(run.pgbouncer.console_dsn(), 0.5).run(seconds)
                wait_until(run.signature_seen, timeout=30, what=f"{name}'s signature")
                log_text = run.pgbouncer_log_text()
                app_text = run.app_log_text()
            out = HERE / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            (out / "pgbouncer.log").write_text(log_text)
            (out / "app.log").write_text(app_text)
            for frame_name, frame in evidence.frames.items():
                frame.to_parquet(out / f"{frame_name}.parquet", index=False)
            for snap_name, snapshot in evidence.snapshots.items():
                (out / f"{snap_name}.json").write_text(json.dumps(snapshot, indent=1, default=str))
            print(name, sorted(p.name for p in out.iterdir()))
        finally:
            server.destroy()


if __name__ == "__main__":
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
    started = time.monotonic()
    for scenario in SCENARIOS:
        record(scenario, duration)
    print(f"recorded in {time.monotonic() - started:.0f} s")

"""Targets per minute of `playbook fleet` on this machine: 50 targets, a 10 s window each
(goal on 2 cores: all 50 in at most 3 minutes, i.e. >= 16.7 targets per minute).

Starts its own lab server with a steady service on it, makes half the targets databases and half
roles, and runs the CLI as a user would (a separate process, a LocalCluster), timing it from start
to exit: cluster start-up, imports and shutdown included. A benchmark that prints, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.workloads import Service, wait_for_requests

GOAL_S = 180.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--workers", type=int, help="targets in flight (default: the fleet's own default)")
    parser.add_argument("--render", default="warning", choices=["critical", "warning", "all"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = LabServer(Path(tmp) / "lab")
        server.up()
        service = Service(server.dsn(APP_ROLE), "bench-app", workers=2).start()
        try:
            wait_for_requests(service, 10)
            lines = ["targets:"]
            databases = args.targets // 2
            with server.admin() as conn:
                for number in range(databases):
                    conn.execute(f"CREATE DATABASE bench_db{number:03d}")
            for number in range(databases):
                dsn = server.dsn(dbname=f"bench_db{number:03d}")
                lines.append(f"  - {{name: db{number:03d}, dsn: '{dsn}', labels: {{kind: database}}}}")
            for number in range(args.targets - databases):
                dsn = server.create_role(f"bench_role{number:03d}")
                lines.append(f"  - {{name: role{number:03d}, dsn: '{dsn}', labels: {{kind: role}}}}")
            targets = Path(tmp) / "targets.yaml"
            targets.write_text("\n".join(lines) + "\n")
            out = Path(tmp) / "fleet"
            command = [sys.executable, "-m", "playbook.cli", "fleet", str(targets), "--out", str(out),
                       "--duration", str(args.duration), "--render", args.render]  # fmt: skip
            if args.workers:
                command += ["--workers", str(args.workers)]
            started = time.monotonic()
            done = subprocess.run(command, capture_output=True, text=True)
            seconds = time.monotonic() - started
        finally:
            service.stop()
            server.destroy()
        if done.returncode == 3:
            sys.exit(f"the fleet failed: {done.stderr.strip()[-2000:]}")
        fleet = json.loads((out / "fleet.json").read_text())
    rows = fleet["targets"]
    per_target = sorted(row["seconds"] for row in rows)
    print(f"cores: {os.cpu_count()}, load average before the end: {os.getloadavg()[0]:.1f}")
    print(f"targets: {len(rows)}, window: {args.duration:g} s, in flight: {fleet['workers']}")
    print(f"statuses: {fleet['counts']}")
    print(f"per target: median {per_target[len(rows) // 2]:.1f} s, max {per_target[-1]:.1f} s")
    print(
        f"wall: {seconds:.1f} s (goal: {GOAL_S:.0f} s) -> {len(rows) / seconds * 60:.1f} targets per minute"
    )


if __name__ == "__main__":
    main()

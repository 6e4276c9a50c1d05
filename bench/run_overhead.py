"""How long `playbook run --duration D --notebooks triage` takes beyond D (goal: <= 20 s on 2 cores).

Starts its own lab server, runs the CLI as a user would (a separate process), several times,
and prints the overhead of each run and their median. A benchmark that prints, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.workloads import Service, wait_for_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--notebooks", default="triage")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = LabServer(Path(tmp) / "lab")
        server.up()
        service = Service(server.dsn(APP_ROLE), "bench-app", workers=2).start()
        try:
            wait_for_requests(service, 10)
            overheads = []
            for number in range(args.runs):
                out = Path(tmp) / f"run-{number}"
                started = time.monotonic()
                done = subprocess.run(
                    [sys.executable, "-m", "playbook.cli", "run", "--dsn", server.dsn(),
                     "--duration", str(args.duration), "--notebooks", args.notebooks, "--out", str(out)],
                    capture_output=True, text=True,
                )  # fmt: skip
                elapsed = time.monotonic() - started
                if done.returncode not in (0, 1, 2):
                    sys.exit(f"run failed ({done.returncode}): {done.stderr.strip()}")
                overheads.append(elapsed - args.duration)
                print(
                    f"run {number + 1}: {elapsed:.2f} s wall, "
                    f"{elapsed - args.duration:.2f} s beyond --duration"
                )
        finally:
            service.stop()
            server.destroy()
    print(
        f"overhead beyond --duration {args.duration:g} s with --notebooks {args.notebooks}: "
        f"median {statistics.median(overheads):.2f} s, max {max(overheads):.2f} s (goal <= 20 s)"
    )


if __name__ == "__main__":
    main()

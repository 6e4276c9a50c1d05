"""The sampler's cost per tick with 1,000 idle backends (goal: median and p99 <= 5 ms).

Starts its own lab server with max_connections raised, opens 1,000 idle connections from a
psycopg pool, then times the sampler's one query per tick, fetch and row handling included.
A benchmark that prints its figures, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg_pool import ConnectionPool

from playbook.collect.activity import ActivitySampler
from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.wait import wait_until
from playbook.target import Target


@contextmanager
def idle_fleet(backends: int, open_timeout: float) -> Iterator[LabServer]:
    """A lab server of its own in a temporary folder (the caller may write beside it, in
    server.base_dir.parent), max_connections raised for `backends` idle connections of an
    application of their own ("idle-fleet", a psycopg pool) held open while the block runs; the
    pool closed, the server destroyed and the folder removed after. Connection logging is off: the
    benchmarks measure the playbook, not the server's log writes."""
    with tempfile.TemporaryDirectory() as tmp:
        server = LabServer(Path(tmp) / "lab")
        server.up()
        server.alter_system({"max_connections": backends + 50, "log_connections": "off",
                             "log_disconnections": "off"})  # fmt: skip
        server.restart()
        pool = ConnectionPool(server.dsn(APP_ROLE), min_size=backends, max_size=backends,
                              kwargs={"application_name": "idle-fleet"}, open=False)  # fmt: skip
        try:
            started = time.monotonic()
            pool.open(wait=True, timeout=open_timeout)
            print(f"opened {backends} idle connections in {time.monotonic() - started:.1f} s")
            yield server
        finally:
            pool.close()
            server.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=200)
    args = parser.parse_args()
    with idle_fleet(args.backends, open_timeout=300) as server:
        sampler = ActivitySampler(Target(server.dsn()), duration=1, interval=1, progress=False)
        wait_until(lambda: sampler._tick() or sampler._ticks[-1][3] >= args.backends, timeout=60,
                   what="every backend visible")  # fmt: skip
        sampler._ticks.clear()
        sampler._batches.clear()
        for _ in range(args.ticks):
            sampler._tick()
        costs = sorted(tick[5] for tick in sampler._ticks)
        rows = sampler._ticks[-1][3]
        p99 = costs[min(len(costs) - 1, int(len(costs) * 0.99))]
        print(f"sampler tick with {rows} backends over {len(costs)} ticks: "
              f"median {statistics.median(costs):.2f} ms, p99 {p99:.2f} ms (goal <= 5 ms)")  # fmt: skip
        frame_started = time.perf_counter()
        evidence = sampler.evidence()
        seconds = time.perf_counter() - frame_started
        print(f"building the frame of {len(evidence.samples)} rows: {seconds:.2f} s")


if __name__ == "__main__":
    main()

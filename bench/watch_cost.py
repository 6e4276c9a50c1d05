"""What `playbook watch` costs at 1,000 backends: CPU of a core and bytes on disk per hour at 10 s.

Starts its own lab server with max_connections raised, opens 1,000 idle connections (a psycopg
pool of an application of its own), then runs `playbook watch` in its own process at a shorter
interval with the same number of ticks per segment as the defaults (300 s segments of 10 s ticks:
30 ticks), so each segment holds what a production segment holds. Once the first segment is on
disk (start-up and imports are not the steady cost), it reads the watcher's CPU time from
/proc/PID/stat and the segments' bytes over --segments more segments, and scales per tick to
an hour at --at seconds. Goal: under 1% of a core and under 50 MB an hour at 10 s.

A benchmark that prints its figures, not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sampler import idle_fleet  # bench/ is the script's folder: python bench/watch_cost.py

from playbook.evidence import Evidence
from playbook.lab.wait import wait_until
from playbook.watch.segments import segments

TICKS_PER_SEGMENT = 30  # the defaults: --segment 300 at --interval 10


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0, help="the bench's tick (default 1 s)")
    parser.add_argument("--segments", type=int, default=4, help="segments measured (default 4)")
    parser.add_argument("--at", type=float, default=10.0, help="the interval the figures are scaled to")
    args = parser.parse_args()
    with idle_fleet(args.backends, open_timeout=600) as server:
        watcher = None
        try:
            out = server.base_dir.parent / "watch"
            segment_s = args.interval * TICKS_PER_SEGMENT
            watcher = subprocess.Popen(
                [sys.executable, "-m", "playbook.cli", "watch", "--dsn", server.dsn(), "--out", str(out),
                 "--interval", str(args.interval), "--segment", str(segment_s), "--keep", "7d"],
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            first = wait_until(lambda: segments(out), timeout=segment_s * 3, what="the first segment")
            cpu_from, wall_from = cpu_seconds(watcher.pid), time.monotonic()
            wait_until(
                lambda: len(segments(out)) > args.segments,
                timeout=segment_s * (args.segments + 2),
                what=f"{args.segments} more segments",
                poll=0.5,
            )
            cpu, wall = cpu_seconds(watcher.pid) - cpu_from, time.monotonic() - wall_from
            measured = [s for s in segments(out) if s.path != first[0].path][: args.segments]
            parts = [Evidence.load(s.path) for s in measured]
            ticks = sum(len(p.activity_ticks) for p in parts)
            rows = sum(len(p.activity_samples) for p in parts)
            written = sum(s.bytes for s in measured)
            query_ms = statistics.median(float(q) for p in parts for q in p.activity_ticks["query_ms"])
            per_hour = 3600 / args.at
            cpu_per_tick = cpu / (wall / args.interval)
            print(f"measured {wall:.0f} s: {ticks} ticks, {rows} backend rows "
                  f"({rows / max(ticks, 1):.0f} per tick), {len(measured)} segments, "
                  f"{written / 1e6:.2f} MB, {cpu:.2f} CPU s")  # fmt: skip
            print(f"per tick: {cpu_per_tick * 1000:.1f} ms CPU (query and fetch: median {query_ms:.1f} ms), "
                  f"{written / max(ticks, 1) / 1e3:.1f} kB on disk")  # fmt: skip
            core = cpu_per_tick / args.at * 100
            hourly_mb = written / max(ticks, 1) * per_hour / 1e6
            print(
                f"at {args.at:g} s with {args.backends} backends: {cpu_per_tick * per_hour:.1f} CPU s an "
                f"hour = {core:.2f}% of a core (goal < 1%), {hourly_mb:.1f} MB an hour (goal < 50 MB)"
            )
        finally:
            if watcher is not None and watcher.poll() is None:
                watcher.send_signal(signal.SIGTERM)
                watcher.wait(60)


if __name__ == "__main__":
    main()

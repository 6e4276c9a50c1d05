"""What `playbook fleet` costs on this machine, and how fast it goes with each number in flight.

For the fleet's default and for each explicit `--workers` value given, on the same lab server and
the same targets (half of them databases, half roles, a steady service on the server), the CLI
runs as a user would run it (a separate process, a LocalCluster), timed from start to exit
(cluster start-up, imports and shutdown included). Printed per run: targets, in flight, wall
time, targets per minute, statuses, peak memory of the fleet's process tree, and what one target
costs: its CPU seconds (the child forked per attempt and the notebook kernels it started, as the
worker reaps them), CPU seconds per second in flight and per window second, and its peak memory
(child + kernels, RSS and USS). Those are the measured inputs of playbook.fleet.dispatch's
sizing, whose derivation line (the fleet's stderr) is printed as the fleet said it.

    bench/fleet.py                                    # 50 targets, 10 s window: the default, and 4
    bench/fleet.py --workers default,4,25,50 --render all
    bench/fleet.py --targets 200 --workers 50

A benchmark that prints, not a test. Keep each run bounded: 50 targets with 4 in flight take
close to three minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.workloads import Service, wait_for_requests

GOAL_S = 180.0  # 50 targets of a 10 s window in at most 3 minutes on 2 cores
POLL_S = 0.25
MB = 1024 * 1024


@dataclass
class Watch:
    """What a poll of the fleet's process tree saw while it ran."""

    peak_rss: int = 0  # the whole tree's RSS, summed (pages shared by forks counted in each)
    peak_uss: int = 0  # the whole tree's private pages: what the fleet really holds
    peak_in_flight: int = 0
    target_rss: dict[int, int] = field(default_factory=dict)  # per target child: max of child + kernels
    target_uss: dict[int, int] = field(default_factory=dict)
    kernels: int = 0  # targets seen with a kernel below them
    targets_cpu: float = 0.0  # the worker's reaped children: every attempt and its kernels
    min_available: int = 0


def watch(root: int, done: threading.Event, seen: Watch) -> None:
    """Poll the tree below `root` until `done`: memory, targets in flight, the targets' CPU."""
    seen.min_available = psutil.virtual_memory().available
    with_kernel: set[int] = set()
    worker: psutil.Process | None = None
    while not done.is_set():
        try:
            tree = psutil.Process(root).children(recursive=True)
        except psutil.Error:
            break
        rss = uss = 0
        leaders: dict[int, psutil.Process] = {}
        for process in tree:
            try:
                info = process.memory_full_info()
                rss, uss = rss + info.rss, uss + info.uss
                if os.getsid(process.pid) == process.pid:
                    leaders[process.pid] = process
            except (psutil.Error, OSError):
                continue
        # job.py's child has a session of its own; so does a notebook kernel, below such a child.
        targets = [p for p in leaders.values() if _ppid(p) not in leaders]
        seen.peak_rss, seen.peak_uss = max(seen.peak_rss, rss), max(seen.peak_uss, uss)
        seen.peak_in_flight = max(seen.peak_in_flight, len(targets))
        seen.min_available = min(seen.min_available, psutil.virtual_memory().available)
        for target in targets:
            try:
                below = target.children(recursive=True)
                infos = [p.memory_full_info() for p in [target, *below]]
                if worker is None:
                    worker = target.parent()
            except psutil.Error:
                continue
            if below:
                with_kernel.add(target.pid)
            seen.target_rss[target.pid] = max(seen.target_rss.get(target.pid, 0), sum(i.rss for i in infos))
            seen.target_uss[target.pid] = max(seen.target_uss.get(target.pid, 0), sum(i.uss for i in infos))
        if worker is not None:
            try:
                times = worker.cpu_times()
                seen.targets_cpu = max(seen.targets_cpu, times.children_user + times.children_system)
            except psutil.Error:
                pass
        seen.kernels = len(with_kernel)
        done.wait(POLL_S)


def _ppid(process: psutil.Process) -> int:
    try:
        return process.ppid()
    except psutil.Error:
        return -1


@dataclass
class Result:
    asked: str
    in_flight: int
    wall: float
    cpu: float  # the whole fleet: client, scheduler, worker, targets
    fleet: dict[str, object]
    seen: Watch
    derivation: str
    load: float


def run_once(targets: Path, out: Path, args: argparse.Namespace, workers: str) -> Result:
    command = [sys.executable, "-m", "playbook.cli", "fleet", str(targets), "--out", str(out),
               "--duration", str(args.duration), "--render", args.render]  # fmt: skip
    if workers != "default":
        command += ["--workers", workers]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done, seen = threading.Event(), Watch()
    poller = threading.Thread(target=watch, args=(process.pid, done, seen), daemon=True)
    poller.start()
    stdout, stderr = process.communicate()
    wall = time.monotonic() - started
    done.set()
    poller.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if process.returncode == 3 or not (out / "fleet.json").exists():
        sys.exit(f"the fleet failed: {(stderr or stdout).strip()[-2000:]}")
    fleet = json.loads((out / "fleet.json").read_text())
    said = [line for line in stderr.splitlines() if line.startswith("fleet: ")]
    return Result(workers, int(fleet["workers"]), wall, cpu, fleet, seen, said[0] if said else "-",
                  os.getloadavg()[0])  # fmt: skip


def report(result: Result, duration: float) -> None:
    rows = result.fleet["targets"]
    assert isinstance(rows, list)
    seen = result.seen
    per_target = sorted(float(row["seconds"]) for row in rows)
    in_flight_s = sum(per_target)
    cpu_per_target = seen.targets_cpu / len(rows)
    rss = sorted(seen.target_rss.values()) or [0]
    uss = sorted(seen.target_uss.values()) or [0]
    print(f"--workers {result.asked}: {len(rows)} targets, {result.in_flight} in flight "
          f"(at most {seen.peak_in_flight} children seen at once)")  # fmt: skip
    print(f"  wall {result.wall:.1f} s -> {len(rows) / result.wall * 60:.1f} targets per minute; "
          f"statuses {result.fleet['counts']}; load average at the end {result.load:.1f}")  # fmt: skip
    print(f"  per target: median {per_target[len(rows) // 2]:.1f} s, max {per_target[-1]:.1f} s "
          f"(window {duration:g} s); pages rendered by {seen.kernels} targets")  # fmt: skip
    print(f"  CPU: the whole fleet {result.cpu:.1f} s; the targets {seen.targets_cpu:.1f} s = "
          f"{cpu_per_target:.2f} s per target, {seen.targets_cpu / in_flight_s:.3f} per second in flight, "
          f"{cpu_per_target / duration:.3f} per window second")  # fmt: skip
    print(f"  memory: peak of the tree {seen.peak_rss / MB:.0f} MB RSS summed, "
          f"{seen.peak_uss / MB:.0f} MB USS; "
          f"one target (child + kernels) median {rss[len(rss) // 2] / MB:.0f} MB RSS / "
          f"{uss[len(uss) // 2] / MB:.0f} MB USS, "
          f"max {rss[-1] / MB:.0f} / {uss[-1] / MB:.0f} MB")  # fmt: skip
    print(f"  the fleet said: {result.derivation}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--workers",
        default="default,4",
        help="comma-separated targets in flight, 'default' for the fleet's own (default: default,4)",
    )
    parser.add_argument("--render", default="warning", choices=["critical", "warning", "all"])
    args = parser.parse_args()
    asked = [w.strip() for w in args.workers.split(",") if w.strip()]
    for value in asked:
        if value != "default" and not value.isdigit():
            parser.error(f"--workers takes 'default' or whole numbers, not {value!r}")
    print(f"cores: {os.cpu_count()}, memory available: {psutil.virtual_memory().available / MB:.0f} MB, "
          f"load average: {os.getloadavg()[0]:.1f}; {args.targets} targets, window {args.duration:g} s, "
          f"--render {args.render}")  # fmt: skip
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
            for number, workers in enumerate(asked):
                result = run_once(targets, Path(tmp) / f"fleet{number}", args, workers)
                report(result, args.duration)
                goal = "met" if result.wall <= GOAL_S * args.targets / 50 else "missed"
                print(f"  goal (50 targets of 10 s in {GOAL_S:.0f} s, pro rata): {goal}", flush=True)
        finally:
            service.stop()
            server.destroy()


if __name__ == "__main__":
    main()

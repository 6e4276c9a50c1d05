"""The client side of `playbook fleet`: a Dask cluster, one task per target, fleet.json and index.html.

With no scheduler address a LocalCluster is started (worker processes on this machine, gone at the
end); with one, the fleet runs on that existing cluster, whose workers must be able to import this
playbook, reach the databases and write --out (a shared filesystem). At most `workers` targets are
in flight at once: the client submits the next one as one finishes, so a fleet of hundreds never
floods the scheduler or the databases' hosts.

How many in flight by default on a LocalCluster (`default_workers`): a target spends its window
waiting on the network, not on the CPU, so the number follows from what one target costs
(measured by bench/fleet.py on this project's 2-core machine) against this machine's cores and
memory and the targets' windows and deadlines. The derivation is one line on stderr at start.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from playbook.errors import EXIT_CRITICAL, EXIT_ERROR, EXIT_OK, EXIT_WARNING, PlaybookError
from playbook.extras import require
from playbook.fleet.targets import TargetSpec

if TYPE_CHECKING:
    from distributed import Client

SCHEMA_ID = "pg-session-playbook/fleet/v1"
CONNECT_TIMEOUT_S = 15
WORKERS_WAIT_S = 60  # an existing cluster with no worker yet: how long to wait for one
STATUSES = ("ok", "warning", "critical", "error")


# What one target costs, measured by bench/fleet.py (2 cores, 10 s and 30 s windows, interval 1 s;
# README, Measured). CPU: the child forked per attempt and the kernels it starts, as the worker
# reaps them. Memory: the peak of the child and its kernel's private pages (USS): the pages a fork
# shares with the warm worker are paid once, by the worker, not once per target.
TARGET_CPU_S = 0.65  # a run without pages: fork, connect, settings and probes, diagnose, publish
TARGET_CPU_PER_WINDOW_S = 0.004  # each second of the window: the sampler's ticks
TARGET_WALL_S = 2.5  # wall seconds beyond the window when a core is free
PAGES_CPU_S = 3.2  # a target that renders its pages: a kernel started, triage executed, published
PAGES_WALL_S = 5.0
TARGET_MEMORY_MB = 190.0  # a target in flight with its kernel (the child alone: about 55 MB)
CPU_SHARE = 0.8  # of the cores: the worker's threads, the scheduler and the client need some, and a
# sampler that waits for a core ticks late
MEMORY_SHARE = 0.5  # of the memory available at start: the rest is the margin (other processes,
# a target heavier than measured); memory over-committed kills, CPU over-committed only slows


@dataclass(frozen=True)
class Sizing:
    """How many targets a LocalCluster keeps in flight, and why: the least of three bounds and the
    number of targets. `workers` is the default; `asked` is --workers when given (it wins)."""

    workers: int
    cores: int
    available_mb: float
    window_s: float  # the shortest window of the fleet: its targets use the most CPU per second
    slack_s: float | None  # the shortest time a deadline leaves beyond its window (None: none left)
    pages: bool  # every target renders pages (--render all): its CPU includes a kernel's
    cpu_per_target_s: float
    cores_per_target: float  # CPU seconds per second in flight
    by_cpu: int
    by_memory: int
    by_deadline: int | None
    targets: int
    asked: int | None = None

    @property
    def in_flight(self) -> int:
        return self.asked or self.workers

    def line(self) -> str:
        """The one line the fleet prints on stderr when it starts."""
        deadline = (
            f"deadline {self.by_deadline} ({self.cores} x {CPU_SHARE:g} x {self.slack_s:.0f} s a deadline "
            f"leaves beyond the window / {self.cpu_per_target_s:.2f} s)"
            if self.by_deadline is not None
            else "deadline: none leaves time beyond its window"
        )
        default = (
            f"min(cpu {self.by_cpu} ({self.cores} cores x {CPU_SHARE:g} / {self.cores_per_target:.3f} "
            f"cores per target: {self.cpu_per_target_s:.2f} s CPU{' with pages' if self.pages else ''} "
            f"over {self.window_s:g} s of window + {self.overhead_s:g} s), "
            f"memory {self.by_memory} ({MEMORY_SHARE:g} x {self.available_mb:,.0f} MB available / "
            f"{TARGET_MEMORY_MB:g} MB per target with its kernel), {deadline}, {self.targets} targets) "
            f"= {self.workers}"
        )
        if self.asked:
            return f"fleet: {self.asked} targets in flight (--workers); the default would be {default}"
        return f"fleet: {self.workers} targets in flight by default = {default}; --workers N overrides"

    @property
    def overhead_s(self) -> float:
        return TARGET_WALL_S + (PAGES_WALL_S if self.pages else 0.0)


def default_workers(
    targets: Sequence[tuple[float, float]],
    render: str = "warning",
    *,
    asked: int | None = None,
    cores: int | None = None,
    available_bytes: int | None = None,
) -> Sizing:
    """Targets in flight by default on a LocalCluster, with its derivation; `targets` holds each
    target's (window, deadline) in seconds.

    - cpu: a target keeps (cpu s) / (window + wall beyond it) of a core busy, where its CPU is
      TARGET_CPU_S + TARGET_CPU_PER_WINDOW_S per window second (+ PAGES_CPU_S with --render all,
      when every target executes a notebook); as many as fill CPU_SHARE of the cores. The shortest
      window counts: its targets are the busiest per second.
    - memory: MEMORY_SHARE of the memory available now, over TARGET_MEMORY_MB, a target with its
      notebook kernel (any target may deserve pages: memory over-committed is fatal, CPU only slow).
    - deadline: the first wave is submitted at once and its CPU queues on the cores; the last of
      it must still finish within the time its deadline leaves beyond its window (the tightest of
      the fleet; a target whose deadline leaves none is not helped by fewer in flight).
    - never more than there are targets, never fewer than one.
    `cores` and `available_bytes` default to this machine's (the CPUs this process may run on;
    psutil.virtual_memory().available); `asked` (--workers) wins over the default when given.
    """
    import psutil

    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if available_bytes is None:
        available_bytes = int(psutil.virtual_memory().available)
    pages = render == "all"
    window = min((float(duration) for duration, _ in targets), default=60.0)
    slacks = [float(deadline) - float(duration) for duration, deadline in targets]
    slack = min((s for s in slacks if s > 0), default=None)
    cpu = TARGET_CPU_S + TARGET_CPU_PER_WINDOW_S * window + (PAGES_CPU_S if pages else 0.0)
    busy = cpu / (window + TARGET_WALL_S + (PAGES_WALL_S if pages else 0.0))
    by_cpu = max(1, math.floor(cores * CPU_SHARE / busy))
    available_mb = available_bytes / (1024 * 1024)
    by_memory = max(1, math.floor(MEMORY_SHARE * available_mb / TARGET_MEMORY_MB))
    by_deadline = None if slack is None else max(1, math.floor(cores * CPU_SHARE * slack / cpu))
    bounds = [by_cpu, by_memory, max(1, len(targets))] + ([by_deadline] if by_deadline else [])
    return Sizing(
        workers=min(bounds),
        cores=cores,
        available_mb=available_mb,
        window_s=window,
        slack_s=slack,
        pages=pages,
        cpu_per_target_s=cpu,
        cores_per_target=busy,
        by_cpu=by_cpu,
        by_memory=by_memory,
        by_deadline=by_deadline,
        targets=len(targets),
        asked=asked,
    )


@dataclass(frozen=True)
class FleetOptions:
    """What `playbook fleet` was asked, besides the targets."""

    out: Path
    scheduler: str | None = None  # None: a LocalCluster
    workers: int | None = None  # in flight; None: default_workers() locally, every thread of a cluster
    render: str = "warning"  # pages for targets at or above: critical | warning | all
    fail_on: str = "warning"
    history: Path | None = None  # each target's runs recorded in history/<name>


def run_fleet(targets: Sequence[TargetSpec], options: FleetOptions) -> int:
    """Run every target as a Dask task, write DIR/fleet.json and DIR/index.html, return the exit code.

    Each target's report lands in DIR/targets/<name>/. A target's failure is its row's `error`, never
    the others'. The exit code is the fleet's worst status by --fail-on, a target in error counting as
    critical (a database nobody could examine); 3 when no target at all could be diagnosed, or on bad
    input (raised as PlaybookError before anything ran).
    """
    require("fleet", "playbook fleet")  # Dask comes with the [fleet] extra
    out = options.out.resolve()
    try:
        (out / "targets").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlaybookError(f"cannot write the fleet to {options.out}: {exc.strerror or exc}") from None
    started_wall, started = datetime.now(timezone.utc), time.monotonic()
    jobs = [
        {
            **asdict(t),
            "public_dsn": t.public_dsn,
            "out": str(out),
            "render": options.render,
            "history": str(options.history.resolve() / t.name) if options.history else None,
        }
        for t in targets
    ]
    # The validator takes seconds to import: do it while the targets run, not after.
    warm = threading.Thread(target=_import_validator, daemon=True)
    warm.start()
    spans = [(float(t.request.duration), float(t.deadline)) for t in targets]
    with cluster(options.scheduler, options.workers, spans, options.render) as (client, slots):
        rows = run_jobs(client, jobs, slots)
    ordered = [rows[t.name] for t in targets]
    code = fleet_exit_code([row["status"] for row in ordered], options.fail_on)
    counts = {status: sum(row["status"] == status for row in ordered) for status in STATUSES}
    fleet: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "scheduler": options.scheduler or "local",
        "started": started_wall.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 2),
        "workers": slots,
        "render": options.render,
        "fail_on": options.fail_on,
        "status": worst_status([row["status"] for row in ordered]),
        "counts": counts,
        "exit_code": code,
        "targets": ordered,
    }
    validate(fleet)
    _write(out / "fleet.json", json.dumps(fleet, indent=2))
    from playbook.fleet.page import write_index

    index = write_index(out, fleet)
    said = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print(f"fleet: {len(ordered)} targets in {fleet['seconds']:.0f} s: {said}")
    print(f"index: {index}")
    return code


@contextmanager
def cluster(
    scheduler: str | None,
    workers: int | None,
    spans: Sequence[tuple[float, float]] = (),
    render: str = "warning",
) -> Iterator[tuple[Client, int]]:
    """A client and how many targets to keep in flight; a LocalCluster when no address is given,
    sized by default_workers(spans, render) unless `workers` says (the line goes to stderr).

    Locally: one worker process with a thread per slot. Each target runs in a child forked from that
    worker (job.py), so the children use every core while the worker's threads only wait on them;
    more worker processes would each spend seconds of CPU importing the playbook for nothing.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise PlaybookError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            try:
                client.wait_for_workers(1, timeout=WORKERS_WAIT_S)
            except TimeoutError:
                raise PlaybookError(
                    f"the Dask scheduler at {scheduler} has no worker (waited {WORKERS_WAIT_S} s)"
                ) from None
            slots = workers or max(1, sum(client.nthreads().values()))
            why = "--workers" if workers else "every worker thread of the cluster"
            print(f"fleet: {slots} targets in flight ({why})", file=sys.stderr, flush=True)
            yield client, slots
        finally:
            client.close()
        return
    sizing = default_workers(spans, render, asked=workers)
    print(sizing.line(), file=sys.stderr, flush=True)
    slots = sizing.in_flight
    with (
        tempfile.TemporaryDirectory(prefix="playbook-fleet-dask-") as scratch,
        LocalCluster(
            n_workers=1,
            threads_per_worker=slots,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            local_directory=scratch,
            silence_logs=logging.ERROR,
        ) as local,
        Client(local) as client,
    ):
        yield client, slots


def run_jobs(client: Client, jobs: list[dict[str, Any]], slots: int) -> dict[str, dict[str, Any]]:
    """Every job's row by target name; at most `slots` tasks submitted and not yet finished."""
    from distributed import as_completed

    from playbook.fleet.job import run_target

    # Longest window first: a long target started last would hold the whole fleet up at the end.
    waiting = iter(sorted(jobs, key=lambda job: -float(job["request"]["duration"])))
    names: dict[Any, dict[str, Any]] = {}
    queue = as_completed()

    def submit_next() -> None:
        job = next(waiting, None)
        if job is not None:
            # pure=False: a fleet run twice is two runs. retries=0: job.py retries the transient, only.
            future = client.submit(run_target, job, key=f"playbook-{job['name']}-{os.urandom(4).hex()}",
                                   pure=False, retries=0)  # fmt: skip
            names[future] = job
            queue.add(future)

    for _ in range(slots):
        submit_next()
    rows: dict[str, dict[str, Any]] = {}
    for future in queue:
        job = names.pop(future)
        try:
            row = future.result()
        except Exception as exc:  # the worker died, the task was lost: this target's error only
            row = error_row(job, f"the Dask task failed: {type(exc).__name__}: {exc}"[:500])
        rows[job["name"]] = row
        say(row)
        submit_next()
    return rows


def error_row(job: dict[str, Any], error: str) -> dict[str, Any]:
    return {
        "name": job["name"], "labels": dict(job["labels"]), "dsn": job["public_dsn"], "status": "error",
        "top_cause": None, "top_cause_summary": None, "worst_finding": None, "findings": 0, "pages": [],
        "seconds": 0.0, "attempts": 0, "error": error, "report": None,
    }  # fmt: skip


def say(row: dict[str, Any]) -> None:
    cause = row["top_cause"] or "-"
    detail = row["error"] or row["worst_finding"] or ""
    print(f"{row['name']:<24} {row['status']:<8} {cause:<11} {row['seconds']:>7.1f} s  {detail}", flush=True)


def worst_status(statuses: Sequence[str]) -> str:
    """The fleet's status: the worst of its targets' (error counting above critical)."""
    return max(statuses, key=STATUSES.index, default="ok")


def fleet_exit_code(statuses: Sequence[str], fail_on: str) -> int:
    """3 when no target could be diagnosed; else the worst status by --fail-on, a target in error
    counting as critical: 0 ok (or below the bar), 1 warning, 2 critical or error."""
    if not statuses or all(status == "error" for status in statuses):
        return EXIT_ERROR
    if fail_on == "never":
        return EXIT_OK
    if any(status in ("critical", "error") for status in statuses):
        return EXIT_CRITICAL
    if "warning" in statuses and fail_on == "warning":
        return EXIT_WARNING
    return EXIT_OK


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("playbook.fleet").joinpath("fleet.schema.json").read_text()
    )
    return loaded


def validate(fleet: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError when fleet.json would break its contract."""
    import jsonschema

    jsonschema.validate(fleet, schema(), format_checker=jsonschema.FormatChecker())


def _import_validator() -> None:
    import jsonschema  # noqa: F401


def _write(path: Path, text: str) -> None:
    """Replace `path` whole: a reader never sees half a fleet.json."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

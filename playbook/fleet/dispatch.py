"""The client side of `playbook fleet`: a Dask cluster, one task per target, fleet.json and index.html.

With no scheduler address a LocalCluster is started (worker processes on this machine, gone at the
end); with one, the fleet runs on that existing cluster, whose workers must be able to import this
playbook, reach the databases and write --out (a shared filesystem). At most `workers` targets are
in flight at once: the client submits the next one as one finishes, so a fleet of hundreds never
floods the scheduler or the databases' hosts.
"""

from __future__ import annotations

import json
import logging
import os
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
from playbook.fleet.targets import TargetSpec

if TYPE_CHECKING:
    from distributed import Client

SCHEMA_ID = "pg-session-playbook/fleet/v1"
CONNECT_TIMEOUT_S = 15
WORKERS_WAIT_S = 60  # an existing cluster with no worker yet: how long to wait for one
STATUSES = ("ok", "warning", "critical", "error")


def default_workers() -> int:
    """Targets in flight by default on a LocalCluster: two per core, since a run mostly waits on
    its sampling window rather than computing."""
    return 2 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class FleetOptions:
    """What `playbook fleet` was asked, besides the targets."""

    out: Path
    scheduler: str | None = None  # None: a LocalCluster
    workers: int | None = None  # targets in flight; None: 2 per core locally, every thread of a cluster
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
    with cluster(options.scheduler, options.workers) as (client, slots):
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
def cluster(scheduler: str | None, workers: int | None) -> Iterator[tuple[Client, int]]:
    """A client and how many targets to keep in flight; a LocalCluster when no address is given.

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
            yield client, workers or max(1, sum(client.nthreads().values()))
        finally:
            client.close()
        return
    slots = workers or default_workers()
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
    waiting = iter(sorted(jobs, key=lambda job: -float(job["duration"])))
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

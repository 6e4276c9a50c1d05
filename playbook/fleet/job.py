"""What a Dask worker executes for one target: a playbook run, its pages when it deserves them.

Each attempt runs in a child forked from the worker, so that
- a deadline is a real one: the child and every notebook kernel it started are killed when it passes;
- a target's password (from the variable its `password_env` names) lives in that child's
  environment only: runs side by side in one worker never see each other's;
- a crash (a segfault in a native library, memory) ends one target's attempt, not the worker.
The worker imports the playbook once (`_preload`), so each fork starts warm: a fresh interpreter
per target would spend seconds of CPU importing before it sampled anything.

Transient refusals (nothing listening, the path timing out, the server starting or shutting down:
a server that restarts) are retried with backoff within the deadline; nothing else is.
`run_target` never raises: whatever happened is in the row it returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RETRY_DELAY_S = 2.0  # doubled at each retry: 2, 4, 8 s …
TRANSIENT_CAUSES = {"server_down", "network"}  # TargetRefused causes a restart or a blip explains
STATUS_RANK = {"ok": 0, "warning": 1, "critical": 2}
RENDER_RANK = {"all": 0, "warning": 1, "critical": 2}
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
_FORK_LOCK = threading.Lock()


def _preload() -> None:
    """Import, in the worker itself, everything a run needs, so that each forked child starts warm."""
    import jsonschema  # noqa: F401  (summary validation: seconds to import, once per worker)

    import playbook.collect.collection  # noqa: F401
    import playbook.report.run_command  # noqa: F401


def run_target(job: dict[str, Any]) -> dict[str, Any]:
    """One fleet target, end to end; returns its fleet.json row (never raises).

    `job` holds the target's fields (name, request: its RunRequest as a dict, labels, deadline,
    retries, password_env) plus `public_dsn`, `out` (the fleet's folder, which this worker must be able
    to write) and `render` (critical|warning|all). The report goes to out/targets/<name>/, the
    attempts' output (the run's own, and retries) to out/logs/<name>.log.
    """
    outcome: dict[str, Any]
    attempts = 0
    report = Path(job["out"]) / "targets" / job["name"]
    started = time.monotonic()
    started_at = datetime.now(timezone.utc)
    try:
        # Before the clock starts: a cold worker's imports are not this target's time or deadline.
        _preload()
        started = deadline_at = time.monotonic()
        deadline_at += float(job["deadline"])
        # The attempts' log lives outside the report: a run replaces its report folder as a whole.
        log = Path(job["out"]) / "logs" / f"{job['name']}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        while True:
            attempts += 1
            _note(log, f"attempt {attempts}")
            outcome = _attempt_in_child(job, deadline_at, log, since=time.time())
            if not outcome.get("transient") or attempts > int(job["retries"]):
                break
            delay = RETRY_DELAY_S * 2 ** (attempts - 1)
            if time.monotonic() + delay >= deadline_at:
                break
            _note(log, f"attempt {attempts} failed ({outcome['error']}); retrying in {delay:.0f} s")
            time.sleep(delay)  # the server may be restarting: give it time before the next attempt
    except Exception as exc:  # the folder cannot be written, the playbook cannot be imported…
        outcome = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    seconds = time.monotonic() - started  # the target's own time: recording it is the fleet's
    if outcome.get("error") and job.get("history"):
        _record_failure(job, str(outcome["error"]), started_at)
    return _row(job, report, outcome, attempts, seconds)


def _record_failure(job: dict[str, Any], error: str, started_at: datetime) -> None:
    """A target that ended in error, after its retries, is one run in its --history, as `playbook
    run --history` records a run that could not diagnose: a fleet's blind spot shows in the trend.
    Only the record is written here, in the worker (the trend page is drawn by the target's next
    diagnosed run or by `playbook history`: drawing it costs seconds of matplotlib per failed
    target). A history that cannot be written is noted in the target's log, never a failed row."""
    from playbook.errors import PlaybookError
    from playbook.report.history import record_run
    from playbook.report.summary import error_summary

    history = Path(job["history"])
    try:
        record_run(
            history,
            summary=error_summary(job["public_dsn"], error),
            aggregated={},
            report=None,
            started_at=started_at,
            finished_at=datetime.now(timezone.utc),
            logs_until=None,
        )
    except (OSError, PlaybookError) as exc:
        _note(Path(job["out"]) / "logs" / f"{job['name']}.log", f"--history {history} failed: {exc}")


def _note(log: Path, line: str) -> None:
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} fleet: {line}\n")


def _attempt_in_child(job: dict[str, Any], deadline_at: float, log: Path, since: float) -> dict[str, Any]:
    """Fork, run one attempt in the child, wait for its outcome until the deadline, kill it after."""
    # One fork at a time, and the write end closed in the worker before the next: a child forked by
    # another thread in between would inherit this write end, and this pipe's end of file would
    # wait for that other child to exit too.
    with _FORK_LOCK:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid != 0:
            os.close(write_end)
    if pid == 0:  # the child: never returns into the worker
        code = 0
        try:
            os.close(read_end)
            os.setsid()  # its own process group: the deadline kills it whole
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            outcome = _attempt(job)
        except BaseException as exc:
            outcome = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            code = 1
        try:
            with os.fdopen(write_end, "wb") as pipe:  # writes it all, however long
                pipe.write(json.dumps(outcome, default=str).encode())
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    chunks: list[bytes] = []
    timed_out = False
    try:
        while True:
            remaining = deadline_at - time.monotonic()
            if remaining <= 0:
                timed_out = True
                _kill_tree(pid)
                break
            ready, _, _ = select.select([read_end], [], [], remaining)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    if timed_out:
        _remove_unfinished(Path(job["out"]) / "targets" / job["name"])
        return {
            "error": f"did not finish within its deadline of {float(job['deadline']):g} s",
            "deadline": True,
            "since": since,
        }
    try:
        decoded: Any = json.loads(b"".join(chunks) or b"null")
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        how = f"signal {-os.waitstatus_to_exitcode(status)}" if os.WIFSIGNALED(status) else "no outcome"
        return {"error": f"the run crashed ({how}); see logs/{job['name']}.log"}
    return decoded


def _kill_tree(pid: int) -> None:
    """The child's process group and every process below it (notebook kernels have sessions of their own)."""
    import psutil

    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        below = []
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            continue
        break
    for process in below:
        with contextlib.suppress(psutil.Error):
            process.kill()


def _remove_unfinished(report: Path) -> None:
    """What a killed attempt leaves: the run's private folder (inside the report or beside it,
    depending on the runner) and the pages' one beside it. No other attempt of this target runs."""
    import shutil

    for leftover in [*report.glob(".partial-*"), *report.parent.glob(f".{report.name}.*-*")]:
        if leftover.is_dir() and (".partial-" in leftover.name or ".pages-" in leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)


def _attempt(job: dict[str, Any]) -> dict[str, Any]:
    """In the child: the summary-only run, then the pages when the status reaches --render."""
    from playbook.errors import PlaybookError, TargetRefused
    from playbook.report.run_command import run

    if job.get("password_env"):
        password = os.environ.get(job["password_env"])
        if password is None:
            return {"error": f"the environment variable {job['password_env']} is not set on this worker"}
        os.environ["PGPASSWORD"] = password  # this child's environment only, inherited by its kernels
    out = Path(job["out"]) / "targets" / job["name"]
    asked = request_of(job)
    options = replace(
        asked,
        out=out,
        notebooks=(),  # no kernel for a target until its diagnosis says it deserves pages
        relevant_only=False,
        jobs=1,
        fail_on="never",
        progress=False,
    )
    try:
        run(options)
    except TargetRefused as exc:
        return {"error": str(exc), "transient": exc.cause in TRANSIENT_CAUSES}
    except PlaybookError as exc:
        return {"error": str(exc)}
    summary = json.loads((out / "summary.json").read_text())
    pages = pages_for(summary, job["render"], asked.notebooks)
    if pages or job.get("history"):
        # The final publish records the run (once, with its pages): the first one only diagnosed.
        history = Path(job["history"]) if job.get("history") else None
        summary = render_from_evidence(replace(options, history=history), pages)
    return {"status": summary["status"], "pages": [nb["name"] for nb in summary["notebooks"]]}


def request_of(job: dict[str, Any]) -> Any:
    """The target's RunRequest, built and checked by RunRequest.build when the targets file was
    read, and carried to the worker as a dict (asdict keeps its tuples, Paths and datetimes)."""
    from playbook.request import RunRequest

    return RunRequest(**job["request"])


def pages_for(summary: dict[str, Any], render: str, candidates: Sequence[str] | None = None) -> list[str]:
    """The notebooks worth executing for a summary: none below the --render threshold; else the
    runner's relevant pages at that threshold (triage and the notebook of every finding at or above
    it, at least a warning), among `candidates` (the target's `notebooks`; default: every shipped
    one). With --render critical a critical timeout gets triage and timeouts, not its side warnings'."""
    from playbook.report.run_command import relevant_notebooks
    from playbook.request import available_notebooks

    status = summary["status"]
    threshold = RENDER_RANK[render]
    if status not in STATUS_RANK or STATUS_RANK[status] < threshold:
        return []
    return relevant_notebooks(
        summary["findings"],
        available_notebooks() if candidates is None else list(candidates),
        "critical" if threshold == 2 else "warning",
    )


def render_from_evidence(options: Any, pages: list[str]) -> dict[str, Any]:
    """Execute `pages` on the evidence the run saved in options.out and publish the whole report
    again (pages, report.html, summary and index together), through the runner itself: the
    evidence is not collected again. Returns the new summary."""
    from playbook.report.run_command import run

    out = Path(options.out).resolve()
    run(replace(options, notebooks=tuple(pages), evidence_from=out / "evidence"))
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def _row(
    job: dict[str, Any], report: Path, outcome: dict[str, Any], attempts: int, seconds: float
) -> dict[str, Any]:
    """The fleet.json row: the status and causes come from the summary this run published."""
    summary = _fresh_summary(report / "summary.json", outcome)
    error = outcome.get("error")
    row: dict[str, Any] = {
        "name": job["name"],
        "labels": dict(job["labels"]),
        "dsn": job["public_dsn"],
        "status": "error",
        "top_cause": None,
        "top_cause_summary": None,
        "worst_finding": None,
        "findings": 0,
        "pages": list(outcome.get("pages") or []),
        "seconds": round(seconds, 2),
        "attempts": attempts,
        "error": error,
        "report": None,
    }
    if summary is not None:
        causes = summary.get("root_causes") or []
        row.update(
            status=summary["status"],
            top_cause=causes[0]["category"] if causes else None,
            top_cause_summary=causes[0]["summary"] if causes else None,
            worst_finding=worst_finding(summary.get("findings") or []),
            findings=len(summary.get("findings") or []),
            report=f"targets/{job['name']}/index.html",
            pages=[nb["name"] for nb in summary.get("notebooks") or [] if nb.get("html")],
        )
        if outcome.get("deadline"):
            row["error"] = f"{error}: diagnosed, but its pages were not rendered"
        elif summary["status"] == "error":  # every page asked for failed: the runner's rule
            failed = [nb.get("error") for nb in summary.get("notebooks") or [] if nb.get("error")]
            row["error"] = f"every notebook failed: {failed[0]}" if failed else "every notebook failed"
    return row


def _fresh_summary(path: Path, outcome: dict[str, Any]) -> dict[str, Any] | None:
    """This run's summary: none when the run failed, and none left over from an earlier fleet run
    (after a deadline, a summary published by this attempt still counts)."""
    if outcome.get("error") and not outcome.get("deadline"):
        return None
    try:
        if outcome.get("deadline") and path.stat().st_mtime < float(outcome["since"]):
            return None
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def worst_finding(findings: list[dict[str, Any]]) -> str | None:
    """The id of the most severe warning or critical finding, a cause before its consequences."""
    ranked = [f for f in findings if SEVERITY_RANK.get(f.get("severity", ""), 0) >= 1]
    if not ranked:
        return None
    best = max(
        ranked,
        key=lambda f: (SEVERITY_RANK[f["severity"]], not f.get("consequence_of"), f.get("confidence") or 0),
    )
    return str(best["id"])

"""`playbook run`: check, collect once, execute the notebooks, render, summarise, publish.

Everything is written into a private folder beside --out and swapped in for --out only at the end:
an interrupted or failed run never leaves a half-written report, an earlier report stays intact
until the new one is complete, and no page of an earlier run survives beside a new one. The
kernels' IPC sockets and connection files live in a folder of the run's own, removed whatever
happens (Ctrl-C included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext, suppress
from dataclasses import replace
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from playbook.collect.collection import collect_evidence
from playbook.collect.sources.read_path_probe import join_path_probe
from playbook.diagnose import diagnose_all
from playbook.errors import PlaybookError, TargetRefused
from playbook.evidence.views import detected_stack
from playbook.evidence.vocab import NOTEBOOK_FILES
from playbook.probes.path import read_probe
from playbook.progress import console
from playbook.report.index import report_header, verdict_line, write_index
from playbook.report.render import combined_report, notebook_to_html
from playbook.report.summary import build_summary, error_summary, exit_code, validate
from playbook.report.verdict import failed_notebooks
from playbook.request import RunRequest, notebook_dir, notebook_parameters
from playbook.target import Target, resolve_target
from playbook.watch.segments import evidence_from

NOTEBOOKS: dict[str, str] = {str(name): file for name, file in NOTEBOOK_FILES.items()}
KERNEL_NAME = "pg-session-playbook"
NOTEBOOK_TIMEOUT_S = 900  # a cell that hangs longer than this fails its notebook, not the whole run


def ipc_kernel_manager(directory: str | None = None) -> type:
    """Kernels talk over Unix sockets, not TCP: outputs describe a database and stay on this host.

    Sockets and connection files go into `directory` (default: the temp folder), so that the run
    that owns the directory removes them all even when a kernel was never shut down (Ctrl-C)."""
    from jupyter_client.manager import KernelManager

    folder = directory or tempfile.gettempdir()

    class IPCKernelManager(KernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            # IPC socket paths are "<ip>-<n>": a prefix of its own per kernel, or side-by-side kernels
            # pick the same paths and reject each other's messages.
            name = f"k{uuid.uuid4().hex[:12]}"  # short: a Unix socket path has at most 107 bytes
            kwargs.setdefault("ip", os.path.join(folder, name))
            kwargs.setdefault("connection_file", os.path.join(folder, f"kernel-{name}.json"))
            super().__init__(**kwargs)
            _STARTED_KERNELS.add(self)

    return IPCKernelManager


# The kernel managers this process created: on an interrupt their kernels are killed here.
_STARTED_KERNELS: weakref.WeakSet[Any] = weakref.WeakSet()


def kill_started_kernels() -> None:
    """Kill every kernel this process started that is still running, and remove its files.

    Why: a kernel runs in a session of its own (jupyter_client starts it so), so the terminal's
    Ctrl-C never reaches it, and an interrupted papermill skips its shutdown. A kernel still
    starting then writes its connection file after the run removed the kernel folder (ipykernel
    recreates the folder), and leaves it behind when it notices its parent gone (it exits with
    os._exit, no clean-up). Killed here, before the folder is removed, it writes nothing more."""
    for manager in list(_STARTED_KERNELS):
        process = getattr(getattr(manager, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            with suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)  # the kernel's session: it and its children
            with suppress(Exception):
                process.wait(timeout=10)
        with suppress(Exception):
            manager.cleanup_resources()  # its connection file and IPC sockets
        _STARTED_KERNELS.discard(manager)


SOCKET_DIR_MAX = 70  # room for "/k<12 hex>-<n>" under the 107 bytes of a Unix socket path


def kernel_folder() -> str:
    """A folder of the run's own for its kernels' sockets and connection files, in the temp
    folder, or in /tmp when the temp folder's path is too long for a Unix socket path."""
    base = tempfile.gettempdir()
    if len(base) > SOCKET_DIR_MAX - 20 and os.path.isdir("/tmp"):
        base = "/tmp"
    return tempfile.mkdtemp(prefix="pg-session-playbook-kernels-", dir=base)


RELEVANT = "relevant"
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def relevant_notebooks(
    findings: Sequence[Mapping[str, Any]], candidates: Sequence[str], threshold: str = "warning"
) -> list[str]:
    """The pages worth executing for these findings (summary.json's dicts): triage, and the
    notebook of every finding at or above `threshold` (at least a warning), in the playbook's
    order, among `candidates`. A healthy run gets triage alone."""
    rank = max(_SEVERITY_RANK.get(threshold, 1), _SEVERITY_RANK["warning"])
    wanted = {"triage"} | {
        str(f.get("notebook")) for f in findings if _SEVERITY_RANK.get(str(f.get("severity")), 0) >= rank
    }
    return [name for name in NOTEBOOKS if name in wanted and name in candidates]


def kernel_name() -> str:
    """Our own kernelspec (installed by `make install`), else the running Python's ipykernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def report_folder(request: RunRequest) -> Path:
    """--out: where the report goes (a notebook's own request has none)."""
    if request.out is None:
        raise PlaybookError("a run needs a report folder: give --out")
    return request.out


REPORT_MARKERS = ("summary.json", "index.html")


def check_out(out: Path) -> None:
    """--out is replaced whole by each run, so it must be new, empty or an earlier report: a folder
    of other files is bad input, never deleted."""
    if out.exists() and not out.is_dir():
        raise PlaybookError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in REPORT_MARKERS):
        raise PlaybookError(
            f"--out {out} holds files that are not a playbook report; a run replaces --out whole, "
            "so give a new or empty folder"
        )


def prepare_out(out: Path) -> Path:
    """The private folder the run writes into, hidden beside --out (same file system, so the
    finished report is renamed into place); an --out that cannot be written is bad input."""
    check_out(out)
    final = out.resolve()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # Absolute: the kernels run inside this folder, so a relative path would point elsewhere.
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent)).resolve()
    except OSError as exc:
        raise PlaybookError(f"cannot write the report to {out}: {exc.strerror or exc}") from None


def execute_notebook(
    name: str, work: str, parameters: dict[str, Any], kernel: str, kernel_dir: str | None = None
) -> dict[str, Any]:
    """Run one notebook with papermill; a failure is recorded in the result, not raised."""
    import papermill

    folder = Path(work)
    ipynb, html = f"{name}.ipynb", f"{name}.html"
    started = time.monotonic()
    error = None
    try:
        papermill.execute_notebook(
            str(notebook_dir() / NOTEBOOKS[name]),
            str(folder / ipynb),
            parameters=parameters,
            kernel_name=kernel,
            cwd=str(folder),
            progress_bar=False,
            log_output=False,
            execution_timeout=NOTEBOOK_TIMEOUT_S,
            kernel_manager_class=ipc_kernel_manager(kernel_dir),
        )
    except papermill.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"[:500]
    except Exception as exc:  # kernel died, notebook unreadable: the run goes on without it
        error = f"{type(exc).__name__}: {exc}"[:500]
    except BaseException:  # Ctrl-C: no kernel of ours outlives the run (see kill_started_kernels)
        kill_started_kernels()
        raise
    return {
        "name": name,
        "status": "failed" if error else "ok",
        "ipynb": ipynb,
        "html": html if (folder / ipynb).exists() else None,
        "seconds": round(time.monotonic() - started, 2),
        "error": error,
    }


def _stop_kernels_on_sigterm() -> None:
    """In a notebook worker: SIGTERM (the pool ending its workers after one of them died of the
    Ctrl-C, e.g. while idle) kills the worker's kernels first, as the interrupt does."""

    def stop(signum: int, _frame: object) -> None:
        kill_started_kernels()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def run_notebooks(
    options: RunRequest, work: Path, evidence_dir: Path, kernel_dir: str | None = None
) -> list[dict[str, Any]]:
    # Never the password: that reaches the kernel via PGPASSWORD. Offline, the kernels only read.
    parameters = notebook_parameters(options, evidence_dir)
    kernel = kernel_name()
    args = [(name, str(work), parameters, kernel, kernel_dir) for name in options.notebooks]
    results: list[dict[str, Any]] = []
    with console.status(f"executing {len(args)} notebook(s)…") if options.progress else nullcontext():
        if options.jobs <= 1 or len(args) == 1:
            results = [execute_notebook(*a) for a in args]
        else:
            with ProcessPoolExecutor(
                max_workers=options.jobs, mp_context=get_context("fork"), initializer=_stop_kernels_on_sigterm
            ) as pool:
                results = list(pool.map(execute_notebook, *zip(*args, strict=True)))
    return results


def render_pages(work: Path, results: list[dict[str, Any]], show_code: bool) -> None:
    for result in results:
        if result["html"] is None:
            continue
        try:
            notebook_to_html(work / result["ipynb"], work / result["html"], show_code=show_code)
        except Exception as exc:  # a page that cannot render is reported, the run goes on
            result["html"] = None
            result["status"] = "failed"
            result["error"] = result["error"] or f"rendering failed: {exc}"[:500]


def publish(work: Path, out: Path) -> None:
    """Swap the finished report in for --out: the earlier report is renamed aside, the new one
    renamed into place, then the earlier one removed; nothing of an earlier run is left beside
    the new report, and a failed rename puts the earlier report back."""
    final = out.resolve()
    if not final.exists():
        os.replace(work, final)
        return
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(final, old)
    try:
        os.replace(work, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def run(options: RunRequest) -> int:
    """One playbook run: check the input, collect the evidence once, diagnose it, execute the
    notebooks on that evidence, render the pages and report.html, and publish the report into
    `options.out`; then record it in --history, write --prometheus and post --notify.

    Bad input raises PlaybookError before anything is collected. The report is written into a
    private folder and replaces --out only when complete, so a failed or interrupted run never
    leaves a half-written report nor an empty --out. A history, metrics or notification that
    cannot be written is a warning on stderr: the report is out. Returns the exit code (0 ok,
    1 warning, 2 critical, 3 error, as moved by --fail-on).
    """
    started_at = datetime.now(timezone.utc)
    started = time.monotonic()
    out = report_folder(options)
    if options.path_probe is not None:
        read_probe(options.path_probe)  # a missing or garbled folder is one sentence, before anything
    if options.evidence_from is None:
        logs = [*options.server_logs, *options.app_logs, *options.pgbouncer_logs]
        for log in logs:
            check_readable(log)
        target, not_live = live_target(target_of(options), has_logs=bool(logs))
    else:
        target, not_live = None, None
    work = prepare_out(out)
    kernel_dir = kernel_folder()
    password = target.password if target is not None else None
    previous_password = os.environ.get("PGPASSWORD")
    try:
        if password:
            os.environ["PGPASSWORD"] = password  # for the kernels' own connections
        evidence = (
            # a watch folder's slice, or a saved run's evidence, with the --path-probe folder joined
            join_path_probe(evidence_from(options), options.path_probe)
            if options.evidence_from
            else collect_evidence(
                target,
                replace(options, invoked_at=options.invoked_at or started_at),
                not_live=not_live,
            )
        )
        evidence_dir = work / "evidence"
        evidence.save(evidence_dir)
        findings = diagnose_all(evidence)
        if options.relevant_only:
            chosen = tuple(relevant_notebooks([f.to_dict() for f in findings], options.notebooks))
            options = replace(options, notebooks=chosen, relevant_only=False)
        notebooks = run_notebooks(options, work, evidence_dir, kernel_dir)
        _rewrite_evidence_paths(work, evidence_dir, out.resolve() / "evidence")
        render_pages(work, notebooks, options.show_code)
        summary = build_summary(evidence, findings, notebooks)
        aggregated = _aggregates(evidence)
        if options.history is not None:
            summary["between_runs"] = _between_runs(options.history, aggregated)
        validate(summary)
        (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        stack = detected_stack(evidence)
        pages = [nb for nb in notebooks if nb.get("html")]
        combined_report(
            work,
            report_header(summary, stack=stack),
            pages,
            title=f"pg-session-playbook · {verdict_line(summary)}",
            show_code=options.show_code,
        )
        write_index(work, summary, evidence.manifest, stack=stack)
        publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(kernel_dir, ignore_errors=True)
        if password:
            if previous_password is None:
                os.environ.pop("PGPASSWORD", None)
            else:
                os.environ["PGPASSWORD"] = previous_password
    index = (out / "index.html").resolve()
    print(f"report: {index}")
    print(f"verdict: {verdict_line(summary)}")
    for warning in summary.get("evidence_warnings") or []:
        print(f"playbook: warning: {warning}", file=sys.stderr)
    failed = failed_notebooks(summary)
    for nb in failed:
        print(f"playbook: warning: notebook {nb['name']} failed: {nb.get('error')}", file=sys.stderr)
    finished_at = datetime.now(timezone.utc)
    after_publish(
        options,
        summary,
        aggregated,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=time.monotonic() - started,
        logs_until=_logs_until(evidence),
    )
    return exit_code(summary["status"], options.fail_on, failed_notebooks=len(failed))


def _aggregates(evidence: Any) -> dict[str, Any]:
    from playbook.report.history import aggregates

    return aggregates(evidence)


def _between_runs(history: Path, aggregated: dict[str, Any]) -> dict[str, Any] | None:
    from playbook.report.history import counter_deltas, load_records

    # A failed run in between read no counters: the deltas run from the last run that did.
    records = [r for r in load_records(history) if r.get("database_stats")] if history.is_dir() else []
    return counter_deltas(
        records[-1] if records else None, aggregated.get("database_stats") or [], datetime.now(timezone.utc)
    )


def _logs_until(evidence: Any) -> datetime | None:
    """Where this run stopped reading logs: --until, else the end of its window."""
    until = evidence.manifest.get("logs_until") or (evidence.manifest.get("window") or {}).get("end")
    return datetime.fromisoformat(until) if until else None


def _warn(what: str, exc: BaseException) -> None:
    print(f"playbook: warning: {what} failed: {exc}; the report is written", file=sys.stderr)


def after_publish(
    options: RunRequest,
    summary: dict[str, Any],
    aggregated: dict[str, Any],
    *,
    started_at: datetime,
    finished_at: datetime,
    duration_s: float,
    logs_until: datetime | None,
    published: bool = True,
) -> None:
    """--history, --prometheus, --notify for a finished run, or, with `published=False` and an
    "error" summary, for a run that could not diagnose: whatever --out holds then is an earlier
    run's report, never linked as this one's. Each failure is a warning, never a failed run."""
    candidate = report_folder(options).resolve() / "report.html"
    report = candidate if published and candidate.exists() else None
    if options.history is not None:
        from playbook.report.history import record_run, write_history_index

        try:
            record_run(
                options.history,
                summary=summary,
                aggregated=aggregated,
                report=report,
                started_at=started_at,
                finished_at=finished_at,
                logs_until=logs_until,
            )
            write_history_index(options.history)
        except (OSError, PlaybookError) as exc:
            _warn(f"--history {options.history}", exc)
    if options.prometheus is not None:
        from playbook.report.alerts import write_prometheus

        try:
            write_prometheus(
                options.prometheus,
                summary,
                finished_at=finished_at.timestamp(),
                duration_s=duration_s,
                peak_connections=aggregated.get("peak_connections"),
                usable_connections=aggregated.get("usable_connections"),
            )
        except OSError as exc:
            _warn(f"--prometheus {options.prometheus}", exc)
    if options.notify:
        from playbook.report.alerts import notify, reaches

        if reaches(summary["status"], options.fail_on):
            where = str(report or report_folder(options).resolve())
            notify(options.notify, summary, where)


def report_failure(options: RunRequest, error: str, *, started_at: datetime, duration_s: float) -> None:
    """A run that could not diagnose (bad input, no connection) still tells --history,
    --prometheus and --notify: a scheduled run that silently stops is the blind spot they exist
    for. Its history record reads no logs, so the next `--since last` starts where the last run
    that did read them stopped."""
    if options.prometheus is None and not options.notify and options.history is None:
        return
    public_dsn = "(offline)" if options.offline else options.public_dsn
    after_publish(
        options,
        error_summary(public_dsn, error),
        {},
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        duration_s=duration_s,
        logs_until=None,
        published=False,
    )


def target_of(request: RunRequest) -> Target | None:
    """The database a request names (its DSN, else PLAYBOOK_DSN, else libpq's environment); None
    offline. A malformed DSN is one sentence."""
    return None if request.offline else resolve_target(request.dsn)


def live_target(target: Target | None, *, has_logs: bool) -> tuple[Target | None, dict[str, Any] | None]:
    """The target to sample, or None with why there is no live evidence.

    Bad input (wrong password, unknown database, malformed DSN) is still one sentence and exit 3.
    A refusal that is part of the incident (no free slot, the server down, the path timing out)
    is not: with logs to read, the run diagnoses from them and the refusal becomes evidence.
    """
    if target is None:
        if not has_logs:
            raise PlaybookError(
                "--offline diagnoses from logs: give --server-log, --app-log or --pgbouncer-log"
            )
        return None, {"reason": "offline: a post-mortem from the logs given, no connection was tried"}
    try:
        target.check().close()
    except TargetRefused as exc:
        if not has_logs:
            raise
        print(f"playbook: {exc}; diagnosing from the logs alone", file=sys.stderr)
        return None, {"reason": str(exc), "sqlstate": exc.sqlstate, "cause": exc.cause}
    return target, None


def _rewrite_evidence_paths(work: Path, private: Path, final: Path) -> None:
    """The executed notebooks name the evidence folder; point them at where it will live."""
    for ipynb in work.glob("*.ipynb"):
        text = ipynb.read_text(encoding="utf-8")
        if str(private) in text:
            ipynb.write_text(text.replace(str(private), str(final)), encoding="utf-8")


def check_readable(path: Path) -> None:
    """Missing, unreadable or a directory: bad input, said before anything is collected."""
    if not path.exists():
        raise PlaybookError(f"log file {path} does not exist")
    if path.is_dir():
        raise PlaybookError(f"{path} is a directory, not a log file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise PlaybookError(f"cannot read log file {path}: {exc.strerror or exc}") from None

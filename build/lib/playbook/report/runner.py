"""`playbook run`: check, collect once, execute the notebooks, render, summarise.

Everything is written into a private folder inside --out and moved into place only at the end,
so an interrupted or failed run never leaves a half-written report that passes for a real one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from playbook.collect.run import collect_evidence
from playbook.diagnose import diagnose_all
from playbook.errors import PlaybookError, TargetRefused
from playbook.evidence.vocab import NOTEBOOK_FILES
from playbook.progress import console
from playbook.report.index import verdict_line, write_index
from playbook.report.render import notebook_to_html
from playbook.report.summary import build_summary, exit_code, validate
from playbook.target import Target

NOTEBOOKS: dict[str, str] = {str(name): file for name, file in NOTEBOOK_FILES.items()}
KERNEL_NAME = "pg-session-playbook"
NOTEBOOK_TIMEOUT_S = 900  # a cell that hangs longer than this fails its notebook, not the whole run


def ipc_kernel_manager() -> type:
    """Kernels talk over Unix sockets, not TCP: outputs describe a database and stay on this host."""
    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            # IPC socket paths are "<ip>-<n>": a prefix of its own per kernel, or side-by-side kernels
            # pick the same paths and reject each other's messages.
            kwargs.setdefault(
                "ip", os.path.join(tempfile.gettempdir(), f"pg-session-playbook-{uuid.uuid4().hex}")
            )
            super().__init__(**kwargs)

    return IPCKernelManager


def notebook_dir() -> Path:
    """The notebooks shipped inside the package (playbook/notebooks, the repository's notebooks/
    in a checkout), or $PLAYBOOK_NOTEBOOKS to run edited copies."""
    override = os.environ.get("PLAYBOOK_NOTEBOOKS")
    return Path(override) if override else Path(str(resources.files("playbook") / "notebooks"))


def available_notebooks() -> list[str]:
    return [name for name, file in NOTEBOOKS.items() if (notebook_dir() / file).exists()]


def select_notebooks(spec: str) -> list[str]:
    """'all' or a comma list of known names; an unknown or missing name is bad input."""
    if spec.strip() == "all":
        found = available_notebooks()
        if not found:
            # Never an "ok" report that looked at nothing: a run without notebooks diagnosed nothing.
            raise PlaybookError(f"no notebook to execute in {notebook_dir()}: reinstall pg-session-playbook")
        return found
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise PlaybookError("--notebooks names no notebook; use 'all' or some of " + ",".join(NOTEBOOKS))
    for name in names:
        if name not in NOTEBOOKS:
            raise PlaybookError(f"unknown notebook {name!r}; choose 'all' or some of {','.join(NOTEBOOKS)}")
        if name not in available_notebooks():
            raise PlaybookError(f"notebook {name!r} is not in {notebook_dir()}")
    return list(dict.fromkeys(names))


def kernel_name() -> str:
    """Our own kernelspec (installed by `make install`), else the running Python's ipykernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


@dataclass
class RunOptions:
    """What `playbook run` was asked: the target, the window, the logs, the notebooks, the report.

    `since` (default: the window's start) is where log events start counting; `app` focuses the
    per-application findings; `fail_on` moves the exit code's warning/critical threshold.
    """

    target: Target | None  # None: --offline, a post-mortem from logs alone
    out: Path
    duration: float = 60
    interval: float = 1.0
    server_logs: Sequence[Path] = ()
    app_logs: Sequence[Path] = ()
    pgbouncer_dsn: str | None = None
    pgbouncer_logs: Sequence[Path] = ()
    since: datetime | None = None
    until: datetime | None = None
    app: str | None = None
    log_tz: str | None = None
    app_tz: str | None = None
    notebooks: list[str] = field(default_factory=lambda: ["triage"])
    jobs: int = 1
    fail_on: str = "warning"
    show_code: bool = False
    progress: bool = True


def prepare_out(out: Path) -> Path:
    """The private folder the run writes into; an --out that cannot be written is bad input."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        # Absolute: the kernels run inside this folder, so a relative path would point elsewhere.
        return Path(tempfile.mkdtemp(prefix=".partial-", dir=out)).resolve()
    except OSError as exc:
        raise PlaybookError(f"cannot write the report to {out}: {exc.strerror or exc}") from None


def execute_notebook(name: str, work: str, parameters: dict[str, Any], kernel: str) -> dict[str, Any]:
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
            kernel_manager_class=ipc_kernel_manager(),
        )
    except papermill.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"[:500]
    except Exception as exc:  # kernel died, notebook unreadable: the run goes on without it
        error = f"{type(exc).__name__}: {exc}"[:500]
    return {
        "name": name,
        "status": "failed" if error else "ok",
        "ipynb": ipynb,
        "html": html if (folder / ipynb).exists() else None,
        "seconds": round(time.monotonic() - started, 2),
        "error": error,
    }


def run_notebooks(options: RunOptions, work: Path, evidence_dir: Path) -> list[dict[str, Any]]:
    parameters = {
        # Never the password: that reaches the kernel via PGPASSWORD. Offline, the kernels only read.
        "dsn": options.target.public_dsn if options.target is not None else "",
        "duration": options.duration,
        "interval": options.interval,
        "server_log": [str(p) for p in options.server_logs],
        "app_log": [str(p) for p in options.app_logs],
        "pgbouncer": options.pgbouncer_dsn or "",
        "pgbouncer_log": [str(p) for p in options.pgbouncer_logs],
        "evidence_dir": str(evidence_dir),
    }
    kernel = kernel_name()
    args = [(name, str(work), parameters, kernel) for name in options.notebooks]
    results: list[dict[str, Any]] = []
    with console.status(f"executing {len(args)} notebook(s)…") if options.progress else nullcontext():
        if options.jobs <= 1 or len(args) == 1:
            results = [execute_notebook(*a) for a in args]
        else:
            with ProcessPoolExecutor(max_workers=options.jobs, mp_context=get_context("fork")) as pool:
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
    """Move the finished report from the private folder into --out, replacing an older report."""
    for item in work.iterdir():
        destination = out / item.name
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        os.replace(item, destination)
    work.rmdir()


def run(options: RunOptions) -> int:
    """One playbook run: check the input, collect the evidence once, diagnose it, execute the
    notebooks on that evidence, render the pages and publish the report into `options.out`.

    Bad input raises PlaybookError before anything is collected. The report is written into a
    private folder and replaces --out only when complete, so a failed or interrupted run never
    leaves a half-written report. Returns the exit code (0 ok, 1 warning, 2 critical, 3 error,
    as moved by --fail-on).
    """
    logs = [*options.server_logs, *options.app_logs, *options.pgbouncer_logs]
    for log in logs:
        check_readable(log)
    target, not_live = live_target(options.target, has_logs=bool(logs))
    work = prepare_out(options.out)
    password = target.password if target is not None else None
    previous_password = os.environ.get("PGPASSWORD")
    try:
        if password:
            os.environ["PGPASSWORD"] = password  # for the kernels' own connections
        evidence = collect_evidence(
            target,
            duration=options.duration,
            interval=options.interval,
            server_logs=options.server_logs,
            app_logs=options.app_logs,
            pgbouncer_dsn=options.pgbouncer_dsn,
            pgbouncer_logs=options.pgbouncer_logs,
            since=options.since,
            until=options.until,
            app=options.app,
            log_tz=options.log_tz,
            app_tz=options.app_tz,
            not_live=not_live,
            progress=options.progress,
        )
        evidence_dir = work / "evidence"
        evidence.save(evidence_dir)
        findings = diagnose_all(evidence)
        notebooks = run_notebooks(options, work, evidence_dir)
        _rewrite_evidence_paths(work, evidence_dir, options.out.resolve() / "evidence")
        render_pages(work, notebooks, options.show_code)
        summary = build_summary(evidence, findings, notebooks)
        validate(summary)
        (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        write_index(work, summary, evidence.manifest)
        publish(work, options.out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if password:
            if previous_password is None:
                os.environ.pop("PGPASSWORD", None)
            else:
                os.environ["PGPASSWORD"] = previous_password
    index = (options.out / "index.html").resolve()
    print(f"report: {index}")
    print(f"verdict: {verdict_line(summary)}")
    return exit_code(summary["status"], options.fail_on)


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

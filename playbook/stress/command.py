"""`playbook stress`: a bounded concurrency test of a pool configuration (issue 18).

    playbook stress [--dsn DSN] --pool psycopg|sqlalchemy|asyncpg|node-postgres [--size N]
                    [--max-idle S] [--max-lifetime S] [--check] [--duration S]
                    [--config FILE.yaml] [--out DIR] --yes

N workers (--workers, default --size) drive the named client pool through bursts and idle gaps
sized to cross every idle limit in force (the server's, as the pool's sessions see them, and
PgBouncer's with --pgbouncer CONSOLE_DSN), with read-only transactions only. The pool never
opens more connections than the server's free slots minus a margin. Without --yes it says what it
would open and exits 3. Ctrl-C closes every connection and exits 130. Exit codes as `playbook
run`'s: 0 the pool holds, 1 warning / 2 critical when it breaks (moved by --fail-on), 3 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from playbook import extras, request
from playbook.cli import positive_int, positive_seconds
from playbook.errors import EXIT_ERROR, PlaybookError

if TYPE_CHECKING:  # imported where used: `playbook --help` and the other commands stay light
    from playbook.stress.pools import Job, PoolSettings, Unit
    from playbook.stress.workload import Slots

DEFAULT_DURATION_S = 60.0
DEFAULT_OUT = Path("stress-report")
CONFIG_KEYS = ("pool", "size", "min_size", "max_idle", "max_lifetime", "check", "workers", "pool_timeout")
PROGRESS_EVERY_S = 5.0
# The Python package each pool needs (SQLAlchemy and asyncpg are not in the core install).
LIBRARY = {"psycopg": "psycopg_pool", "sqlalchemy": "sqlalchemy", "asyncpg": "asyncpg"}
# The pools whose library comes with the [stress] extra (pip install 'pg-session-playbook[stress]').
STRESS_EXTRA = ("sqlalchemy", "asyncpg")


def _count(text: str) -> int:
    if text.strip() == "0":
        return 0
    return positive_int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from playbook.stress.pools import POOLS

    parser.add_argument(
        "--dsn", help="libpq DSN or URI of a staging server or its PgBouncer (else PLAYBOOK_DSN)"
    )
    parser.add_argument("--pool", choices=POOLS, help="the client pool to drive (or `pool:` in --config)")
    parser.add_argument("--size", type=positive_int, help="the pool's most connections (default 4)")
    parser.add_argument("--min-size", type=_count, help="connections kept open (default: the library's)")
    parser.add_argument("--max-idle", type=positive_seconds, help="the pool's idle limit, seconds")
    parser.add_argument("--max-lifetime", type=positive_seconds, help="the pool's lifetime limit, seconds")
    parser.add_argument("--check", action="store_true", default=None, help="test connections at checkout")
    parser.add_argument("--workers", type=positive_int, help="concurrent workers (default: --size)")
    parser.add_argument(
        "--duration", type=positive_seconds, default=DEFAULT_DURATION_S, help="seconds (5..600, default 60)"
    )
    parser.add_argument("--config", type=Path, help="a small YAML with pool, size, min_size, max_idle, ...")
    parser.add_argument("--pgbouncer", help="PgBouncer's admin console DSN: its timeouts are crossed too")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder (default stress-report)")
    parser.add_argument("--fail-on", choices=["critical", "warning", "never"], default="warning")
    parser.add_argument("--yes", action="store_true", help="really open the connections and hold them")


def load_config(path: Path | None) -> dict[str, Any]:
    """--config: a mapping of CONFIG_KEYS; anything else is refused in one sentence."""
    if path is None:
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlaybookError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PlaybookError(f"--config {path} is not YAML: {str(exc).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise PlaybookError(f"--config {path} must be a mapping of {', '.join(CONFIG_KEYS)}")
    unknown = sorted(set(map(str, loaded)) - set(CONFIG_KEYS))
    if unknown:
        raise PlaybookError(
            f"--config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}"
        )
    return dict(loaded)


def settings_of(args: argparse.Namespace) -> tuple[Any, int]:
    """The PoolSettings and worker count of the flags over --config (a flag given wins)."""
    from playbook.stress.pools import POOLS, PoolSettings, validated

    config = load_config(args.config)

    def pick(name: str, flag: Any) -> Any:
        return flag if flag is not None else config.get(name)

    pool = pick("pool", args.pool)
    if pool not in POOLS:
        raise PlaybookError(
            f"--pool is required: one of {', '.join(POOLS)}"
            if pool is None
            else f"unknown pool {pool!r}; expected one of {', '.join(POOLS)}"
        )
    try:
        size = request.positive_int(pick("size", args.size) or 4)
        min_size = pick("min_size", args.min_size)
        values = {name: pick(name, getattr(args, name)) for name in ("max_idle", "max_lifetime")}
        settings = PoolSettings(
            pool=pool,
            size=size,
            min_size=None if min_size is None else int(min_size),
            max_idle=None if values["max_idle"] is None else request.positive_seconds(values["max_idle"]),
            max_lifetime=None
            if values["max_lifetime"] is None
            else request.positive_seconds(values["max_lifetime"]),
            check=bool(pick("check", args.check) or False),
            pool_timeout=request.positive_seconds(config.get("pool_timeout", 5.0)),
        )
        workers = request.positive_int(pick("workers", args.workers) or size)
    except (TypeError, ValueError) as exc:
        raise PlaybookError(f"--config: {exc}") from None
    return validated(settings), workers


def _require_library(pool: str) -> None:
    """The pool's library is importable here (node-postgres: node and its `pg` package), else one
    sentence (exit 3) saying what to install: the [stress] extra for SQLAlchemy and asyncpg."""
    from playbook.stress.pools import node_unavailable

    if pool == "node-postgres":
        reason = node_unavailable()
        if reason:
            raise PlaybookError(reason)
    elif pool in STRESS_EXTRA and importlib.util.find_spec(LIBRARY[pool]) is None:
        extras.require("stress", f"playbook stress --pool {pool}")
    elif importlib.util.find_spec(LIBRARY[pool]) is None:
        raise PlaybookError(
            f"--pool {pool} needs {LIBRARY[pool]}, which is not installed here: "
            f"pip install {LIBRARY[pool].replace('_', '-')} in the playbook's environment"
        )


def run(args: argparse.Namespace) -> int:
    from playbook.report.summary import exit_code
    from playbook.target import resolve_target

    settings, workers = settings_of(args)
    duration = float(args.duration)
    if not 5 <= duration <= 600:
        raise PlaybookError(f"--duration must be between 5 and 600 s, not {duration:g}")
    target = resolve_target(args.dsn)
    if not args.yes:
        print(
            f"playbook stress would open up to {settings.size} connection(s) to {target.redacted} "
            f"({settings.pool} pool, {workers} worker(s)) and hold them for {duration:g} s, running "
            "read-only transactions only: point it at staging first, and add --yes to run it",
            file=sys.stderr,
        )
        return EXIT_ERROR
    _require_library(settings.pool)
    summary = stress(settings, workers, duration, target, args.pgbouncer, args.out)
    print(
        f"stress: {summary['stress']['verdict']} ({summary['status']}): {(args.out / 'index.html').resolve()}"
    )
    return exit_code(summary["status"], args.fail_on)


def _progress(recorder: Any, duration: float, stop: threading.Event) -> None:
    while not stop.wait(PROGRESS_EVERY_S):
        units = list(recorder.units)
        failed = sum(1 for u in units if not u["ok"])
        print(
            f"stress: {recorder.now():.0f}/{duration:g} s, {len(units)} requests, {failed} failed, "
            f"{len(recorder.opens)} connections opened",
            file=sys.stderr,
        )


def interrupted(exc: BaseException) -> bool:
    """Whether an error was raised while a Ctrl-C was being handled (psycopg cut mid-query fails
    the next command on that session: "another command is already in progress"): then the
    interrupt is what happened, not the error."""
    seen, depth = exc.__context__, 0
    while seen is not None and depth < 20:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen, depth = seen.__context__, depth + 1
    return False


@contextlib.contextmanager
def _setup_read(own: Any, what: str) -> Iterator[None]:
    """Around a read before the pool opens: a driver error becomes one sentence (exit 3) and an
    interrupt stays an interrupt (exit 130), even when a driver error followed it; the stress's
    own session is closed either way."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        own.close()
        if interrupted(exc):
            raise KeyboardInterrupt from None
        raise PlaybookError(f"{what}: {exc}".splitlines()[0]) from None
    except BaseException:
        own.close()
        raise


@dataclass(frozen=True)
class Setup:
    """What the stress read before it opened its pool: the limits the pool's sessions run under
    (seconds), the server's slots, who and where those sessions are (role, database, server
    version), and PgBouncer's own limits (empty without --pgbouncer)."""

    limits: dict[str, float]
    slots: Slots
    role: str
    database: str
    server_version: str
    pooler: dict[str, Any]


@dataclass(frozen=True)
class Cap:
    """How many connections the stress opens: `connections`, the pool's size within the server's
    `free_slots` minus a margin, and the sentence the report says it in."""

    connections: int
    free_slots: int
    sentence: str


def _make_out(out: Path) -> None:
    """The report folder, created if need be; a folder that cannot be is one sentence (exit 3)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlaybookError(f"cannot create --out {out}: {exc.strerror or exc}") from None


def _read_setup(target: Any, own: Any, app: str, console: str | None, notes: list[str]) -> Setup:
    """The setup reads: the limits, slots, role, database and server version, read in read-only
    transactions on a session of their own (named `{app}-setup`, shaped as the pool's sessions so
    role and database settings count), then PgBouncer's SHOW CONFIG through `console`. A driver
    error is one sentence (exit 3), Ctrl-C stays an interrupt (exit 130) and `own` is closed on
    either. Through a pooler with no console, `notes` says its timeouts are not known."""
    import psycopg

    from playbook.stress.pools import psycopg_kwargs
    from playbook.stress.workload import read_pooler_limits, read_server_limits, read_slots

    pooled = bool(own.pooled)
    with (
        _setup_read(own, "cannot read the limits the pool's sessions run under"),
        psycopg.connect(target.dsn, connect_timeout=10, **psycopg_kwargs(f"{app}-setup", pooled)) as probe,
    ):
        try:
            limits = read_server_limits(probe)
            slots = read_slots(probe)
            row = probe.execute(
                "SELECT current_user, current_database(), current_setting('server_version')"
            ).fetchone()
        except KeyboardInterrupt:
            probe.close()  # cut mid-query: no ROLLBACK on the way out (see read_only_rows)
            raise
    assert row is not None
    pooler: dict[str, Any] = {}
    if console:
        with _setup_read(own, "cannot read PgBouncer's SHOW CONFIG through --pgbouncer"):
            pooler = read_pooler_limits(console)
    elif pooled:
        notes.append(
            "reached through a pooler whose console was not given (--pgbouncer): its own timeouts "
            "are not known, only what the server side shows"
        )
    return Setup(limits, slots, str(row[0]), str(row[1]), str(row[2]), pooler)


def _capped(settings: PoolSettings, slots: Slots, own: Any, notes: list[str]) -> tuple[PoolSettings, Cap]:
    """The cap: the settings with their size (and min_size) lowered to the server's free slots
    minus a margin, `notes` saying so when they were. With no slot to spare, `own` is closed and
    the stress refused in one sentence (exit 3): it opens none."""
    cap = slots.cap()
    free = slots.max_connections - slots.reserved - slots.in_use
    if cap < 1:
        own.close()
        raise PlaybookError(
            f"the server has no slot to spare: {slots.max_connections} max_connections, "
            f"{slots.reserved} reserved, {slots.in_use} in use; the stress opens none"
        )
    sentence = (
        f"{min(settings.size, cap)} connection(s): --size {settings.size}, the server's free slots "
        f"{free} minus a margin allow {cap}"
    )
    if settings.size > cap:
        notes.append(f"--size {settings.size} lowered to {cap}: {sentence}")
        settings = replace(
            settings, size=cap, min_size=min(settings.min_size, cap) if settings.min_size else None
        )
    return settings, Cap(min(settings.size, cap), free, sentence)


def _unit_of(limits: dict[str, float]) -> Unit:
    """The unit of work: its statement bound half the server's statement_timeout (taken as 10 s
    when off), kept within 100 ms..2 s."""
    from playbook.stress.pools import Unit

    return Unit(statement_timeout_ms=max(100, min(2000, int((limits.get("statement_timeout") or 10) * 500))))


def _run_pool(job: Job, own: Any, duration: float, idle_limits: dict[str, float], notes: list[str]) -> None:
    """Running: directly on the server, a monitor on `own` watches the pool's backends (through a
    pooler `own` is closed and `notes` says losses come from the pool's errors); progress on
    stderr every PROGRESS_EVERY_S; the pool's runner through the schedule. Whatever happens the
    workers are stopped, the monitor and `own` closed; a driver error raised while a Ctrl-C was
    handled is re-raised as the interrupt (exit 130)."""
    from playbook.stress.pools import RUNNERS
    from playbook.stress.workload import Monitor

    monitor = None
    if job.pooled:
        own.close()
        notes.append(
            "through a pooler the server's backends are the pooler's: connections cut are counted "
            "from the pool's own errors, not from pg_stat_activity"
        )
    else:
        monitor = Monitor(own, job.app, job.recorder)
        monitor.start()
    progress_stop = threading.Event()
    progress = threading.Thread(target=_progress, args=(job.recorder, duration, progress_stop), daemon=True)
    progress.start()
    print(
        f"stress: {job.settings.pool} pool of {job.settings.size}, {job.workers} worker(s), {duration:g} s, "
        f"gaps crossing "
        f"{', '.join(idle_limits) or 'no idle limit (none in force)'}",
        file=sys.stderr,
    )
    try:
        RUNNERS[job.settings.pool](job)
    except KeyboardInterrupt:
        job.stop.set()
        raise
    except Exception as exc:
        job.stop.set()
        if interrupted(exc):  # a pool's close failing on a session Ctrl-C cut mid-query
            raise KeyboardInterrupt from None
        raise
    finally:
        job.stop.set()
        progress_stop.set()
        if monitor is not None:
            time.sleep(0.3)  # one more poll, so a close at the very end is seen as the pool's
            monitor.close()
        own.close()


def _report(
    out: Path,
    job: Job,
    setup: Setup,
    cap: Cap,
    idle_limits: dict[str, float],
    target: Any,
    started_at: datetime,
    notes: list[str],
) -> dict[str, Any]:
    """Reporting: the run analysed into findings and its `stress` object (pool, cap, limits,
    phases, the model's expectation), written as OUT/summary.json and OUT/index.html; returns
    the summary."""
    from playbook.stress import report
    from playbook.stress.pools import expectation
    from playbook.target import POOLER_NOTE

    settings, recorder, phases = job.settings, job.recorder, job.phases
    findings, stress_object = report.analyse(
        recorder, settings, setup.limits, role=setup.role, database=setup.database
    )
    ran_s = recorder.now()
    stress_object.update(
        {
            "pool": settings.described(),
            "workers": job.workers,
            "cap": {"connections": cap.connections, "free_slots": cap.free_slots, "sentence": cap.sentence},
            "limits": {
                "server": setup.limits,
                "pooler": setup.pooler,
                "crossed": sorted({p.crosses for p in phases if p.crosses}),
            },
            "phases": [
                {"start": p.start, "burst_end": p.burst_end, "end": p.end, "crosses": p.crosses}
                for p in phases
            ],
            "through_pooler": job.pooled,
            "model": expectation(settings, idle_limits),
        }
    )
    summary = report.build(
        findings=findings,
        stress=stress_object,
        dsn=target.redacted,
        server_version=setup.server_version,
        pooler_note=POOLER_NOTE if job.pooled else None,
        started_at=started_at,
        duration_s=ran_s,
        notes=notes,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    report.write_html(out, summary, report.figure_png(recorder, stress_object))
    return summary


def stress(
    settings: PoolSettings, workers: int, duration: float, target: Any, console: str | None, out: Path
) -> dict[str, Any]:
    """Run the stress and write DIR/summary.json and DIR/index.html; returns the summary.

    In order: the report folder, the stress's own session (target.check(): safe, named,
    read-only; it finds out whether a pooler is in the way), the setup reads, the cap, the
    schedule crossing every idle limit in force, the run, the report. Bad input or a setup read
    that fails: PlaybookError (exit 3); Ctrl-C: KeyboardInterrupt (exit 130), nothing left open."""
    from playbook.stress import report
    from playbook.stress.pools import Job
    from playbook.stress.workload import Recorder, build_schedule, idle_limits_in_force

    _make_out(out)
    own = target.check()
    app = f"playbook-stress-{os.getpid()}"
    notes: list[str] = []
    setup = _read_setup(target, own, app, console, notes)
    settings, cap = _capped(settings, setup.slots, own, notes)
    idle_limits = idle_limits_in_force(setup.limits, setup.pooler)
    phases, schedule_notes = build_schedule(idle_limits, duration)
    notes += schedule_notes
    unit = _unit_of(setup.limits)
    recorder = Recorder()
    started_at = report.now_utc()
    job = Job(settings, target.dsn, app, bool(own.pooled), workers, phases, recorder, threading.Event(), unit)
    _run_pool(job, own, duration, idle_limits, notes)
    notes += recorder.notes
    return _report(out, job, setup, cap, idle_limits, target, started_at, notes)

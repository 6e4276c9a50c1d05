"""One run, as it was asked for: what to read, where, which window, zones, prefix, pooler, report.

`RunRequest` is frozen and typed; the CLI (`playbook run`), a notebook's parameters cell and each
fleet target build it the same way, through `RunRequest.build`, which validates every value and
says what is wrong in one sentence (PlaybookError). Everything downstream (the sources in
collect/, the report in report/) reads the request, never a list of loose arguments.

This module imports nothing heavier than the standard library and playbook.errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class RunRequest:
    """What one run reads and writes. Times are aware datetimes (UTC); paths are Paths."""

    # -- the target -------------------------------------------------------------------------
    dsn: str | None = None  # libpq DSN without password; None: PLAYBOOK_DSN, else the PG* variables
    offline: bool = False  # logs only: no database session at all
    # -- the window -------------------------------------------------------------------------
    duration: float = 60.0  # seconds of sampling
    interval: float = 1.0  # seconds between two samples
    since: datetime | None = None  # log events count from here (default: when the user asked)
    until: datetime | None = None  # ... and up to here (default: the window's end)
    invoked_at: datetime | None = None  # when the user asked
    # -- what to read ---------------------------------------------------------------------------
    server_logs: tuple[Path, ...] = ()
    app_logs: tuple[Path, ...] = ()
    pgbouncer_dsn: str | None = None  # PgBouncer's admin console; None: not sampled
    pgbouncer_logs: tuple[Path, ...] = ()
    log_prefix: str | None = None  # the server's log_line_prefix; None: read live, else guessed
    log_tz: str | None = None  # the zone of the server log's clock; None: the server's log_timezone
    app_tz: str | None = None  # the zone of naive times in application logs; None: this machine's
    app: str | None = None  # focus the per-application findings on this application_name
    evidence_from: Path | None = None  # diagnose the evidence saved there instead of collecting
    # -- the report -----------------------------------------------------------------------------
    out: Path | None = None
    notebooks: tuple[str, ...] = ("triage",)
    relevant_only: bool = False  # of `notebooks`, only triage and the pages of the findings
    jobs: int = 1
    fail_on: str = "warning"
    show_code: bool = False
    progress: bool = True
    history: Path | None = None
    notify: str | None = None
    prometheus: Path | None = None

"""One run, as it was asked for: what to read, where, which window, zones, prefix, pooler, report.

`RunRequest` is frozen and typed; the CLI (`playbook run`), a notebook's parameters cell and each
fleet target build it the same way, through `RunRequest.build`, which validates every value and
says what is wrong in one sentence (PlaybookError). Everything downstream (the sources in
collect/, the report in report/) reads the request, never a list of loose arguments.

This module imports nothing heavier than the standard library and playbook.errors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from playbook.errors import PlaybookError

FAIL_ON = ("critical", "warning", "never")
ALL, RELEVANT = "all", "relevant"
SINCE_LAST = "last"  # --since last: resolved by the CLI from --history, before the request is built


@dataclass(frozen=True)
class RunRequest:
    """What one run reads and writes. Times are aware datetimes (UTC); paths are Paths."""

    # -- the target -------------------------------------------------------------------------
    # libpq DSN; None: PLAYBOOK_DSN, else the PG* variables. Only `playbook run --dsn` may carry a
    # password (it reaches the kernels through PGPASSWORD): never shown, not even in repr.
    dsn: str | None = field(default=None, repr=False)
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
    path_probe: Path | None = None  # a `playbook probe path` folder: the path's measured cut-off
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

    @classmethod
    def build(
        cls,
        *,
        dsn: str | None = None,
        offline: bool = False,
        duration: Any = 60.0,
        interval: Any = 1.0,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        invoked_at: datetime | None = None,
        server_log: Any = (),
        app_log: Any = (),
        pgbouncer: str | None = None,
        pgbouncer_log: Any = (),
        prefix: str | None = None,
        log_tz: str | None = None,
        app_tz: str | None = None,
        app: str | None = None,
        evidence_from: str | Path | None = None,
        path_probe: str | Path | None = None,
        out: str | Path | None = None,
        notebooks: str | Sequence[str] = ("triage",),
        jobs: Any = 1,
        fail_on: str = "warning",
        show_code: bool = False,
        progress: bool = True,
        history: str | Path | None = None,
        notify: str | None = None,
        prometheus: str | Path | None = None,
        password_allowed: bool = False,
        spelled: Literal["key", "flag"] = "key",
    ) -> RunRequest:
        """The one validating constructor: every entry point gives its raw values here, under the
        names a user knows them by (`server_log`, `pgbouncer`, `prefix`, …: the flags without
        their dashes, the notebooks' parameters, a fleet target's YAML keys).

        Strings are parsed (times as `since_moment` reads them, zones as `zone_named` does,
        numbers, paths); an empty string means "not given". Any bad value is one PlaybookError
        sentence naming the option as the caller spells it (`spelled="flag"`: --log-tz, else
        log_tz). A DSN with a password is refused unless `password_allowed` (`playbook run --dsn`
        only: the password travels to the kernels through PGPASSWORD, never in a file).
        `notebooks` is 'all', 'relevant', a comma list or a list of names.
        """
        name = _FLAG if spelled == "flag" else _KEY
        offline = bool(offline)
        dsn = _text(dsn, name("dsn"))
        pgbouncer = _text(pgbouncer, name("pgbouncer"))
        server_logs = paths(server_log, name("server_log"))
        app_logs = paths(app_log, name("app_log"))
        pgbouncer_logs = paths(pgbouncer_log, name("pgbouncer_log"))
        # Flags that contradict each other are said before anything heavy loads.
        if offline and (dsn or pgbouncer):
            raise PlaybookError(
                f"{name('offline')} reads logs only: drop {name('dsn')} and {name('pgbouncer')}, "
                f"or drop {name('offline')}"
            )
        if offline and not (server_logs or app_logs or pgbouncer_logs):
            raise PlaybookError(
                f"{name('offline')} diagnoses from logs: give {name('server_log')}, "
                f"{name('app_log')} or {name('pgbouncer_log')}"
            )
        for key, value in (("dsn", dsn), ("pgbouncer", pgbouncer)):
            if value is not None:
                check_dsn(value, password_allowed=password_allowed, what=name(key))
        seconds = named(name("duration"), positive_seconds, duration)
        every = named(name("interval"), positive_seconds, interval)
        since_at = named(name("since"), moment, since)
        until_at = named(name("until"), moment, until)
        if since_at and until_at and until_at <= since_at:
            raise PlaybookError(f"{name('until')} must be later than {name('since')}")
        chosen, relevant_only = notebook_selection(notebooks, name("notebooks"))
        if fail_on not in FAIL_ON:
            raise PlaybookError(f"{name('fail_on')} must be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
        return cls(
            dsn=dsn,
            offline=offline,
            duration=seconds,
            interval=min(every, seconds),  # a sample every 5 s of a 2 s window is one sample
            since=since_at,
            until=until_at,
            invoked_at=invoked_at,
            server_logs=server_logs,
            app_logs=app_logs,
            pgbouncer_dsn=pgbouncer,
            pgbouncer_logs=pgbouncer_logs,
            log_prefix=_text(prefix, name("prefix")),
            log_tz=named(name("log_tz"), time_zone, _text(log_tz, name("log_tz"))),
            app_tz=named(name("app_tz"), time_zone, _text(app_tz, name("app_tz"))),
            app=_text(app, name("app")),
            evidence_from=_path(evidence_from, name("evidence_from")),
            path_probe=_path(path_probe, name("path_probe")),
            out=_path(out, name("out")),
            notebooks=chosen,
            relevant_only=relevant_only,
            jobs=named(name("jobs"), positive_int, jobs),
            fail_on=fail_on,
            show_code=bool(show_code),
            progress=bool(progress),
            history=_path(history, name("history")),
            notify=named(name("notify"), webhook_url, _text(notify, name("notify"))),
            prometheus=_path(prometheus, name("prometheus")),
        )

    @property
    def public_dsn(self) -> str:
        """The DSN as reports and notebook kernels see it: no password, "" offline."""
        from playbook.target import redact

        return "" if self.offline else redact(self.resolved_dsn())

    def resolved_dsn(self) -> str:
        """`dsn`, else PLAYBOOK_DSN, else "" (libpq reads the PG* variables and the service file)."""
        return self.dsn if self.dsn is not None else os.environ.get("PLAYBOOK_DSN", "")


# -- how each entry point names an option ---------------------------------------------------------
def _KEY(key: str) -> str:  # noqa: N802  (a constant-like spelling function)
    return key


def _FLAG(key: str) -> str:  # noqa: N802
    return "--" + key.replace("_", "-")


def named(what: str, parse: Callable[[Any], Any], value: Any) -> Any:
    """`parse(value)`, None for None; its one sentence said with the option's name in front."""
    if value is None:
        return None
    try:
        return parse(value)
    except PlaybookError as exc:
        raise PlaybookError(f"{what}: {exc}") from None


# -- the checks, one copy each (the CLI's argparse types call them too) ----------------------------
def _positive_number(value: Any, unit: str) -> float:
    if isinstance(value, bool):
        raise PlaybookError(f"{value!r} is not a number of {unit}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlaybookError(f"{value!r} is not a number of {unit}") from None
    if not math.isfinite(number) or number <= 0:
        raise PlaybookError(f"{value!r} must be a positive number of {unit}")
    return number


def positive_seconds(value: Any) -> float:
    """A positive, finite number of seconds, from a number or its text."""
    return _positive_number(value, "seconds")


def positive_days(value: Any) -> float:
    """A positive, finite number of days, from a number or its text."""
    return _positive_number(value, "days")


def positive_int(value: Any) -> int:
    """A whole number of at least 1, from a number or its text."""
    if isinstance(value, (bool, float)):
        raise PlaybookError(f"{value!r} is not a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PlaybookError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise PlaybookError(f"{value!r} must be 1 or more")
    return number


def moment(value: str | datetime) -> datetime | None:
    """'90s', '30m', '2h', '1d' ago, or an ISO-8601 time (UTC when it names no zone); a datetime
    is taken as it is (UTC when naive); "" is None."""
    from datetime import timezone

    from playbook.evidence.zones import since_moment

    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise PlaybookError(f"{value!r} is neither a duration like 30m or 2h nor an ISO-8601 time")
    if not value.strip():
        return None
    try:
        return since_moment(value.strip())
    except ValueError as exc:
        raise PlaybookError(str(exc)) from None


def time_zone(value: str) -> str:
    """An IANA zone name or a numeric offset, checked now so a typo is one sentence, not a wrong clock."""
    from playbook.evidence.zones import zone_named

    zone_named(value)
    return value


def webhook_url(value: str) -> str:
    """An http(s) URL, checked now so a typo is one sentence, not a silent lost alert."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PlaybookError(f"{value!r} is not an http(s) URL")
    return value


def check_dsn(dsn: str, *, password_allowed: bool, what: str = "dsn") -> None:
    """A DSN libpq can parse; with a password only where `password_allowed`. The sentence never
    repeats the DSN (it may hold the password)."""
    from playbook.target import SECRET_KEYS, parse_dsn

    try:
        params = parse_dsn(dsn)
    except PlaybookError as exc:
        raise PlaybookError(f"{what}: {exc}") from None
    if not password_allowed and any(key in params for key in SECRET_KEYS):
        raise PlaybookError(
            f"{what} has a password in it; a password never stands in a targets file or a "
            "notebook: use ~/.pgpass, a service file, PGPASSWORD or a fleet target's password_env"
        )


def paths(value: Any, what: str) -> tuple[Path, ...]:
    """A list of file paths (one path alone is accepted too); they are read later, not checked here."""
    if value is None:
        return ()
    items = [value] if isinstance(value, (str, Path)) else value
    if not isinstance(items, (list, tuple)) or not all(
        isinstance(item, Path) or (isinstance(item, str) and item) for item in items
    ):
        raise PlaybookError(f"{what} must be a list of file paths")
    return tuple(Path(item) for item in items)


def _path(value: str | Path | None, what: str) -> Path | None:
    if value is None or value == "":
        return None
    if not isinstance(value, (str, Path)):
        raise PlaybookError(f"{what} must be a path")
    return Path(value)


def _text(value: Any, what: str) -> str | None:
    """A string option: "" and None are "not given"."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PlaybookError(f"{what} must be a string, not {type(value).__name__}")
    return value


# -- the notebooks --------------------------------------------------------------------------------
def notebook_files() -> dict[str, str]:
    """Every notebook the playbook ships, by name, in the playbook's order."""
    from playbook.evidence.vocab import NOTEBOOK_FILES

    return {str(name): file for name, file in NOTEBOOK_FILES.items()}


def notebook_dir() -> Path:
    """The notebooks shipped inside the package (playbook/notebooks, the repository's notebooks/
    in a checkout), or $PLAYBOOK_NOTEBOOKS to run edited copies."""
    override = os.environ.get("PLAYBOOK_NOTEBOOKS")
    return Path(override) if override else Path(str(resources.files("playbook") / "notebooks"))


def available_notebooks() -> list[str]:
    return [name for name, file in notebook_files().items() if (notebook_dir() / file).exists()]


def notebook_selection(spec: str | Sequence[str], what: str = "notebooks") -> tuple[tuple[str, ...], bool]:
    """(names, relevant_only) of 'all', 'relevant' (the candidates are all; the runner keeps the
    relevant ones), a comma list or a list of known names; an unknown or missing name is bad input.
    An empty list is no notebook at all (a fleet target's first, summary-only run)."""
    known = notebook_files()
    if isinstance(spec, str) and spec.strip() in (ALL, RELEVANT):
        found = available_notebooks()
        if not found:
            # Never an "ok" report that looked at nothing: a run without notebooks diagnosed nothing.
            raise PlaybookError(f"no notebook to execute in {notebook_dir()}: reinstall pg-session-playbook")
        return tuple(found), spec.strip() == RELEVANT
    if isinstance(spec, str):
        names = [part.strip() for part in spec.split(",") if part.strip()]
        if not names:
            raise PlaybookError(f"{what} names no notebook; use 'all' or some of " + ",".join(known))
    elif isinstance(spec, (list, tuple)) and all(isinstance(part, str) for part in spec):
        names = [part.strip() for part in spec]
    else:
        raise PlaybookError(f"{what} must be 'all', 'relevant' or a list of notebook names")
    for name in names:
        if name not in known:
            raise PlaybookError(f"unknown notebook {name!r}; choose 'all' or some of {','.join(known)}")
        if name not in available_notebooks():
            raise PlaybookError(f"notebook {name!r} is not in {notebook_dir()}")
    return tuple(dict.fromkeys(names)), False


# -- what a notebook is given ---------------------------------------------------------------------
def notebook_parameters(request: RunRequest, evidence_dir: Path | str) -> dict[str, Any]:
    """The notebooks' parameters for this request: what `RunRequest.build` reads back from a
    notebook's parameters cell. Never the password: that reaches the kernel via PGPASSWORD."""
    return {
        "dsn": request.public_dsn,
        "duration": request.duration,
        "interval": request.interval,
        "server_log": [str(p) for p in request.server_logs],
        "app_log": [str(p) for p in request.app_logs],
        "pgbouncer": request.pgbouncer_dsn or "",
        "pgbouncer_log": [str(p) for p in request.pgbouncer_logs],
        "log_tz": request.log_tz or "",
        "app_tz": request.app_tz or "",
        "prefix": request.log_prefix or "",
        "evidence_dir": str(evidence_dir),
        "app": request.app or "",
        "since": request.since.isoformat() if request.since else "",
        "until": request.until.isoformat() if request.until else "",
    }

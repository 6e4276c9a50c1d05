"""`playbook …`: run, history, fleet, lab, demo, logs, probe, stress, watch.

Bad input is one sentence on stderr and exit 3."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from playbook import __version__, extras, request
from playbook.errors import EXIT_ERROR, PlaybookError

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 3 with one sentence, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def argument_type(check: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from one of playbook.request's checks: its PlaybookError sentence becomes
    argparse's usage error, so a flag is checked by the same code as a notebook or a fleet target."""

    def parse(text: str) -> T:
        try:
            return check(text)
        except PlaybookError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = check.__name__  # what argparse names in "invalid <type> value"
    return parse


positive_seconds = argument_type(request.positive_seconds)
positive_days = argument_type(request.positive_days)
positive_int = argument_type(request.positive_int)
webhook_url = argument_type(request.webhook_url)
time_zone = argument_type(request.time_zone)
SINCE_LAST = request.SINCE_LAST


def _moment(text: str) -> datetime:
    """'90s', '30m', '2h', '1d' ago, or an ISO-8601 time (UTC when it has no zone)."""
    from playbook.evidence.zones import since_moment

    try:
        return since_moment(text)
    except ValueError as exc:
        raise PlaybookError(str(exc)) from None


def _moment_or_last(text: str) -> datetime | str:
    """--since of `playbook run`: a time, or 'last' (where the previous run recorded in --history
    stopped reading logs)."""
    return SINCE_LAST if text.strip().lower() == SINCE_LAST else _moment(text)


since_time = argument_type(_moment)
since_or_last = argument_type(_moment_or_last)


COMMAND_HELP = {
    "run": "collect evidence, run the notebooks, write the report",
    "fleet": "one run per database of a TARGETS.yaml, as Dask tasks, and a page over all of them",
    "history": "the trend of the runs recorded with run --history, and their retention",
    "lab": "the lab: an embedded PostgreSQL that reproduces every cause",
    "logs": "classify server logs on their own: what ended the sessions",
    "demo": "every lab scenario, diagnosed by playbook run, and a scorecard",
    "probe": "measure the path: the idle cut-off between this host and the server, keepalives or not",
    "stress": "a bounded concurrency test of a pool configuration (staging first; needs --yes)",
    "watch": "an always-on light sampler that keeps rolling evidence for later runs",
}

# Subcommands that live in a module of their own: `add_arguments(parser)` and `run(args) -> int`.
COMMAND_MODULES = {
    "logs": "playbook.logs_command",
    "probe": "playbook.probe_command",
    "stress": "playbook.stress.command",
    "watch": "playbook.watch.command",
}


def command_module(name: str) -> Any:
    """The module of a subcommand in COMMAND_MODULES, imported only when that command runs."""
    import importlib

    return importlib.import_module(COMMAND_MODULES[name])


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--dsn", help="libpq DSN or URL (default: $PLAYBOOK_DSN, else the PG* variables)")
    run.add_argument(
        "--offline",
        action="store_true",
        help="no connection: a post-mortem from the logs given (with --since/--until to pick the incident)",
    )
    run.add_argument("--duration", type=positive_seconds, default=60.0, help="seconds to sample (60)")
    run.add_argument("--interval", type=positive_seconds, default=1.0, help="seconds between samples (1)")
    run.add_argument(
        "--server-log", type=Path, action="append", default=[], help="server log file (repeatable)"
    )
    run.add_argument("--app-log", type=Path, action="append", default=[], help="application log (repeatable)")
    run.add_argument(
        "--pgbouncer", metavar="DSN", help="PgBouncer's admin console (dbname=pgbouncer), sampled"
    )
    run.add_argument(
        "--pgbouncer-log", type=Path, action="append", default=[], help="PgBouncer's log (repeatable)"
    )
    run.add_argument(
        "--log-tz",
        type=time_zone,
        help="the zone the server's log clock reads (default: the server's log_timezone, read live)",
    )
    run.add_argument(
        "--app-tz",
        type=time_zone,
        help="the zone of naive times in application and PgBouncer logs (default: this machine's)",
    )
    run.add_argument(
        "--since",
        type=since_or_last,
        help="read log events from this time (2h, 30m or ISO-8601; 'last': where the previous run "
        "in --history stopped; default: the start of the sampling window)",
    )
    run.add_argument("--until", type=since_time, help="read log events up to this time (2h, 30m or ISO-8601)")
    run.add_argument("--app", help="focus the per-application findings on this application_name")
    run.add_argument(
        "--path-probe",
        type=Path,
        metavar="DIR",
        help="the folder of a `playbook probe path` run: the path's idle cut-off is then measured",
    )
    run.add_argument(
        "--evidence-from",
        type=Path,
        metavar="DIR",
        help="diagnose evidence already on disk (a `playbook watch` folder, with --since/--until) "
        "instead of sampling; no DSN needed",
    )
    run.add_argument(
        "--prefix",
        help="the server's log_line_prefix for stderr logs (default: read from the server, else guessed)",
    )
    run.add_argument(
        "--notebooks",
        default="all",
        help="all; relevant (triage and the pages of the warning and critical findings); or a comma list",
    )
    run.add_argument(
        "--out", type=Path, default=Path("reports/latest"), help="report folder (reports/latest)"
    )
    run.add_argument("--jobs", type=positive_int, default=2, help="notebooks executed side by side (2)")
    run.add_argument("--fail-on", choices=["critical", "warning", "never"], default="warning")
    run.add_argument("--show-code", action="store_true", help="keep the code cells in the HTML pages")
    run.add_argument(
        "--history",
        type=Path,
        metavar="DIR",
        help="record this run in DIR (summary, report.html, trend aggregates) and redraw DIR/index.html",
    )
    run.add_argument(
        "--notify",
        type=webhook_url,
        metavar="URL",
        help="post a Slack-compatible JSON message to this webhook when the status reaches --fail-on",
    )
    run.add_argument(
        "--prometheus",
        type=Path,
        metavar="FILE",
        help="write node_exporter textfile-collector metrics to FILE (*.prom), replaced atomically",
    )


def add_history_arguments(history: argparse.ArgumentParser) -> None:
    history.add_argument("dir", type=Path, metavar="DIR", help="the folder given to playbook run --history")
    history.add_argument("--keep", type=positive_int, metavar="N", help="keep the newest N runs only")
    history.add_argument("--keep-days", type=positive_days, metavar="D", help="remove runs older than D days")


def add_fleet_arguments(fleet: argparse.ArgumentParser) -> None:
    fleet.add_argument("targets", type=Path, metavar="TARGETS.yaml", help="the databases (see the README)")
    fleet.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="fleet folder: fleet.json, index.html, targets/",
    )
    fleet.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="an existing Dask scheduler, like tcp://host:8786 (default: a LocalCluster on this machine)",
    )
    fleet.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="targets in flight at once (default: locally, from the cores, the windows and the memory, "
        "derived on stderr; every thread of an existing cluster)",
    )
    fleet.add_argument(
        "--duration",
        type=positive_seconds,
        metavar="S",
        help="seconds each target samples (default: the file's, else 60)",
    )
    fleet.add_argument(
        "--interval",
        type=positive_seconds,
        metavar="S",
        help="seconds between samples (default: the file's, else 1)",
    )
    fleet.add_argument(
        "--render",
        choices=["critical", "warning", "all"],
        default="warning",
        help="execute notebooks (pages) only for targets at or above this status (warning)",
    )
    fleet.add_argument("--fail-on", choices=["critical", "warning", "never"], default="warning")
    fleet.add_argument(
        "--history",
        type=Path,
        metavar="DIR",
        help="record each target's run in DIR/<name> (as `playbook run --history`)",
    )


def add_lab_arguments(lab: argparse.ArgumentParser) -> None:
    from playbook.lab import proxy_cli

    lab.add_argument("--lab-dir", type=Path, help="where the lab lives (default: $PLAYBOOK_LAB_DIR)")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True, parser_class=Parser)
    lab_commands.add_parser("up", help="create and start the lab server (idempotent)")
    lab_commands.add_parser("down", help="stop the lab server")
    lab_commands.add_parser("status", help="say whether the lab server runs (exit 1 when not)")
    proxy_cli.add_arguments(lab_commands.add_parser("proxy", help="the chaos TCP proxy in front of the lab"))
    scenario = lab_commands.add_parser("scenario", help="make one root cause happen in the lab")
    # the scenarios import psutil: without the [lab] extra only `lab proxy` gets this far (main)
    if not extras.missing("lab"):
        from playbook.lab import scenario_cli

        scenario_cli.add_arguments(scenario)


def add_demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--out", type=Path, default=Path("demo"), help="scorecard and reports folder (demo)")
    demo.add_argument("--duration", type=positive_seconds, default=15.0, help="seconds each run samples (15)")
    demo.add_argument("--jobs", type=positive_int, default=3, help="scenarios run side by side (3)")
    demo.add_argument("--scenarios", help="a comma list of scenario names (default: all)")


ADD_ARGUMENTS = {
    "run": add_run_arguments,
    "fleet": add_fleet_arguments,
    "history": add_history_arguments,
    "lab": add_lab_arguments,
    "demo": add_demo_arguments,
}


def build_parser(only: str | None = None) -> Parser:
    """The parser; with `only`, just that subcommand gets its arguments (and imports its modules),
    so `playbook run --help` loads no lab and `playbook --help` loads nothing. `only=""` builds
    the subcommand list alone; None builds every subcommand in full."""
    parser = Parser(prog="playbook", description="Find out why PostgreSQL sessions closed under a pool.")
    parser.add_argument("--version", action="version", version=f"pg-session-playbook {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, help_text in COMMAND_HELP.items():
        sub = commands.add_parser(name, help=help_text)
        if only is None or only == name:
            if name in COMMAND_MODULES:
                command_module(name).add_arguments(sub)
            else:
                ADD_ARGUMENTS[name](sub)
    return parser


def command_of(argv: Sequence[str]) -> str:
    """The subcommand named on the command line, '' when there is none yet (e.g. `playbook --help`)."""
    return next((arg for arg in argv if not arg.startswith("-")), "")


# The options before a subcommand's own subcommand that take a value (`playbook lab --lab-dir D proxy`).
VALUE_OPTIONS = {"--lab-dir"}


def subcommand_of(argv: Sequence[str]) -> str:
    """The word after the subcommand (`proxy` in `playbook lab --lab-dir D proxy start`), '' when none."""
    words = list(argv)
    command = command_of(words)
    if not command:
        return ""
    rest = words[words.index(command) + 1 :]
    skip = False
    for arg in rest:
        if skip:
            skip = False
        elif arg in VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return ""


# When the user asked: the default --since of `playbook run` counts from here, not from the window's
# start, so what happened while the playbook imported, connected and probed is read too.
INVOKED_AT: datetime | None = None


def main(argv: Sequence[str] | None = None) -> int:
    global INVOKED_AT
    INVOKED_AT = datetime.now(timezone.utc)
    # No command does linear algebra, and OpenBLAS starts a thread per core when numpy is first
    # imported: about 0.15 s of CPU per process (this one, each --jobs worker, each kernel),
    # taken from the work on a small machine. A value the user set wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # before the parser: a command's parser imports its extra (the lab's parsers import psutil)
        extras.require_for_command(command_of(argv), subcommand_of(argv))
        args = build_parser(only=command_of(argv)).parse_args(argv)
        return dispatch(args)
    except PlaybookError as exc:
        print(f"playbook: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("playbook: interrupted; nothing was published", file=sys.stderr)
        return 130


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return command_run(args)
    if args.command == "fleet":
        return command_fleet(args)
    if args.command == "history":
        return command_history(args)
    if args.command == "lab":
        return command_lab(args)
    if args.command in COMMAND_MODULES:
        return int(command_module(args.command).run(args))
    if args.command == "demo":
        from playbook.demo import run_demo

        names = [n.strip() for n in args.scenarios.split(",") if n.strip()] if args.scenarios else None
        return run_demo(out=args.out, duration=args.duration, jobs=args.jobs, scenarios=names)
    raise PlaybookError(f"unknown command {args.command!r}")


def command_run(args: argparse.Namespace) -> int:
    options = request_of_args(args)
    from playbook.report.run_command import report_failure, run, target_of

    target_of(options)  # a malformed DSN (or PLAYBOOK_DSN) is said before anything is collected
    started_at, started = datetime.now(timezone.utc), time.monotonic()
    try:
        return run(options)
    except PlaybookError as exc:
        report_failure(options, str(exc), started_at=started_at, duration_s=time.monotonic() - started)
        raise


def request_of_args(args: argparse.Namespace) -> request.RunRequest:
    """The RunRequest of `playbook run`'s parsed flags: --since last resolved from --history, then
    every value checked by the one constructor a notebook and a fleet target use too."""
    since = last_stop_of(args.history) if args.since == SINCE_LAST else args.since
    return request.RunRequest.build(
        spelled="flag",
        password_allowed=True,  # --dsn may carry one: it reaches the kernels through PGPASSWORD only
        dsn=args.dsn,
        offline=args.offline,
        duration=args.duration,
        interval=args.interval,
        server_log=args.server_log,
        app_log=args.app_log,
        pgbouncer=args.pgbouncer,
        pgbouncer_log=args.pgbouncer_log,
        prefix=args.prefix,
        invoked_at=INVOKED_AT,
        since=since,
        until=args.until,
        log_tz=args.log_tz,
        app_tz=args.app_tz,
        app=args.app,
        path_probe=args.path_probe,
        evidence_from=args.evidence_from,
        notebooks=args.notebooks,
        out=args.out,
        jobs=args.jobs,
        fail_on=args.fail_on,
        show_code=args.show_code,
        progress=sys.stderr.isatty(),
        history=args.history,
        notify=args.notify,
        prometheus=args.prometheus,
    )


def last_stop_of(history: Path | None) -> datetime | None:
    """--since last: where the previous run recorded in --history stopped reading logs; the
    first run of a history reads from the start of its window, and says so."""
    from playbook.report.history import last_stop

    if history is None:
        raise PlaybookError("--since last needs --history DIR: that is where the previous run is recorded")
    stop = last_stop(history)
    if stop is None:
        print(
            f"playbook: no earlier run in {history}: reading logs from the start of the window",
            file=sys.stderr,
        )
    return stop


def command_history(args: argparse.Namespace) -> int:
    from playbook.report.history import apply_retention, load_records, write_history_index

    if not args.dir.is_dir():
        raise PlaybookError(
            f"{args.dir} is not a history folder (playbook run --history {args.dir} makes one)"
        )
    removed = apply_retention(args.dir, keep=args.keep, keep_days=args.keep_days)
    try:
        index = write_history_index(args.dir)
    except OSError as exc:
        raise PlaybookError(f"cannot write {args.dir / 'index.html'}: {exc.strerror or exc}") from None
    kept = len(load_records(args.dir))
    print(f"history: {index.resolve()} ({kept} run(s) kept, {len(removed)} removed)")
    return 0


def command_fleet(args: argparse.Namespace) -> int:
    from playbook.fleet.dispatch import FleetOptions, run_fleet
    from playbook.fleet.targets import Overrides, load_targets

    targets = load_targets(args.targets, Overrides(duration=args.duration, interval=args.interval))
    options = FleetOptions(
        out=args.out,
        scheduler=args.scheduler,
        workers=args.workers,
        render=args.render,
        fail_on=args.fail_on,
        history=args.history,
    )
    return run_fleet(targets, options)


def command_lab(args: argparse.Namespace) -> int:
    from playbook.lab.server import LabServer, default_lab_dir

    if args.lab_command == "proxy":
        from playbook.lab import proxy_cli

        return proxy_cli.run(args)
    if args.lab_command == "scenario":
        from playbook.lab import scenario_cli

        return scenario_cli.run(args)
    server = LabServer(args.lab_dir or default_lab_dir())
    if args.lab_command == "up":
        server.up()
        print(f"lab server running: PostgreSQL {server.major_version} on 127.0.0.1:{server.port}")
        print(f"dsn:        {server.dsn()}")
        print(f"server log: {server.stderr_log}")
        print(f"json log:   {server.structured_log}")
        return 0
    if args.lab_command == "down":
        server.down()
        print("lab server stopped")
        return 0
    running = server.is_running()
    state = f"running on 127.0.0.1:{server.port}" if running else "not running"
    print(f"lab server {state} ({server.base_dir})")
    return 0 if running else 1


if __name__ == "__main__":
    sys.exit(main())

"""`playbook lab scenario --list` and `playbook lab scenario NAME [--duration S] [--lab-dir DIR]`.

Runs one scenario in the foreground: brings the lab server up if needed, starts the scenario,
prints what to investigate with, and keeps the incident happening until the duration ends,
Ctrl-C or SIGTERM. Then everything is stopped and settings restored; a server this command
started is stopped again, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from playbook.errors import PlaybookError
from playbook.lab.scenarios import SCENARIOS, RunningScenario, start_scenario
from playbook.lab.server import LabServer, default_lab_dir

STATUS_EVERY = 5.0  # seconds between the one-line progress reports


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """NAME, --list, --duration, --lab-dir; values are checked in run() so bad ones get one sentence."""
    parser.add_argument("name", nargs="?", metavar="NAME", help="the scenario to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and what each shows")
    parser.add_argument("--duration", metavar="S", help="seconds to run (default: until Ctrl-C)")
    # SUPPRESS: `playbook lab --lab-dir` may already have set it; an unset option here must not clear it.
    parser.add_argument(
        "--lab-dir", metavar="DIR", default=argparse.SUPPRESS, help="where the lab lives ($PLAYBOOK_LAB_DIR)"
    )


def run(args: argparse.Namespace) -> int:
    if args.list:
        _print_list()
        return 0
    name = args.name
    if not name:
        raise PlaybookError("name a scenario to run, or use --list to see them")
    if name not in SCENARIOS:
        raise PlaybookError(f"there is no scenario {name!r}; `playbook lab scenario --list` shows them")
    duration = _duration(args.duration)
    lab_dir = getattr(args, "lab_dir", None)
    server = LabServer(Path(lab_dir) if lab_dir else default_lab_dir())
    started_here = not server.is_running()
    stop = threading.Event()
    previous = _on_sigterm(stop)
    try:
        server.up()
        workdir = server.base_dir / "scenarios" / f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        running = start_scenario(name, server, workdir)
        try:
            try:
                _announce(running, duration)  # Ctrl-C may come as soon as "running" is printed
                _wait(running, stop, duration)
            except KeyboardInterrupt:
                print("interrupted; stopping the scenario", flush=True)
        finally:
            with _ignoring_sigint():  # a second Ctrl-C must not leave half a scenario behind
                running.stop()
        print(f"scenario {name} stopped: {_status(running, evidence=False)}", flush=True)
    finally:
        with _ignoring_sigint():
            if started_here:
                server.down()
                print("lab server stopped", flush=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -m playbook.lab.scenario_cli`), with the CLI's exit 3 on bad input."""
    parser = argparse.ArgumentParser(prog="playbook lab scenario")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except PlaybookError as exc:
        print(f"playbook: {exc}", file=sys.stderr)
        return 3


def _print_list() -> None:
    width = max(len(name) for name in SCENARIOS)
    for spec in SCENARIOS.values():
        expected = spec.expected_category or "none"
        print(f"{spec.name:<{width}}  expected: {expected:<11}  {spec.summary}")


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise PlaybookError(f"--duration {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise PlaybookError(f"--duration {text!r} must be a positive number of seconds")
    return value


def _announce(running: RunningScenario, duration: float | None) -> None:
    spec = running.spec
    print(f"scenario {spec.name}: {spec.summary}")
    print(f"expected root cause: {spec.expected_category or 'none (no incident)'}")
    print(f"dsn:        {running.dsn}")
    print(f"server log: {running.server_log}")
    print(f"json log:   {running.structured_log}")
    print(f"app log:    {running.app_log}")
    print(f"pool stats: {running.pool_stats_log}")
    for extra in running.extra_logs:
        print(f"also:       {extra}")
    command = ["playbook", "run", "--dsn", running.dsn, "--server-log", str(running.server_log)]
    command += ["--app-log", str(running.app_log), "--duration", "15"]
    print(f"investigate: {shlex.join(command)}")
    until = f"for {duration:g} s" if duration is not None else "until Ctrl-C"
    print(f"running {until}", flush=True)


def _wait(running: RunningScenario, stop: threading.Event, duration: float | None) -> None:
    start = time.monotonic()
    end = start + duration if duration is not None else math.inf
    next_status = start + STATUS_EVERY
    while not stop.is_set():
        now = time.monotonic()
        if now >= end:
            return
        if now >= next_status:
            print(f"{now - start:5.0f} s: {_status(running)}", flush=True)
            next_status += STATUS_EVERY
        stop.wait(min(end, next_status) - now)


def _status(running: RunningScenario, *, evidence: bool = True) -> str:
    stats: dict[str, Any] = running.stats()
    parts = []
    for name, s in stats["services"].items():
        parts.append(f"{name} ok={s.get('requests_ok', 0)} failed={s.get('requests_failed', 0)}")
    injected = [e for e in stats["injected"] if e["what"] not in ("started", "settings", "proxy", "stopped")]
    if injected:
        parts.append(f"injected {len(injected)}x")
    if evidence:
        parts.append("evidence seen" if running.signature_seen() else "no evidence yet")
    return ", ".join(parts)


def _on_sigterm(stop: threading.Event) -> Any:
    """SIGTERM ends the scenario like the end of its duration; only possible from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())


@contextmanager
def _ignoring_sigint() -> Iterator[None]:
    """Hold Ctrl-C off while cleaning up (main thread only; elsewhere there is no signal to hold)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())

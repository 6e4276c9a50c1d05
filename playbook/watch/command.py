"""`playbook watch`: an always-on light sampler that keeps rolling evidence on disk.

One query per tick on one session (the run's own pg_stat_activity sampler: the backends' rows,
from which the counts by state and application and the idle and transaction ages are read), the
ticks' rows kept in memory for one segment (--segment seconds) and then written as one segment
folder, whole or absent (playbook.watch.segments). The session lost (the server restarted, or
pg_terminate_backend) is a gap in the evidence and a reconnect with backoff, never an exit.
SIGTERM or Ctrl-C write the current segment and exit 0. Logs are not read while watching: each
segment records where each log stood, and `playbook run --evidence-from DIR` reads those bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from playbook.cli import positive_seconds
from playbook.errors import PlaybookError, TargetRefused
from playbook.watch.segments import (
    LOG_KINDS,
    WATCH_META,
    WATCH_SCHEMA,
    Keep,
    apply_keep,
    log_position,
    parse_keep,
    remove_partials,
    write_segment,
)

DEFAULT_INTERVAL_S = 10.0
DEFAULT_SEGMENT_S = 300.0
DEFAULT_KEEP = "24h"
LOCK = ".lock"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="the watch folder (created)")
    parser.add_argument("--dsn", help="libpq DSN or URL (default: $PLAYBOOK_DSN, else the PG* variables)")
    parser.add_argument(
        "--interval",
        type=positive_seconds,
        default=DEFAULT_INTERVAL_S,
        metavar="S",
        help="seconds between samples (default 10)",
    )
    parser.add_argument(
        "--segment",
        type=positive_seconds,
        default=DEFAULT_SEGMENT_S,
        metavar="S",
        help="seconds of samples per segment on disk (default 300): a run sees segments written so far",
    )
    parser.add_argument(
        "--server-log", action="append", default=[], metavar="PATH", help="the server's log (repeatable)"
    )
    parser.add_argument(
        "--app-log", action="append", default=[], metavar="PATH", help="an application log (repeatable)"
    )
    parser.add_argument(
        "--pgbouncer-log", action="append", default=[], metavar="PATH", help="PgBouncer's log (repeatable)"
    )
    parser.add_argument(
        "--pgbouncer",
        metavar="DSN",
        help="PgBouncer's admin console, sampled at each tick too (SHOW POOLS, CLIENTS, SERVERS, …)",
    )
    parser.add_argument(
        "--keep",
        default=DEFAULT_KEEP,
        metavar="AGE|SIZE",
        help="keep segments this young (24h, 7d) or this much on disk (500MB); oldest go first (default 24h)",
    )


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Watch:
    """The watcher of one target into one folder; `run()` returns when `stop()` is called."""

    def __init__(
        self,
        out: Path,
        target: Any,
        *,
        interval: float,
        segment_s: float,
        keep: Keep,
        logs: dict[str, list[Path]],
        stopped: threading.Event | None = None,
        pgbouncer: str | None = None,
    ) -> None:
        from playbook.collect.activity import ActivitySampler
        from playbook.collect.pgbouncer_console import PgBouncerSampler
        from playbook.evidence.zones import machine_zone

        self.out = out
        self.target = target
        self.interval = interval
        self.segment_s = segment_s
        self.keep = keep
        self.logs = logs
        self.sampler = ActivitySampler(target, duration=math.inf, interval=interval, progress=False)
        self.stopped = stopped or threading.Event()
        # PgBouncer prints its clients' times in its host's zone: this machine's, as `run` reads them.
        self.console = PgBouncerSampler(pgbouncer, interval, zone=machine_zone()) if pgbouncer else None
        self.settings: dict[str, Any] | None = None
        self.failures: list[dict[str, str]] = []
        self.segments_written = 0
        self._segment_start = _utcnow()
        self._segment_clock = time.monotonic()
        self._positions = self._log_positions()
        self._had_gap = False

    def stop(self) -> None:
        self.stopped.set()

    def _log_positions(self) -> dict[tuple[str, str], dict[str, int] | None]:
        return {(kind, str(p)): log_position(p) for kind in LOG_KINDS for p in self.logs[kind]}

    def read_settings(self) -> None:
        """The server's settings on a short session of its own (at start, and after a gap): a
        failure leaves the last ones read, noted once per segment."""
        from playbook.collect.settings import snapshot_settings

        try:
            with self.target.connect() as session:
                self.settings = snapshot_settings(session)
        except Exception as exc:  # the patient may be down: the next segment tries again
            self.failures.append({"what": "settings", "error": " ".join(str(exc).split())[:300]})

    def _tick(self) -> None:
        self.sampler.tick()
        if self.console is not None:
            self.console.tick()
        if self.sampler.lost:
            self._had_gap = True
        if time.monotonic() - self._segment_clock >= self.segment_s:
            self.flush()

    def flush(self) -> None:
        """Write the ticks since the last segment as one segment (none when no tick was taken)."""
        activity = self.sampler.drain()
        console = self.console.drain() if self.console is not None else None
        end = _utcnow()
        positions = self._log_positions()
        start, self._segment_start, self._segment_clock = self._segment_start, end, time.monotonic()
        if activity.ticks.empty:
            self._positions = positions
            return
        if self._had_gap and not self.sampler.lost:
            self.read_settings()  # the server may have restarted with other settings
            self._had_gap = False
        spans = [
            {
                "kind": kind,
                "path": path,
                "start": self._positions.get((kind, path)),
                "end": positions[(kind, path)],
            }
            for kind, path in positions
        ]
        self._positions = positions
        unavailable = []
        if activity.hidden_note:
            from playbook.evidence.manifest import HIDDEN_ACTIVITY

            unavailable.append({"what": HIDDEN_ACTIVITY, "error": activity.hidden_note})
        manifest = {
            "target": self.target.redacted,
            "window": {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "duration_s": (end - start).total_seconds(),
            },
            "interval_s": self.interval,
            "collected": ["activity"] + (["pgbouncer_console"] if console is not None else []),
            "gaps": activity.gaps,
            "failures": self.failures,
            "unavailable": unavailable,
            "watch_logs": spans,
        }
        self.failures = []
        frames = {"activity_samples": activity.samples, "activity_ticks": activity.ticks}
        snapshots = {"settings": self.settings} if self.settings else {}
        if console is not None:
            frames.update(console.frames)
            snapshots.update(console.snapshots)
        try:
            write_segment(self.out, start, end, frames, snapshots, manifest)
            self.segments_written += 1
            apply_keep(self.out, self.keep)
        except OSError as exc:  # a full disk or a folder removed: said, and the watch goes on
            print(
                f"playbook: warning: the segment {start:%H:%M:%S}-{end:%H:%M:%S} UTC could not be "
                f"written to {self.out}: {exc.strerror or exc}",
                file=sys.stderr,
                flush=True,
            )

    def run(self) -> None:
        from playbook.collect.ticks import tick_until

        if self.settings is None:
            self.read_settings()
        try:
            tick_until(
                math.inf, self.interval, self._tick, lambda: self.sampler.lost, self.stopped, lambda _s: None
            )
        finally:
            self.flush()
            self.sampler.close()
            if self.console is not None:
                self.console.close()


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    partial = out / f".{WATCH_META}.partial"
    partial.write_text(json.dumps(meta, indent=2))
    os.replace(partial, out / WATCH_META)


def run(args: argparse.Namespace) -> int:
    """Watch until SIGTERM or Ctrl-C; 0 then, with every segment whole. Bad input (a DSN that
    cannot log in, a folder that cannot be written, a bad --keep) is one sentence and 3."""

    # First of all: a SIGTERM from here on ends the watch cleanly, even one sent during start-up.
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _watch(args, stopped)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(args: argparse.Namespace, stopped: threading.Event) -> int:
    from playbook.request import check_dsn
    from playbook.target import redact, resolve_target

    interval, segment_s = args.interval, args.segment
    keep = parse_keep(args.keep)
    out: Path = args.out
    logs = {
        "server_logs": [Path(p).resolve() for p in args.server_log],
        "app_logs": [Path(p).resolve() for p in args.app_log],
        "pgbouncer_logs": [Path(p).resolve() for p in args.pgbouncer_log],
    }
    for path in (p for paths in logs.values() for p in paths):
        if path.is_dir():
            raise PlaybookError(f"{path} is a directory, not a log file")
    if out.exists() and not out.is_dir():
        raise PlaybookError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(p.name != LOCK for p in out.iterdir()) and not (out / WATCH_META).exists():
        raise PlaybookError(
            f"--out {out} holds files that are not a playbook watch folder: give a new or empty folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = (out / LOCK).open("w")
    except OSError as exc:
        raise PlaybookError(f"cannot write the watch folder {out}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise PlaybookError(f"another playbook watch is writing to {out}") from None
    if args.pgbouncer:
        check_dsn(args.pgbouncer, password_allowed=True, what="--pgbouncer")  # never shown or stored
    target = resolve_target(args.dsn)
    try:
        target.check().close()
    except TargetRefused as exc:  # down or full right now: part of what is watched, not bad input
        print(f"playbook: {exc}; watching anyway, the gap is recorded", file=sys.stderr)
    remove_partials(out)
    _write_meta(
        out,
        {
            "schema": WATCH_SCHEMA,
            "target": target.redacted,
            "pgbouncer": redact(args.pgbouncer) if args.pgbouncer else None,
            "interval_s": interval,
            "segment_s": segment_s,
            "keep": args.keep,
            **{kind: [str(p) for p in paths] for kind, paths in logs.items()},
            "started_at": _utcnow().isoformat(),
            "pid": os.getpid(),
        },
    )
    watch = Watch(
        out,
        target,
        interval=interval,
        segment_s=segment_s,
        keep=keep,
        logs=logs,
        stopped=stopped,
        pgbouncer=args.pgbouncer,
    )
    print(
        f"playbook: watching {target.redacted} every {interval:g} s into {out} "
        f"(segments of {segment_s:g} s, keep {args.keep}); SIGTERM or Ctrl-C to stop",
        file=sys.stderr,
    )
    try:
        watch.run()
    finally:
        with contextlib.suppress(OSError):
            lock.close()
    print(f"playbook: watch stopped; {watch.segments_written} segment(s) written to {out}", file=sys.stderr)
    return 0

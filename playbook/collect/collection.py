"""Collect every piece of evidence once, for a whole run or for a notebook opened by hand.

The sources (collect/sources: settings, probes, the sampler with PgBouncer's console beside it,
the server's, PgBouncer's and the application's logs) run in their order; each contributes
frames and snapshots. Here, and only here, a source's failure becomes a manifest `failures` entry
naming it (never fatal: a run with no log is still a run) and the request's window is applied to
the log events.

Without a live connection (`target=None`: `playbook run --offline`, or the server refused the
playbook) only the logs are read; the manifest says why there is no live evidence, and a refusal
that is part of the incident (53300, 57P03, a dead path) is kept as evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from playbook import __version__
from playbook.collect.activity import SampledTick
from playbook.collect.pgbouncer_log import looks_like_pgbouncer_log
from playbook.collect.sources import SOURCES, Context, Contribution, Source
from playbook.errors import PlaybookError
from playbook.evidence import Evidence, Manifest
from playbook.evidence.logfiles import LogFile
from playbook.evidence.manifest import Failure
from playbook.evidence.zones import machine_zone, zone_named
from playbook.request import RunRequest
from playbook.target import Target

ROUTING_SAMPLE_BYTES = 64 << 10  # what telling a PgBouncer log from the others looks at
FAILURE_TEXT_MAX = 300  # a driver's error may run to many lines; ours are one sentence


def is_pgbouncer_log(path: Path) -> bool:
    """Whether a log given as a server or application log is PgBouncer's, by its content."""
    try:
        with LogFile(path, "log") as log:
            return looks_like_pgbouncer_log(log.read(ROUTING_SAMPLE_BYTES))
    except PlaybookError:
        return False  # the log's own reader will say why it cannot be read


def route_logs(
    server_logs: Sequence[str | Path], app_logs: Sequence[str | Path], pgbouncer_logs: Sequence[str | Path]
) -> tuple[list[Path], list[Path], list[Path]]:
    """(server, application, PgBouncer) logs: PgBouncer's own log is recognised by content wherever
    it was given, so a user need not know which flag it belongs to."""
    pooler = [Path(p) for p in pgbouncer_logs]
    server = [Path(p) for p in server_logs]
    app = [Path(p) for p in app_logs]
    moved = [p for p in (*server, *app) if is_pgbouncer_log(p)]
    return (
        [p for p in server if p not in moved],
        [p for p in app if p not in moved],
        pooler + [p for p in moved if p not in pooler],
    )


def within_window(frame: pd.DataFrame, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """The rows of a log frame whose `ts` is within [since, until] (naive bounds are UTC, read to
    the millisecond as the server log's reader reads them); with a bound, a row without a time
    cannot be placed and is dropped. A frame with nothing to drop is returned as it is."""
    if (since is None and until is None) or frame.empty or "ts" not in frame.columns:
        return frame
    ts = frame["ts"]
    keep = ts.notna()
    if since is not None:
        keep &= ts >= _utc_ms(since)
    if until is not None:
        keep &= ts <= _utc_ms(until)
    return frame if bool(keep.all()) else frame[keep].reset_index(drop=True)


def _utc_ms(moment: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.floor("ms")


def failure(source: Source, exc: Exception) -> Failure:
    """A source's exception as a manifest failure: the source's name and one sentence (ours in
    full, anyone else's cut)."""
    text = str(exc) or type(exc).__name__
    return {"what": source.name, "error": text if isinstance(exc, PlaybookError) else text[:FAILURE_TEXT_MAX]}


def collect_evidence(
    target: Target | None,
    request: RunRequest,
    *,
    not_live: dict[str, Any] | None = None,
    sources: Sequence[Source] = SOURCES,
    on_tick: Callable[[SampledTick, Context], None] | None = None,
    keep_on_interrupt: bool = False,
) -> Evidence:
    """The evidence `request` asks for, from every source in `sources` (the live ones only with a
    `target`; offline, `not_live` says why there is none). Log events count from `request.since`,
    else, live, from `request.invoked_at` (when the user asked), else from when this function was
    called: the seconds spent connecting and probing are read too; up to `request.until`.
    Offline, a run where no log could be read is a PlaybookError: nothing diagnosed is never "OK".
    `on_tick` is given each sampled tick (a live view); with `keep_on_interrupt` an interrupt
    during the window ends it early, and the evidence says so (snapshot "sampling").
    """
    server_logs, app_logs, pgbouncer_logs = route_logs(
        request.server_logs, request.app_logs, request.pgbouncer_logs
    )
    context = Context(
        target=target,
        called_at=request.invoked_at or datetime.now(timezone.utc),
        app_zone=zone_named(request.app_tz, "flag") if request.app_tz else machine_zone(),
        flag_log_zone=zone_named(request.log_tz, "flag") if request.log_tz else None,
        server_logs=server_logs,
        app_logs=app_logs,
        pgbouncer_logs=pgbouncer_logs,
        since=request.since,
        until=request.until,
        on_tick=on_tick,
        keep_on_interrupt=keep_on_interrupt,
    )
    # The zone naive application times are read in, said only where some are read: a page of a
    # window without an application log must not claim one was read in it.
    read_in_app_zone = bool(app_logs or request.app_tz or request.pgbouncer_dsn)
    merged = Contribution(zones={"app_log": context.app_zone.describe()} if read_in_app_zone else {})
    windowed: list[str] = []
    try:
        if target is not None:
            # A target that cannot be reached at all is bad input, said in one sentence before
            # anything is collected; a session lost later is the failure of the source using it.
            context.session()
        for source in sources:
            if source.live and target is None:
                continue
            try:
                part = source.contribute(request, context)
            except Exception as exc:  # uniformly: a source that fails is an evidence warning
                merged.failures.append(failure(source, exc))
                continue
            _merge(merged, part)
            context.snapshots.update(part.snapshots)
            context.window = part.window or context.window
            if source.windowed:
                windowed += part.frames
    finally:
        context.end_session()

    # The window, in one place: old restarts are not this window's cause.
    for name in windowed:
        merged.frames[name] = within_window(merged.frames[name], context.log_since, context.until)

    if target is None and not merged.collected:
        raise PlaybookError(
            "no log could be read, so nothing can be diagnosed: "
            + "; ".join(f"{f['what']}: {f['error']}" for f in merged.failures)
        )
    if target is None:
        started, ended = _window_from_logs(merged.frames, context.log_since, context.until)
    else:
        started, ended = context.window or (context.called_at, datetime.now(timezone.utc))
    return Evidence(
        manifest=_manifest(target, request, context, merged, started, ended, not_live),
        frames=merged.frames,
        snapshots=merged.snapshots,
    )


def _merge(into: Contribution, part: Contribution) -> None:
    into.frames.update(part.frames)
    into.snapshots.update(part.snapshots)
    into.collected += part.collected
    into.failures += part.failures
    into.gaps += part.gaps
    into.unavailable += part.unavailable
    into.zones.update(part.zones)


def _manifest(
    target: Target | None,
    request: RunRequest,
    context: Context,
    merged: Contribution,
    started: datetime,
    ended: datetime,
    not_live: dict[str, Any] | None,
) -> Manifest:
    log_since = context.log_since
    settings = context.settings
    return {
        "playbook_version": __version__,
        "target": target.redacted if target is not None else "(offline: logs only)",
        "window": {
            "start": started.isoformat(),
            "end": ended.isoformat(),
            "duration_s": round((ended - started).total_seconds(), 3),
        },
        "interval_s": request.interval,
        "app": request.app,
        "logs_since": log_since.isoformat() if log_since else None,
        "logs_until": context.until.isoformat() if context.until else None,
        "live": {"connected": target is not None, **(not_live or {})},
        "collected": merged.collected,
        "privileges": {
            k: settings.get("server", {}).get(k)
            for k in ("role", "is_superuser", "has_pg_monitor", "has_read_all_stats", "has_read_all_settings")
        },
        "unavailable": merged.unavailable,
        "gaps": merged.gaps,
        "failures": merged.failures,
        "server_logs": [str(p) for p in context.server_logs],
        "app_logs": [str(p) for p in context.app_logs],
        "pgbouncer_logs": [str(p) for p in context.pgbouncer_logs],
        "zones": merged.zones,
    }


def _window_from_logs(
    frames: dict[str, pd.DataFrame], since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime]:
    """Offline, the window is what the logs cover (within --since/--until)."""
    stamps = [
        frame["ts"].dropna()
        for name in ("server_log_events", "app_log_events", "pgbouncer_log_events")
        if (frame := frames.get(name)) is not None and not frame.empty
    ]
    seen = pd.concat(stamps) if stamps else pd.Series(dtype="datetime64[ms, UTC]")
    now = datetime.now(timezone.utc)
    start = since or (seen.min().to_pydatetime() if not seen.empty else now)
    end = until or (seen.max().to_pydatetime() if not seen.empty else now)
    return start, max(start, end)

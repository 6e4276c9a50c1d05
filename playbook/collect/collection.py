"""Collect every piece of evidence once, for a whole run or for a notebook opened by hand.

Order matters: the settings snapshot frames the window (and gives the server's log_line_prefix
and log_timezone), the probes run before the window so they never overlap the sampler, the
PgBouncer console is sampled beside the server for the same window, and the logs are read last
so they cover the whole window. A collector that fails is recorded in the manifest, never fatal:
a run with no log is still a run.

Without a live connection (`target=None`: `playbook run --offline`, or the server refused the
playbook) only the logs are read; the manifest says why there is no live evidence, and a refusal
that is part of the incident (53300, 57P03, a dead path) is kept as evidence.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import pandas as pd

from playbook import __version__
from playbook.collect.activity import ActivitySampler
from playbook.collect.applog import read_app_logs
from playbook.collect.pgbouncer_console import PgBouncerSampler
from playbook.collect.pgbouncer_log import looks_like_pgbouncer_log, read_pgbouncer_logs
from playbook.collect.serverlog import read_server_logs
from playbook.collect.settings import snapshot_settings
from playbook.errors import PlaybookError
from playbook.evidence import Evidence, Manifest
from playbook.evidence.logfiles import LogFile
from playbook.evidence.manifest import HIDDEN_ACTIVITY, Failure, Gap
from playbook.evidence.settings import setting_text
from playbook.evidence.zones import Zone, machine_zone, zone_named
from playbook.probes.keepalive import client_keepalive_settings
from playbook.probes.latency import latency_summary, measure_connects, measure_round_trips
from playbook.target import Target
from playbook.vocabulary.translations import language_of_locale

CONNECT_PROBES = 5
ROUND_TRIP_PROBES = 20
ROUTING_SAMPLE_BYTES = 64 << 10  # what telling a PgBouncer log from the others looks at


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


def log_zone(settings: dict[str, Any], log_tz: str | None) -> Zone | None:
    """The zone the server's log clock reads: --log-tz when given, else the server's log_timezone."""
    if log_tz:
        return zone_named(log_tz, "flag")
    server_zone = setting_text(settings, "log_timezone")
    if server_zone:
        try:
            return zone_named(server_zone, "server")
        except PlaybookError:
            return None  # a zone this machine's tzdata lacks: the reader warns per abbreviation
    return None


def collect_evidence(
    target: Target | None,
    *,
    duration: float,
    interval: float,
    server_logs: Sequence[str | Path] = (),
    app_logs: Sequence[str | Path] = (),
    pgbouncer_dsn: str | None = None,
    pgbouncer_logs: Sequence[str | Path] = (),
    log_prefix: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    app: str | None = None,
    log_tz: str | None = None,
    app_tz: str | None = None,
    not_live: dict[str, Any] | None = None,
    progress: bool = True,
    invoked_at: datetime | None = None,
) -> Evidence:
    """Settings, probes, the samplers for the window, then the server's, PgBouncer's and the
    application's logs. With `target=None` only the logs are read and `not_live` says why.
    Without `since`, live runs read the logs from `invoked_at` (when the user asked), else from
    the moment this function was called: the seconds spent connecting and probing are read too."""
    called_at = invoked_at or datetime.now(timezone.utc)
    failures: list[Failure] = []
    frames: dict[str, pd.DataFrame] = {}
    snapshots: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    gaps: list[Gap] = []
    unavailable: list[dict[str, str]] = []
    collected: list[str] = []
    extra_snapshots: dict[str, Any] = {}
    if target is not None:
        with target.check() as conn:
            settings = snapshot_settings(conn)
            snapshots["settings"] = settings
            try:
                frames["round_trip_probes"] = measure_round_trips(conn, count=ROUND_TRIP_PROBES)
                snapshots["keepalive_probe"] = client_keepalive_settings(conn)
            except Exception as exc:  # a probe is evidence when it works and a note when it does not
                failures.append({"what": "round-trip and keepalive probes", "error": str(exc)[:300]})
        frames["connect_probes"] = measure_connects(target.dsn, count=CONNECT_PROBES)
        snapshots["latency"] = {
            "connect": latency_summary(frames["connect_probes"]),
            "round_trip": latency_summary(frames.get("round_trip_probes", pd.DataFrame())),
        }
        collected += ["settings", "probes"]

    server_logs, app_logs, pgbouncer_logs = route_logs(server_logs, app_logs, pgbouncer_logs)
    app_zone = zone_named(app_tz, "flag") if app_tz else machine_zone()
    started = datetime.now(timezone.utc)
    if target is not None:
        pooler = PgBouncerSampler(pgbouncer_dsn, interval, zone=app_zone) if pgbouncer_dsn else None
        pooler_result: dict[str, Any] = {}
        pooler_thread = None
        if pooler is not None:

            def sample_pooler() -> None:
                try:
                    pooler_result["evidence"] = pooler.run(duration)
                except Exception as exc:  # the console is evidence when it answers, a note when not
                    pooler_result["error"] = exc

            pooler_thread = threading.Thread(target=sample_pooler, name="pgbouncer-console", daemon=True)
            pooler_thread.start()
        activity = ActivitySampler(target, duration=duration, interval=interval, progress=progress).run()
        frames["activity_samples"] = activity.samples
        frames["activity_ticks"] = activity.ticks
        gaps = cast(list[Gap], activity.gaps)
        collected.append("activity")
        if activity.hidden_note:
            role = settings.get("server", {}).get("role") or "<role>"
            unavailable.append(
                {
                    "what": HIDDEN_ACTIVITY,
                    "error": activity.hidden_note,
                    "grant": f"GRANT pg_read_all_stats TO {role};  -- or pg_monitor",
                }
            )
        if pooler is not None and pooler_thread is not None:
            pooler.stop()
            pooler_thread.join(timeout=30)
            if "evidence" in pooler_result:
                pooler_evidence = pooler_result["evidence"]
                frames.update(pooler_evidence.frames)
                extra_snapshots.update(pooler_evidence.snapshots)
                collected.append("pgbouncer_console")
            else:
                error = pooler_result.get("error", "the console did not answer within the window")
                failures.append({"what": "PgBouncer console", "error": str(error)[:300]})
    ended = datetime.now(timezone.utc) if target is not None else (until or datetime.now(timezone.utc))

    # Logs count from `since` (default: when the user asked, a few seconds before the window's start):
    # old restarts are not this window's cause. Offline, with no window, they count from `since` or
    # from their beginning.
    log_since = since or (min(called_at, started) if target is not None else None)
    server_zone = log_zone(settings, log_tz)
    zones = {"app_log": app_zone.describe()}
    if server_logs:
        try:
            server_log = read_server_logs(
                server_logs,
                prefix=log_prefix or setting_text(settings, "log_line_prefix"),
                since=log_since,
                until=until,
                log_tz=server_zone,
                progress=progress,
                # the server's own language: its log is read through that catalog, not guessed
                language=language_of_locale(setting_text(settings, "lc_messages")),
            )
            frames["server_log_events"] = server_log.events
            frames["server_log_sessions"] = server_log.sessions
            snapshots["server_log_summary"] = {
                **server_log.summary,
                "format": server_log.format,
                "prefix": server_log.prefix,
                "files": server_log.files,
                "bytes_read": server_log.bytes_read,
                "lines": server_log.lines,
                "warnings": server_log.warnings,
            }
            zones["server_log"] = server_zone.describe() if server_zone else "as printed in the log"
            collected.append("server_log")
        except PlaybookError as exc:
            failures.append({"what": "server log", "error": str(exc)})
    if pgbouncer_logs:
        try:
            pooler_log = read_pgbouncer_logs(pgbouncer_logs, zone=app_zone, since=log_since)
            events = pooler_log.events
            if until is not None and not events.empty:
                events = events[events["ts"].isna() | (events["ts"] <= pd.Timestamp(until))]
            frames["pgbouncer_log_events"] = events.reset_index(drop=True)
            extra_snapshots["pgbouncer_log_summary"] = pooler_log.summary
            zones["pgbouncer_log"] = app_zone.describe()
            collected.append("pgbouncer_log")
        except PlaybookError as exc:
            failures.append({"what": "PgBouncer log", "error": str(exc)})
    if app_logs:
        app_log = read_app_logs(app_logs, app_tz=app_zone)
        events = app_log.events
        if not events.empty:  # lines without a time cannot be placed: they are kept
            keep = events["ts"].isna()
            after = events["ts"] >= pd.Timestamp(log_since) if log_since else True
            before = events["ts"] <= pd.Timestamp(until) if until else True
            events = events[keep | (after & before)]
        frames["app_log_events"] = events.reset_index(drop=True)
        snapshots["app_log_summary"] = {
            **app_log.summary,
            "stacks": app_log.stacks,
            "primary_stack": app_log.primary_stack,
            "lines_read": app_log.lines_read,
            "lines_matched": app_log.lines_matched,
            "warnings": app_log.warnings,
        }
        collected.append("app_log")
    snapshots.update(extra_snapshots)

    if target is None and not collected:
        # Offline, the logs are all the evidence: none of them read is nothing diagnosed, never "OK".
        raise PlaybookError(
            "no log could be read, so nothing can be diagnosed: "
            + "; ".join(f"{f['what']}: {f['error']}" for f in failures)
        )
    if target is None:
        started, ended = _window_from_logs(frames, log_since, until)
    unavailable = list(settings.get("unavailable", [])) + unavailable
    manifest: Manifest = {
        "playbook_version": __version__,
        "target": target.redacted if target is not None else "(offline: logs only)",
        "window": {
            "start": started.isoformat(),
            "end": ended.isoformat(),
            "duration_s": round((ended - started).total_seconds(), 3),
        },
        "interval_s": interval,
        "app": app,
        "logs_since": log_since.isoformat() if log_since else None,
        "logs_until": until.isoformat() if until else None,
        "live": {"connected": target is not None, **(not_live or {})},
        "collected": collected,
        "privileges": {
            k: settings.get("server", {}).get(k)
            for k in ("role", "is_superuser", "has_pg_monitor", "has_read_all_stats", "has_read_all_settings")
        },
        "unavailable": unavailable,
        "gaps": gaps,
        "failures": failures,
        "server_logs": [str(p) for p in server_logs],
        "app_logs": [str(p) for p in app_logs],
        "pgbouncer_logs": [str(p) for p in pgbouncer_logs],
        "zones": zones,
    }
    return Evidence(manifest=manifest, frames=frames, snapshots=snapshots)


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

"""Collect every piece of evidence once, for a whole run or for a notebook opened by hand.

Order matters: the settings snapshot frames the window (and gives the server's log_line_prefix),
the probes run before the window so they never overlap the sampler, and the logs are read last so
they cover the whole window. A collector that fails is recorded in the manifest, never fatal:
a run with no log is still a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import pandas as pd

from playbook import __version__
from playbook.collect.activity import ActivitySampler
from playbook.collect.applog import read_app_logs
from playbook.collect.serverlog import read_server_logs
from playbook.collect.settings import snapshot_settings
from playbook.errors import PlaybookError
from playbook.evidence import Evidence, Manifest
from playbook.evidence.manifest import Failure, Gap
from playbook.probes.keepalive import client_keepalive_settings
from playbook.probes.latency import latency_summary, measure_connects, measure_round_trips
from playbook.target import Target

CONNECT_PROBES = 5
ROUND_TRIP_PROBES = 20


def _server_log_prefix(settings: dict[str, Any]) -> str | None:
    entry = settings.get("settings", {}).get("log_line_prefix")
    return str(entry["setting"]) if entry and entry.get("setting") is not None else None


def collect_evidence(
    target: Target,
    *,
    duration: float,
    interval: float,
    server_logs: Sequence[str | Path] = (),
    app_logs: Sequence[str | Path] = (),
    log_prefix: str | None = None,
    since: datetime | None = None,
    app: str | None = None,
    progress: bool = True,
) -> Evidence:
    """Settings, probes, the sampler for the window, then the server's and the application's logs."""
    failures: list[Failure] = []
    frames: dict[str, pd.DataFrame] = {}
    snapshots: dict[str, Any] = {}
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

    started = datetime.now(timezone.utc)
    activity = ActivitySampler(target, duration=duration, interval=interval, progress=progress).run()
    ended = datetime.now(timezone.utc)
    frames["activity_samples"] = activity.samples
    frames["activity_ticks"] = activity.ticks

    # Logs count from `since` (default: the window's start): old restarts are not this window's cause.
    log_since = since or started
    collected = ["settings", "probes", "activity"]
    if server_logs:
        try:
            server_log = read_server_logs(
                server_logs,
                prefix=log_prefix or _server_log_prefix(settings),
                since=log_since,
                progress=progress,
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
            collected.append("server_log")
        except PlaybookError as exc:
            failures.append({"what": "server log", "error": str(exc)})
    if app_logs:
        app_log = read_app_logs(app_logs)
        events = app_log.events
        if not events.empty:  # lines without a time cannot be placed: they are kept
            events = events[events["ts"].isna() | (events["ts"] >= pd.Timestamp(log_since))]
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

    unavailable = list(settings.get("unavailable", []))
    if activity.hidden_note:
        unavailable.append({"what": "other roles' activity", "error": activity.hidden_note, "grant": ""})
    manifest: Manifest = {
        "playbook_version": __version__,
        "target": target.redacted,
        "window": {
            "start": started.isoformat(),
            "end": ended.isoformat(),
            "duration_s": round((ended - started).total_seconds(), 3),
        },
        "interval_s": interval,
        "app": app,
        "logs_since": log_since.isoformat(),
        "collected": collected,
        "privileges": {
            k: settings["server"].get(k)
            for k in ("role", "is_superuser", "has_pg_monitor", "has_read_all_stats", "has_read_all_settings")
        },
        "unavailable": unavailable,
        "gaps": cast(list[Gap], activity.gaps),
        "failures": failures,
        "server_logs": [str(p) for p in server_logs],
        "app_logs": [str(p) for p in app_logs],
    }
    return Evidence(manifest=manifest, frames=frames, snapshots=snapshots)

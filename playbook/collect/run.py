"""Collect every piece of evidence once, for a whole run or for a notebook opened by hand."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from playbook import __version__
from playbook.collect.activity import ActivitySampler
from playbook.collect.settings import snapshot_settings
from playbook.evidence import Evidence
from playbook.target import Target


def collect_evidence(
    target: Target,
    *,
    duration: float,
    interval: float,
    server_logs: Sequence[str | Path] = (),
    app_logs: Sequence[str | Path] = (),
    progress: bool = True,
) -> Evidence:
    """Settings first (they frame the window), then the sampler for the window, then the logs."""
    started = datetime.now(timezone.utc)
    failures: list[dict[str, str]] = []
    with target.check() as conn:
        settings = snapshot_settings(conn)
    activity = ActivitySampler(target, duration=duration, interval=interval, progress=progress).run()
    ended = datetime.now(timezone.utc)
    unavailable = list(settings.get("unavailable", []))
    if activity.hidden_note:
        unavailable.append({"what": "other roles' activity", "error": activity.hidden_note, "grant": ""})
    manifest = {
        "playbook_version": __version__,
        "target": target.redacted,
        "window": {
            "start": started.isoformat(),
            "end": ended.isoformat(),
            "duration_s": round((ended - started).total_seconds(), 3),
        },
        "interval_s": interval,
        "collected": ["settings", "activity"],
        "privileges": {
            k: settings["server"].get(k)
            for k in ("role", "is_superuser", "has_pg_monitor", "has_read_all_stats", "has_read_all_settings")
        },
        "unavailable": unavailable,
        "gaps": activity.gaps,
        "failures": failures,
        "server_logs": [str(p) for p in server_logs],
        "app_logs": [str(p) for p in app_logs],
    }
    return Evidence(
        manifest=manifest,
        frames={"activity_samples": activity.samples, "activity_ticks": activity.ticks},
        snapshots={"settings": settings},
    )

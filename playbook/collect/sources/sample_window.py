"""The sampling source: pg_stat_activity for the window, and PgBouncer's console beside it.

The console (when the request names one) is sampled in its own thread for the same window, so
both clocks cover the same seconds. The console's failure is a note of this source ("PgBouncer
console"): the server's samples are still evidence. The window this source covered is where the
logs count from.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, cast

from playbook.collect.activity import ActivitySampler
from playbook.collect.pgbouncer_console import PgBouncerSampler
from playbook.collect.sources.base import Context, Contribution
from playbook.evidence.manifest import HIDDEN_ACTIVITY, Gap
from playbook.request import RunRequest

CONSOLE_WHAT = "PgBouncer console"
CONSOLE_JOIN_S = 30  # how long the console may take to stop once the window is over


def cut_short_warning(at_s: float, duration_s: float) -> str:
    """The evidence warning of a window an interrupt ended early."""
    return f"window cut short at {at_s:.0f} s of {duration_s:g} s by an interrupt"


class SamplingSource:
    name = "activity sampler"
    live = True
    windowed = False

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        """activity_samples and activity_ticks (and the console's frames and snapshots) for
        `request.duration` seconds every `request.interval`; gaps where the session was lost."""
        assert context.target is not None  # a live source: skipped offline
        context.end_session()  # the window must not count the playbook's short session
        part = Contribution()
        started = datetime.now(timezone.utc)
        console = (
            PgBouncerSampler(request.pgbouncer_dsn, request.interval, zone=context.app_zone)
            if request.pgbouncer_dsn
            else None
        )
        result: dict[str, Any] = {}
        thread = None
        if console is not None:

            def sample_console() -> None:
                try:
                    result["evidence"] = console.run(request.duration)
                except Exception as exc:  # the console is evidence when it answers, a note when not
                    result["error"] = exc

            thread = threading.Thread(target=sample_console, name="pgbouncer-console", daemon=True)
            thread.start()
        watcher = context.on_tick
        try:
            activity = ActivitySampler(
                context.target,
                duration=request.duration,
                interval=request.interval,
                progress=request.progress,
                on_tick=None if watcher is None else (lambda tick: watcher(tick, context)),
                keep_on_interrupt=context.keep_on_interrupt,
            ).run()
        finally:
            if console is not None and thread is not None:
                console.stop()
                thread.join(timeout=CONSOLE_JOIN_S)
        part.frames["activity_samples"] = activity.samples
        part.frames["activity_ticks"] = activity.ticks
        part.gaps = cast(list[Gap], activity.gaps)
        part.collected.append("activity")
        if activity.hidden_note:
            role = context.settings.get("server", {}).get("role") or "<role>"
            part.unavailable.append(
                {
                    "what": HIDDEN_ACTIVITY,
                    "error": activity.hidden_note,
                    "grant": f"GRANT pg_read_all_stats TO {role};  -- or pg_monitor",
                }
            )
        if console is not None:
            if "evidence" in result:
                part.frames.update(result["evidence"].frames)
                part.snapshots.update(result["evidence"].snapshots)
                part.collected.append("pgbouncer_console")
            else:
                error = result.get("error", "the console did not answer within the window")
                part.failures.append({"what": CONSOLE_WHAT, "error": str(error)[:300]})
        if activity.cut_short_s is not None:
            # Said beside the verdict (summary.evidence_warnings reads the snapshot's warnings).
            part.snapshots["sampling"] = {
                "cut_short_at_s": activity.cut_short_s,
                "duration_s": request.duration,
                "warnings": [cut_short_warning(activity.cut_short_s, request.duration)],
            }
        part.window = (started, datetime.now(timezone.utc))
        return part

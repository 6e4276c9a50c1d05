"""The application-log source: the failures each client stack reports, read in --app-tz.

A failure without a time is listed as unplaced by the reader itself (never a row without a
time); the window is applied to the frame by collect_evidence.
"""

from __future__ import annotations

from playbook.collect.applog import read_app_logs
from playbook.collect.sources.base import Context, Contribution
from playbook.request import RunRequest


class AppLogSource:
    name = "application log"
    live = False
    windowed = True

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        """app_log_events and the app_log_summary snapshot (stacks, unplaced records, warnings)."""
        if not context.app_logs:
            return Contribution()
        log = read_app_logs(context.app_logs, app_tz=context.app_zone)
        return Contribution(
            frames={"app_log_events": log.events},
            snapshots={
                "app_log_summary": {
                    **log.summary,
                    "stacks": log.stacks,
                    "primary_stack": log.primary_stack,
                    "lines_read": log.lines_read,
                    "lines_matched": log.lines_matched,
                    "warnings": log.warnings,
                }
            },
            collected=["app_log"],
        )

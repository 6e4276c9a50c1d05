"""The PgBouncer-log source: PgBouncer's own log, read in the application host's zone.

The reader is given `since` so that its summary counts the events from there on (as before);
the window's both bounds are applied to the frame by collect_evidence.
"""

from __future__ import annotations

from playbook.collect.pgbouncer_log import read_pgbouncer_logs
from playbook.collect.sources.base import Context, Contribution
from playbook.request import RunRequest


class PgBouncerLogSource:
    name = "PgBouncer log"
    live = False
    windowed = True

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        """pgbouncer_log_events and the pgbouncer_log_summary snapshot."""
        if not context.pgbouncer_logs:
            return Contribution()
        log = read_pgbouncer_logs(context.pgbouncer_logs, zone=context.app_zone, since=context.log_since)
        return Contribution(
            frames={"pgbouncer_log_events": log.events},
            snapshots={"pgbouncer_log_summary": log.summary},
            zones={"pgbouncer_log": context.app_zone.describe()},
            collected=["pgbouncer_log"],
        )

"""The settings source: the server's configuration and the role's privileges, once.

It frames everything after it: the log sources read the server's log_line_prefix, log_timezone
and lc_messages from it, and the manifest's privileges come from it.
"""

from __future__ import annotations

from playbook.collect.settings import snapshot_settings
from playbook.collect.sources.base import Context, Contribution
from playbook.request import RunRequest
from playbook.target import POOLER_NOTE


class SettingsSource:
    name = "settings"
    live = True
    windowed = False

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        """The settings snapshot, read on the run's short session; what the role could not read
        is in its "unavailable" list."""
        settings = snapshot_settings(context.session())
        # Reached through a pooler (the session found its startup options refused or dropped):
        # the summary says so, and what that hides.
        pooled = context.target is not None and context.target.pooled
        pooler = {"pooler": {"pooled": True, "note": POOLER_NOTE}} if pooled else {}
        return Contribution(
            snapshots={"settings": settings, **pooler},
            unavailable=list(settings.get("unavailable", [])),
            collected=["settings"],
        )

"""The settings source: the server's configuration and the role's privileges, once.

It frames everything after it: the log sources read the server's log_line_prefix, log_timezone
and lc_messages from it, and the manifest's privileges come from it.
"""

from __future__ import annotations

from playbook.collect.settings import snapshot_settings
from playbook.collect.sources.base import Context, Contribution
from playbook.request import RunRequest


class SettingsSource:
    name = "settings"
    live = True
    windowed = False

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        """The settings snapshot, read on the run's short session; what the role could not read
        is in its "unavailable" list."""
        settings = snapshot_settings(context.session())
        return Contribution(
            snapshots={"settings": settings},
            unavailable=list(settings.get("unavailable", [])),
            collected=["settings"],
        )

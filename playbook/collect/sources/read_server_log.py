"""The server-log source: PostgreSQL's own log, read in the server's prefix, zone and language.

The reader is given the window's bounds too: it bounds its frames while it reads, so memory
stays flat whatever the log's size (the window applied afterwards by collect_evidence is the
same and drops nothing more).
"""

from __future__ import annotations

from typing import Any

from playbook.collect.serverlog import read_server_logs
from playbook.collect.sources.base import Context, Contribution
from playbook.errors import PlaybookError
from playbook.evidence.settings import setting_text
from playbook.evidence.zones import Zone, zone_named
from playbook.request import RunRequest
from playbook.vocabulary.translations import language_of_locale


def log_zone(settings: dict[str, Any], flag_zone: Zone | None) -> Zone | None:
    """The zone the server's log clock reads: --log-tz when given, else the server's log_timezone."""
    if flag_zone is not None:
        return flag_zone
    server_zone = setting_text(settings, "log_timezone")
    if server_zone:
        try:
            return zone_named(server_zone, "server")
        except PlaybookError:
            return None  # a zone this machine's tzdata lacks: the reader warns per abbreviation
    return None


class ServerLogSource:
    name = "server log"
    live = False
    windowed = True

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        """server_log_events, server_log_sessions and the server_log_summary snapshot."""
        if not context.server_logs:
            return Contribution()
        settings = context.settings
        zone = log_zone(settings, context.flag_log_zone)
        log = read_server_logs(
            context.server_logs,
            prefix=request.log_prefix or setting_text(settings, "log_line_prefix"),
            since=context.log_since,
            until=context.until,
            log_tz=zone,
            progress=request.progress,
            # the server's own language: its log is read through that catalog, not guessed
            language=language_of_locale(setting_text(settings, "lc_messages")),
        )
        return Contribution(
            frames={"server_log_events": log.events, "server_log_sessions": log.sessions},
            snapshots={
                "server_log_summary": {
                    **log.summary,
                    "format": log.format,
                    "prefix": log.prefix,
                    "files": log.files,
                    "bytes_read": log.bytes_read,
                    "lines": log.lines,
                    "warnings": log.warnings,
                }
            },
            zones={"server_log": zone.describe() if zone else "as printed in the log"},
            collected=["server_log"],
        )

"""The sources of evidence, in the order a run consults them, and the protocol they share.

Order matters: the settings frame the window (and give the server's log_line_prefix,
log_timezone and lc_messages), the probes run before the window so they never overlap the
sampler, the sampler (and PgBouncer's console beside it) covers the window, and the logs are read
last so they cover the whole window. Adding a source is one module implementing `Source` and one
line in SOURCES.
"""

from __future__ import annotations

from playbook.collect.sources.base import Context, Contribution, Source
from playbook.collect.sources.read_app_log import AppLogSource
from playbook.collect.sources.read_path_probe import PathProbeSource
from playbook.collect.sources.read_pgbouncer_log import PgBouncerLogSource
from playbook.collect.sources.read_server_log import ServerLogSource
from playbook.collect.sources.read_settings import SettingsSource
from playbook.collect.sources.run_probes import ProbesSource
from playbook.collect.sources.sample_window import SamplingSource

SOURCES: tuple[Source, ...] = (
    SettingsSource(),
    ProbesSource(),
    SamplingSource(),
    ServerLogSource(),
    PgBouncerLogSource(),
    AppLogSource(),
    PathProbeSource(),
)

__all__ = ["SOURCES", "Context", "Contribution", "Source"]

"""The protocol every evidence source implements, and what the sources of one run share.

A source is given the request and the context and returns a `Contribution`: frames, snapshots,
and whatever it has to say to the manifest (what it collected, parts of it that failed, gaps,
what the role could not see, the zone its times were read in). It never catches its own failure:
`collect_evidence` turns any exception a source raises into one `failures` entry naming the source,
the same way for every source. Nor does it bound its log events by the request's window:
`collect_evidence` applies the window to the frames of every `windowed` source, in one place.
A reader may still bound early for memory (the server log's reader does), since its bounds are
the same.

This module imports no collector: the sources do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from playbook.evidence.manifest import Failure, Gap
from playbook.evidence.zones import Zone
from playbook.request import RunRequest
from playbook.target import Target, cannot_run_commands

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from playbook.collect.activity import SampledTick


@dataclass
class Contribution:
    """What one source adds to the evidence.

    `frames` and `snapshots` are merged into the Evidence under their names (each name belongs to
    one source). `collected` names what the manifest's "collected" lists; `failures` are parts of
    the source that failed while the rest was read (the source's own failure is an exception);
    `gaps` are the moments the source lost its session; `unavailable` what the role could not see;
    `zones` the zone each log's times were read in (manifest "zones"); `window` the live window
    (start, end) a sampler covered, from which the logs count.
    """

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    snapshots: dict[str, Any] = field(default_factory=dict)
    collected: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    unavailable: list[dict[str, str]] = field(default_factory=list)
    zones: dict[str, str] = field(default_factory=dict)
    window: tuple[datetime, datetime] | None = None


@dataclass
class Context:
    """What the sources of one run share, built once by `collect_evidence`.

    `target` is None offline (then the `live` sources are skipped). The logs are routed (PgBouncer's
    own log is recognised by content wherever it was given). `snapshots` holds what the earlier
    sources contributed (the settings, read by the log sources for the prefix, zone and
    language); `window` is the live window once the sampler ran. `log_since` is where log events
    count from: the request's `since`, else, live, when the user asked (`called_at`), else (offline)
    from the logs' beginning.
    """

    target: Target | None
    called_at: datetime
    app_zone: Zone
    flag_log_zone: Zone | None  # --log-tz, validated when the context was built
    server_logs: list[Path]
    app_logs: list[Path]
    pgbouncer_logs: list[Path]
    since: datetime | None = None
    until: datetime | None = None
    snapshots: dict[str, Any] = field(default_factory=dict)
    window: tuple[datetime, datetime] | None = None
    # A live view given each sampled tick with this context (a notebook opened by hand), and
    # whether an interrupt ends the window early keeping what was sampled (else it ends the run).
    on_tick: Callable[[SampledTick, Context], None] | None = None
    keep_on_interrupt: bool = False
    _session: psycopg.Connection[Any] | None = field(default=None, repr=False)

    @property
    def settings(self) -> dict[str, Any]:
        """The settings snapshot, or {} before (or without) the settings source."""
        return dict(self.snapshots.get("settings") or {})

    @property
    def log_since(self) -> datetime | None:
        if self.since is not None:
            return self.since
        if self.target is None:
            return None
        start = self.window[0] if self.window else self.called_at
        return min(self.called_at, start)

    def session(self) -> psycopg.Connection[Any]:
        """The playbook's one short session for the settings and the probes, opened on first use
        (Target.check: a refusal is one sentence). `end_session` closes it."""
        if self.target is None:
            raise RuntimeError("an offline run has no session")  # live sources are skipped offline
        if self._session is None or cannot_run_commands(self._session):  # lost: a fresh one
            self._session = self.target.check()
        return self._session

    def end_session(self) -> None:
        """Close the short session, so that the sampler's window never counts it."""
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):  # a session the path lost: nothing left to close
                session.close()


@runtime_checkable
class Source(Protocol):
    """One source of evidence.

    `name` is how the manifest's failures name it ("server log"); a `live` source needs the
    database and is skipped offline; a `windowed` source reads the past (a log) and its frames'
    `ts` are bounded by the request's since/until; a sampler's frames are the window itself.
    """

    name: str
    live: bool
    windowed: bool

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        """The evidence this source adds; any exception is recorded as this source's failure."""
        ...

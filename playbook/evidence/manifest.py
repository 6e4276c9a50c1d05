"""manifest.json: what a run collected, when, as whom, and what it could not see or lost.

The manifest frames every other piece of evidence: the window the sampler covered, where the logs
were read from, the gaps in sampling (each a lost connection: evidence, not a crash) and the
collectors that failed. Its `schema` names the evidence format; a folder written by another
format is refused on load with one sentence rather than misread.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

MANIFEST_SCHEMA = "pg-session-playbook/evidence/v1"


class Window(TypedDict):
    start: str  # ISO-8601, UTC
    end: str
    duration_s: float


class Gap(TypedDict, total=False):
    """A stretch where the sampler had no session: from its first failed tick to its first good one."""

    start: str
    end: str | None  # None: still lost when the window closed
    error: str
    sqlstate: str | None
    reconnect_attempts: int


def gap_opened(exc: BaseException, at: datetime) -> Gap:
    """The gap a lost session opens at `at`, with the error in one line; `end` is set on resuming."""
    return {
        "start": at.isoformat(),
        "end": None,
        "error": " ".join(str(exc).split())[:500],
        "sqlstate": getattr(exc, "sqlstate", None),
        "reconnect_attempts": 0,
    }


# manifest["unavailable"]'s entry for sampled sessions of roles this role may not see: a leak or an
# idle pool among them cannot be judged, so the verdict says so beside it.
HIDDEN_ACTIVITY = "other roles' activity"


class Failure(TypedDict):
    what: str
    error: str


class Manifest(TypedDict, total=False):
    schema: str
    playbook_version: str
    target: str  # the DSN, redacted: never a password
    window: Window
    interval_s: float
    app: str | None
    logs_since: str | None
    logs_until: str | None
    live: dict[str, Any]  # {"connected": bool, and when not: "reason", "sqlstate", "cause"}
    collected: list[str]  # "settings", "probes", "activity", "server_log", "app_log", …
    privileges: dict[str, Any]
    unavailable: list[dict[str, str]]
    gaps: list[Gap]
    failures: list[Failure]
    server_logs: list[str]
    app_logs: list[str]
    pgbouncer_logs: list[str]
    zones: dict[str, str]  # what each clock was read in: "server_log", "app_log" -> zone and origin
    path_probe: str  # the `playbook probe path` folder --path-probe joined to evidence read from disk

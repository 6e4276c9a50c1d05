"""Pure read-only views of the evidence that several diagnoses share."""

from __future__ import annotations

from typing import Any

import pandas as pd

from playbook.collect.settings import setting_seconds
from playbook.evidence import Evidence

# Server log events that end sessions on the server's own initiative: when they are present, the
# application's "connection closed" errors have a server-side explanation and are not network.
SERVER_SIDE_ENDINGS = frozenset(
    {
        "admin_terminate",
        "crash_terminate_sibling",
        "immediate_shutdown_terminate",
        "postmaster_death",
        "backend_crash",
        "terminating_other_processes",
        "crash_reinitializing",
        "shutdown_requested",
        "shut_down",
        "panic",
        "idle_session_timeout",
        "idle_in_transaction_timeout",
        "transaction_timeout",
        "recovery_conflict",
    }
)
# What the application logs when a session it held is gone, whatever ended it.
APP_SESSION_LOST = frozenset(
    {
        "server_closed_unexpectedly",
        "connection_lost",
        "connection_closed",
        "ssl_eof",
        "connection_reset",
        "broken_pipe",
        "network_timeout",
        "client_query_timeout",
        "validation_failed",
        "pool_discarded_broken",
    }
)


def server_events(evidence: Evidence, *event_ids: str) -> pd.DataFrame:
    events = evidence.frame("server_log_events")
    if events.empty or "event" not in events:
        return pd.DataFrame(columns=["ts", "event", "category", "sqlstate", "user", "database", "message"])
    return events[events["event"].isin(event_ids)] if event_ids else events


def app_events(evidence: Evidence, *kinds: str) -> pd.DataFrame:
    events = evidence.frame("app_log_events")
    if events.empty or "kind" not in events:
        return pd.DataFrame(columns=["ts", "kind", "stack", "text"])
    return events[events["kind"].isin(kinds)] if kinds else events


def server_log_read(evidence: Evidence) -> bool:
    return "server_log" in evidence.manifest.get("collected", [])


def app_stack(evidence: Evidence) -> str:
    return str((evidence.snapshots.get("app_log_summary") or {}).get("primary_stack") or "unknown")


def setting_s(evidence: Evidence, name: str) -> float | None:
    """A time setting in seconds, None when absent or disabled (0)."""
    return setting_seconds(evidence.settings.get("settings", {}).get(name))


def overrides_of(evidence: Evidence, name: str) -> list[dict[str, Any]]:
    """Per-role / per-database values of a setting (ALTER ROLE/DATABASE … SET), with their seconds."""
    found = []
    for row in evidence.settings.get("overrides") or []:
        for item in row.get("setconfig") or []:
            key, _, value = str(item).partition("=")
            if key == name:
                found.append({"role": row.get("role"), "database": row.get("database"), "value": value})
    return found


def duration_text_seconds(value: str) -> float | None:
    """'45s', '2min', '1500' (ms for timeouts) -> seconds; None when unreadable or 0."""
    text = value.strip().lower()
    units = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
    for unit, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(unit):
            try:
                number = float(text[: -len(unit)]) * factor
            except ValueError:
                return None
            return number or None
    try:
        return float(text) / 1000 or None
    except ValueError:
        return None


def first_last(frame: pd.DataFrame) -> dict[str, str | None]:
    if frame.empty or "ts" not in frame:
        return {"first_seen": None, "last_seen": None}
    ts = pd.to_datetime(frame["ts"], utc=True).dropna()
    if ts.empty:
        return {"first_seen": None, "last_seen": None}
    return {"first_seen": ts.min().isoformat(), "last_seen": ts.max().isoformat()}


def top_values(frame: pd.DataFrame, column: str, limit: int = 5) -> dict[str, int]:
    if frame.empty or column not in frame:
        return {}
    # astype(str) first: the log readers hand categoricals, where fillna("") may not be allowed.
    values = frame[column].astype(str).replace({"": "(none)", "nan": "(none)", "None": "(none)"})
    counts = values.value_counts().head(limit)
    return {str(k): int(v) for k, v in counts.items()}


def app_samples(evidence: Evidence) -> pd.DataFrame:
    """Activity rows of the application in focus (`playbook run --app`), else of every application.

    Server-wide questions (usage against max_connections) read evidence.frame("activity_samples").
    """
    samples = evidence.frame("activity_samples")
    focus = evidence.manifest.get("app")
    if not focus or samples.empty:
        return samples
    return samples[samples["application_name"] == focus]

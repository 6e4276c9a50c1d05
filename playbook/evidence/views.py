"""Pure read-only views of the evidence that diagnoses, plots and notebooks share.

Each takes Evidence (or one of its frames) and returns a frame or a number; none does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from playbook.evidence.frames import ACTIVITY_SAMPLES, APP_LOG_EVENTS, SERVER_LOG_EVENTS
from playbook.evidence.pgbouncer_frames import LOG_EVENTS_FRAME
from playbook.evidence.settings import duration_text_seconds, usable_connections
from playbook.evidence.store import Evidence
from playbook.vocabulary.categories import UNKNOWN_STACK
from playbook.vocabulary.findings import SESSION_LOST
from playbook.vocabulary.pgbouncer_reasons import FELT_KINDS

__all__ = [
    "APP_SESSION_LOST",
    "IDLE_IN_TRANSACTION_STATES",
    "SERVER_SIDE_ENDINGS",
    "app_events",
    "app_samples",
    "app_stack",
    "counts_over_time",
    "detected_stack",
    "duration_text_seconds",
    "first_last",
    "idle_in_transaction_sessions",
    "LimitInForce",
    "limit_in_force",
    "overrides_of",
    "pooler_client_closes",
    "refusal",
    "role_of",
    "samples_before",
    "server_events",
    "server_log_read",
    "setting_s",
    "top_values",
    "usable_connections",
]

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
# What the application logs when a session it held is gone, whatever ended it (defined with the
# findings that explain it, in playbook.vocabulary.findings).
APP_SESSION_LOST = SESSION_LOST


# Session states of a transaction held open with nothing running in it.
IDLE_IN_TRANSACTION_STATES = ("idle in transaction", "idle in transaction (aborted)")

# How far back a sample may lie and still describe the session an event ended: a few ticks, and
# never less than a few seconds (a backend's pid is reused by later sessions).
JOIN_MIN_TOLERANCE_S = 5.0
JOIN_TICKS = 3


def server_events(evidence: Evidence, *event_ids: str) -> pd.DataFrame:
    """Server-log events of these ids (every event when none is given), joined to the sampled session.

    Each event is matched to the last activity sample of the same pid at or before it (within
    JOIN_TICKS ticks): `application`, `user` and `database` are filled from the sample where the
    log line does not carry them (Debian's default prefix has no %a), and `last_state` says what the
    session was doing when last seen ('' when it was not sampled).
    """
    events = evidence.frame(SERVER_LOG_EVENTS)
    if event_ids:
        events = events[events["event"].isin(event_ids)]
    return join_sampled_sessions(events, evidence.activity_samples, evidence.manifest.get("interval_s"))


def join_sampled_sessions(
    events: pd.DataFrame, samples: pd.DataFrame, interval_s: float | None = None
) -> pd.DataFrame:
    """`events` (pid, ts) with the sampled session's application, user, database and last state."""
    joined = events.copy()
    for column in ("application", "user", "database"):
        if column in joined:
            joined[column] = joined[column].astype(object).where(joined[column].notna(), "").astype(str)
    joined["last_state"] = ""
    if events.empty or samples.empty or "pid" not in events:
        return joined
    tolerance = pd.Timedelta(seconds=max(JOIN_MIN_TOLERANCE_S, JOIN_TICKS * float(interval_s or 1.0)))
    left = joined.reset_index(names="_row").sort_values("ts")
    left["ts"] = left["ts"].astype("datetime64[ms, UTC]")
    right = samples[["tick_ts", "pid", "state", "application_name", "usename", "datname"]].copy()
    right["tick_ts"] = right["tick_ts"].astype("datetime64[ms, UTC]")
    right["pid"] = right["pid"].astype(left["pid"].dtype)
    merged = pd.merge_asof(
        left,
        right.sort_values("tick_ts"),
        left_on="ts",
        right_on="tick_ts",
        by="pid",
        direction="backward",
        tolerance=tolerance,
    ).set_index("_row")
    merged.index.name = None
    for own, sampled in (("application", "application_name"), ("user", "usename"), ("database", "datname")):
        if own in merged:
            blank = merged[own].isin(["", "nan", "None", "[unknown]"])
            merged[own] = merged[own].where(~blank, merged[sampled].fillna("").astype(str))
    merged["last_state"] = merged["state"].fillna("").astype(str)
    return merged[[*events.columns, "last_state"]].loc[joined.index]


# What the pool looked like when requests timed out waiting for a connection: the ticks of the
# last few seconds before each timeout (every request waited at least that long, so its pool's
# connections were checked out then), never less than a few ticks.
WAIT_LOOKBACK_MIN_S = 3.0
WAIT_LOOKBACK_TICKS = 3


def samples_before(
    samples: pd.DataFrame, moments: pd.Series, interval_s: float | None = None
) -> pd.DataFrame:
    """The activity rows of the ticks within the lookback (WAIT_LOOKBACK_*) before any of `moments`
    (e.g. the application's pool timeouts); for a moment with no tick before it (sampling had not
    begun), the first tick after it within the lookback. Empty when no tick is that close.

    A diagnosis of why a pool ran dry reads these, not the whole window nor its last tick: the
    connections may have gone idle once the load passed, or been busy only before the trouble.
    """
    if samples.empty or moments.empty:
        return samples.iloc[0:0]
    lookback = pd.Timedelta(seconds=max(WAIT_LOOKBACK_MIN_S, WAIT_LOOKBACK_TICKS * float(interval_s or 1.0)))
    ticks = pd.DatetimeIndex(samples["tick_ts"].drop_duplicates().sort_values()).as_unit("ns")
    at = pd.DatetimeIndex(pd.to_datetime(moments, utc=True).dropna()).as_unit("ns")
    first = ticks.searchsorted(at - lookback, side="left")
    after_last = ticks.searchsorted(at, side="right")
    chosen = np.zeros(len(ticks) + 1, dtype="int64")
    for lo, hi, moment in zip(first.tolist(), after_last.tolist(), at, strict=True):
        if hi > lo:
            chosen[lo] += 1  # a difference array: every tick in [lo, hi) is chosen
            chosen[hi] -= 1
        elif hi < len(ticks) and ticks[hi] - moment <= lookback:
            chosen[hi] += 1
            chosen[hi + 1] -= 1
    keep = ticks[np.cumsum(chosen)[:-1] > 0]
    return samples[pd.DatetimeIndex(samples["tick_ts"]).as_unit("ns").isin(keep)]


def app_events(evidence: Evidence, *kinds: str) -> pd.DataFrame:
    """Application-log failures of these kinds (every failure when none is given)."""
    events = evidence.frame(APP_LOG_EVENTS)
    return events[events["kind"].isin(kinds)] if kinds else events


def refusal(evidence: Evidence, *causes: str) -> dict[str, Any] | None:
    """Why the server refused the playbook itself, when that refusal is part of the incident
    (manifest `live`: cause "slots", "role_limit", "server_down" or "network"), else None."""
    live = evidence.manifest.get("live") or {}
    if live.get("connected", True) or live.get("cause") not in causes:
        return None
    return dict(live)


def pooler_client_closes(evidence: Evidence) -> pd.DataFrame:
    """Client connections PgBouncer closed or refused for a reason the application feels (its log's
    C-side closes and pooler errors, never the recycling of unused server connections): from the
    application's side these are endings as real as the server's own."""
    events = evidence.frame(LOG_EVENTS_FRAME)
    if events.empty:
        return events
    felt = events["kind"].isin(FELT_KINDS) & (events["side"] == "client")
    return events[felt & ~events["recycling"].fillna(False).astype(bool)]


def server_log_read(evidence: Evidence) -> bool:
    """Whether a server log was read: without one, "no kill logged" proves nothing."""
    return evidence.collected("server_log")


def app_stack(evidence: Evidence) -> str:
    """The client stack the application log revealed, or 'unknown'."""
    return str(evidence.snapshot("app_log_summary").get("primary_stack") or UNKNOWN_STACK)


def detected_stack(evidence: Evidence) -> str | None:
    """The client stack the application log revealed, None when it revealed none."""
    stack = app_stack(evidence)
    return None if stack == UNKNOWN_STACK else stack


def role_of(events: pd.DataFrame, placeholder: str = "<app_role>") -> str:
    """The role most of these events name (a real name from the evidence), else the placeholder."""
    roles = [r for r in top_values(events, "user", 3) if r not in ("(none)", "[unknown]")]
    return roles[0] if roles else placeholder


def setting_s(evidence: Evidence, name: str) -> float | None:
    """A time setting in seconds, None when absent or disabled (0)."""
    return evidence.setting_s(name)


def overrides_of(evidence: Evidence, name: str) -> list[dict[str, Any]]:
    """Per-role / per-database values of a setting (ALTER ROLE/DATABASE … SET)."""
    found = []
    for row in evidence.settings.get("overrides") or []:
        for item in row.get("setconfig") or []:
            key, _, value = str(item).partition("=")
            if key == name:
                found.append({"role": row.get("role"), "database": row.get("database"), "value": value})
    return found


@dataclass(frozen=True)
class LimitInForce:
    """A time setting's value for the sessions some events name, and where that value was set."""

    seconds: float
    # "server-wide", "set for role app", "set for database lab" or "set for role app in database lab"
    scope: str

    @property
    def text(self) -> str:
        """'4 s, set for role app': the value with its origin, as titles say it."""
        return f"{self.seconds:g} s, {self.scope}"


def _override_scope(role: str, database: str) -> str:
    if role and database:
        return f"set for role {role} in database {database}"
    return f"set for role {role}" if role else f"set for database {database}"


def limit_in_force(evidence: Evidence, name: str, events: pd.DataFrame) -> LimitInForce | None:
    """The value of time setting `name` that applied to the sessions `events` name (their most
    frequent `user` and `database`), in PostgreSQL's order: ALTER ROLE … IN DATABASE, ALTER ROLE,
    ALTER DATABASE, then the server-wide value.

    When the events name no role (an application log alone), a value is returned only when every
    value of the setting the evidence holds agrees (a single override, or only the server-wide
    one): guessing which role was killed would put a wrong number in a fix. None when no value is
    known, or when the one that applies is 0 (disabled there, so the sessions' own SET decided).
    """
    known = ("(none)", "[unknown]")
    roles = [r for r in top_values(events, "user", 1) if r not in known]
    databases = [d for d in top_values(events, "database", 1) if d not in known]
    overrides = overrides_of(evidence, name)
    server_wide = evidence.setting_s(name)
    if roles:
        role, database = roles[0], databases[0] if databases else None
        for want_role, want_database in ((role, database), (role, ""), ("", database)):
            if want_database is None:
                continue
            for override in overrides:
                if (override["role"] or "") == want_role and (override["database"] or "") == want_database:
                    seconds = duration_text_seconds(str(override["value"]))
                    scope = _override_scope(want_role, want_database)
                    return LimitInForce(seconds, scope) if seconds else None
        return LimitInForce(server_wide, "server-wide") if server_wide else None
    candidates = {
        (duration_text_seconds(str(o["value"])), _override_scope(o["role"] or "", o["database"] or ""))
        for o in overrides
    }
    if server_wide:
        candidates.add((server_wide, "server-wide"))
    if len(candidates) != 1:
        return None
    seconds, scope = candidates.pop()
    return LimitInForce(seconds, scope) if seconds else None


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

    Server-wide questions (usage against max_connections) read evidence.activity_samples.
    """
    samples = evidence.frame(ACTIVITY_SAMPLES)
    focus = evidence.manifest.get("app")
    if not focus or samples.empty:
        return samples
    return samples[samples["application_name"] == focus]


def counts_over_time(samples: pd.DataFrame, ticks: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Backends per tick and group, zero-filled: a group that vanished reads 0, not a gap.

    Only ticks where sampling succeeded are rows; lost ticks stay out (they are gaps, not zeros).
    """
    keys = by or ["state"]
    ok_ticks = ticks.loc[ticks["ok"].astype(bool), "ts"].drop_duplicates().sort_values()
    if samples.empty:
        return pd.DataFrame(index=pd.DatetimeIndex(ok_ticks, name="ts"))
    grouped = samples.fillna({k: "" for k in keys}).groupby(["tick_ts", *keys]).size()
    table = grouped.unstack(keys, fill_value=0)
    return table.reindex(pd.DatetimeIndex(ok_ticks, name="ts"), fill_value=0).fillna(0).astype("int64")


def idle_in_transaction_sessions(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per backend seen idle in transaction: its longest observed age and who it belongs to."""
    columns = ["pid", "application_name", "usename", "datname", "client_addr", "max_age_s"]
    if samples.empty:
        return pd.DataFrame(columns=columns)
    idle = samples[samples["state"].isin(IDLE_IN_TRANSACTION_STATES)]
    keys = ["pid", "backend_start", "application_name", "usename", "datname", "client_addr"]
    grouped = idle.groupby(keys, dropna=False)["xact_age_s"].max().rename("max_age_s").reset_index()
    return grouped.drop(columns="backend_start").sort_values("max_age_s", ascending=False, ignore_index=True)

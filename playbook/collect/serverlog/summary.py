"""The summary of a read: JSON-serialisable totals of the streaming state."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from playbook.collect import log_events
from playbook.collect.serverlog.state import SessionState
from playbook.collect.serverlog.times import DATETIME_MS

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 in UTC, as pandas' Timestamp.isoformat() prints
    them ('2025-03-01T10:00:00.123000+00:00'; no fraction when it is zero), without loading
    pandas (`playbook logs` on a stderr log never does)."""
    if ms is None:
        return None
    if not DATETIME_MS[0] <= int(ms) <= DATETIME_MS[1]:
        import pandas as pd

        return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()
    return (_EPOCH + timedelta(milliseconds=int(ms))).isoformat()


def _top(counts: dict[str, int], n: int = 10) -> dict[str, int]:
    ranked = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: -kv[1])
    return {k: v for k, v in ranked[: n + 1] if k != ""}


def _tops(
    event: np.ndarray, code: np.ndarray, count: np.ndarray, values: list[str], n: int = 10
) -> dict[int, dict[str, int]]:
    """Per event code: its n + 1 names with the highest counts (ties in first-seen order), the
    empty name left out (what `_top` gives for a full dictionary of counts)."""
    out: dict[int, dict[str, int]] = {}
    if not len(event):
        return out
    order = np.lexsort((np.arange(len(event)), -count, event))
    ev_sorted = event[order]
    starts = np.flatnonzero(np.r_[True, ev_sorted[1:] != ev_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s_, e_ in zip(starts.tolist(), ends.tolist(), strict=True):
        picked = order[s_ : min(e_, s_ + n + 1)]
        out[int(ev_sorted[s_])] = {
            values[int(code[i])]: int(count[i]) for i in picked.tolist() if values[int(code[i])] != ""
        }
    return out


def summarise(
    state: SessionState,
    files: list[str],
    fmt: str,
    prefix: str | None,
    since: str | None,
    until: str | None,
    zones_assumed: dict[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    """The summary: counts per category, event, user, database, application and host, the
    per-minute timeline, session durations, the window and the zones the times were read in."""
    # who was hit, ranked with numpy: only the entries the summary shows become Python objects
    # (a log can have hundreds of thousands of distinct (event, host) pairs)
    who = {name: state.who(name) for name in ("user", "database", "application", "host")}
    per_event = _per_event(state, who)
    categories = {c: 0 for c in log_events.CATEGORIES}
    for entry in per_event.values():
        if entry["category"]:
            categories[entry["category"]] += entry["count"]
    stats, histogram = _durations(state)
    first = [state.first[c] for c in state.first]
    last = [state.last[c] for c in state.last]
    return {
        "schema": "pg-session-playbook/serverlog/v1",
        "format": fmt,
        "prefix": prefix if fmt == "stderr" else None,
        "files": files,
        "bytes_read": state.bytes_read,
        "lines": state.lines,
        "entries": state.entries,
        "window": {
            "since": since,
            "until": until,
            "first": iso(min(first)) if first else None,
            "last": iso(max(last)) if last else None,
        },
        "categories": categories,
        "events": per_event,
        **{f"by_{name}": _most_hit(state, name, who[name]) for name in who},
        "timeline": _timeline(state),
        "sessions": {
            "count": state.sessions,
            "ended": state.sessions_ended,
            "open_or_unknown_end": state.sessions - state.sessions_ended,
            "duration_s": stats,
            "histogram": histogram,
            "ended_by": _top(dict(state.ended_by), 20),
        },
        "zones_assumed": zones_assumed,
        # rows the frames left out (only session lines and sessions are ever left out; the
        # counts above include them); null when the reader kept no frames (frames=False)
        "frame_rows_left_out": (
            {"events": state.events_dropped(), "sessions": state.session_chunks.dropped}
            if state.frames
            else None
        ),
        "warnings": warnings,
    }


def _per_event(
    state: SessionState, who: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """Per event id, most counted first: its count, category, meaning, first and last time and
    the names it hit most."""
    events = state.vocab["event"].values
    per_who = {name: _tops(*who[name], state.vocab[name].values) for name in who}
    per_event: dict[str, Any] = {}
    for code, count in state.count.items():
        event_id = events[code]
        kind = log_events.CATALOG.get(event_id)
        per_event[event_id] = {
            "count": count,
            "category": kind.category if kind else "",
            "meaning": kind.meaning if kind else "",
            "first_seen": iso(state.first.get(code)),
            "last_seen": iso(state.last.get(code)),
            "users": _top(per_who["user"].get(code, {})),
            "databases": _top(per_who["database"].get(code, {})),
            "applications": _top(per_who["application"].get(code, {})),
            "hosts": _top(per_who["host"].get(code, {})),
        }
    return dict(sorted(per_event.items(), key=lambda item: -item[1]["count"]))


def _most_hit(
    state: SessionState, name: str, who: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """The 50 names (of column `name`) hit most by events of a category: total and count per
    event."""
    events = state.vocab["event"].values
    has_category = np.array([bool(log_events.category(e)) for e in events], dtype=bool)
    ev, code, count = who
    values = state.vocab[name].values
    named = np.array([bool(v) for v in values], dtype=bool)
    ok = named[code] & has_category[ev] if len(ev) else np.zeros(0, dtype=bool)
    ev, code, count = ev[ok], code[ok], count[ok]
    if not len(code):
        return {}
    totals = np.bincount(code, weights=count, minlength=len(values)).astype(np.int64)
    used, first = np.unique(code, return_index=True)
    seen = used[np.argsort(first, kind="stable")]  # names in the order first seen
    top = seen[np.argsort(-totals[seen], kind="stable")][:50]
    out: dict[str, dict[str, Any]] = {}
    for c in top.tolist():
        mine = np.flatnonzero(code == c)
        ranked = mine[np.argsort(-count[mine], kind="stable")]
        out[values[c]] = {
            "total": int(totals[c]),
            "events": {events[int(ev[i])]: int(count[i]) for i in ranked.tolist()},
        }
    return out


def _timeline(state: SessionState) -> list[dict[str, Any]]:
    """Per minute: events per category, logins and disconnections."""
    minutes: dict[int, dict[str, int]] = {}
    for (minute, label), count in state.timeline.items():
        minutes.setdefault(minute, {})[label] = count
    return [{"minute": iso(minute * 60_000), **minutes[minute]} for minute in sorted(minutes)]


def _durations(state: SessionState) -> tuple[dict[str, float | None], dict[str, int]]:
    """Session durations: (min, quantiles, max and mean; a histogram)."""
    # one array, sorted in place: no copies beyond one for the quantiles (millions of sessions)
    durations = np.concatenate(state.durations) if state.durations else np.zeros(0)
    state.durations = [durations]
    buckets = [0, 1, 10, 60, 600, 3600, 86400, math.inf]
    labels = ["<1s", "1-10s", "10-60s", "1-10min", "10-60min", "1-24h", ">24h"]
    stats: dict[str, float | None] = dict.fromkeys(("min", "p50", "p90", "p99", "max", "mean"))
    histogram = dict.fromkeys(labels, 0)
    if len(durations):
        mean = float(np.mean(durations))  # before sorting: the same sum, in the same order
        durations.sort()
        p50, p90, p99 = (float(v) for v in np.quantile(durations, [0.5, 0.9, 0.99]))
        values = (float(durations[0]), p50, p90, p99, float(durations[-1]), mean)
        stats = {name: round(v, 3) for name, v in zip(stats, values, strict=True)}
        edges = np.searchsorted(durations, buckets, side="left")  # [a, b): right=False
        histogram = {label: int(edges[i + 1] - edges[i]) for i, label in enumerate(labels)}
    return stats, histogram

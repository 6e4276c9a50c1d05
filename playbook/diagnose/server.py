"""The server ends sessions itself: restarts, crashes, failovers, pg_terminate_backend reapers."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from playbook.diagnose.findings import Finding, Severity
from playbook.evidence import Evidence
from playbook.evidence.manifest import Gap
from playbook.evidence.views import (
    APP_SESSION_LOST,
    app_events,
    first_last,
    refusal,
    server_events,
    top_values,
)
from playbook.vocabulary.findings import CRASH_EVENTS

# A fast shutdown sends 57P01 to every session: those belong to the restart, not to a reaper.
SHUTDOWN_ATTRIBUTION = timedelta(seconds=3)
# A start this recent is worth saying (SRV-004); older ones are not this window's story.
RECENT_START = timedelta(hours=1)
ADMIN_CRITICAL_COUNT = 2
CONFIDENCE_RESTART_LOGGED = 0.95
CONFIDENCE_RESTART_INFERRED = 0.75  # from sampler gaps and refused logins only
CONFIDENCE_CRASH_LOGGED = 0.95
CONFIDENCE_CRASH_APP_ONLY = 0.85
CONFIDENCE_ADMIN_LOGGED = 0.9
CONFIDENCE_ADMIN_INFERRED = 0.75
CONFIDENCE_RECENT_START = 0.3


def _window_start(evidence: Evidence) -> datetime | None:
    return evidence.window[0] if evidence.window else None


def _near(moments: pd.Series, when: pd.Timestamp, within: timedelta) -> bool:
    return bool(((moments - when).abs() <= within).any())


def restart_gaps(evidence: Evidence, shutdown_times: pd.Series) -> list[Gap]:
    """Sampler gaps the restart explains: refused while starting or stopping (57P03), or begun
    within SHUTDOWN_ATTRIBUTION of a shutdown (a fast shutdown sends 57P01 to the sampler too)."""
    found = []
    for gap in evidence.gaps:
        error = gap.get("error") or ""
        if (
            "shutting down" in error
            or "starting up" in error
            or gap.get("sqlstate") == "57P03"
            or gap.get("start")
            and _near(shutdown_times, pd.Timestamp(gap["start"]), SHUTDOWN_ATTRIBUTION)
        ):
            found.append(gap)
    return found


def _still_down(shutdowns: pd.DataFrame, starts: pd.DataFrame) -> pd.Timestamp | None:
    """When the server log's last shutdown came after its last 'ready to accept connections' (the
    server went down and the logs end before it is back), that shutdown's first line; else None."""
    if shutdowns.empty:
        return None
    shut = pd.to_datetime(shutdowns["ts"], utc=True)
    last_ready = pd.to_datetime(starts["ts"], utc=True).max() if not starts.empty else None
    if last_ready is not None and last_ready >= shut.max():
        return None
    return shut[shut > last_ready].min() if last_ready is not None else shut.min()


def find_restarts(evidence: Evidence) -> list[Finding]:
    """SRV-001: shutdown lines in the server log, logins refused while starting or stopping, or
    sampler gaps the restart explains: the server restarted, or shut down and is not back.

    A restart is a shutdown the log shows the server back from; a last shutdown with no 'ready to
    accept connections' after it (or the playbook refused because the server is down) is said as
    a shutdown not followed by a start, never counted as a restart. The title says sessions ended
    only when they were seen ending (57P01 at the shutdown, the application's errors, the
    sampler's gaps). Critical when sessions ended, or while the server is still down at the end
    of the evidence (nothing can connect); info otherwise (e.g. a restart before the work began).
    """
    requested = server_events(evidence, "shutdown_requested")
    shutdowns = server_events(evidence, "shutdown_requested", "shut_down")
    starts = server_events(evidence, "ready_to_accept")
    refused = app_events(evidence, "cannot_connect_now")
    shutdown_times = pd.to_datetime(requested["ts"], utc=True)
    gaps = restart_gaps(evidence, shutdown_times)
    down = refusal(evidence, "server_down")  # the playbook itself found it starting, stopping or gone
    if shutdowns.empty and refused.empty and not gaps and not down:
        return []
    ended = server_events(evidence, "admin_terminate")
    ended = ended[[_near(shutdown_times, pd.Timestamp(t), SHUTDOWN_ATTRIBUTION) for t in ended["ts"]]]
    app_lost = app_events(evidence, "admin_shutdown", "cannot_connect_now", *APP_SESSION_LOST)
    sessions_seen_ending = len(ended) + len(app_lost) + len(gaps)
    shut_down_at = _still_down(shutdowns, starts)
    still_down = shut_down_at is not None or bool(down)
    if not shutdowns.empty:
        # Each shutdown the log shows the server back from; the last one may have no start after it.
        stops = requested if not requested.empty else shutdowns[shutdowns["event"] == "shut_down"]
        restarts = max(0, len(stops) - (shut_down_at is not None))
    else:
        # No shutdown logged: the sampler's gaps that closed (or the refusals) are restarts seen from
        # outside, unless the server was found down, where only the closed gaps came back.
        back = [g for g in gaps if g.get("end")]
        restarts = len(back) if down else max(len(gaps), 1)
    postmaster_start = (evidence.settings.get("server") or {}).get("postmaster_start")
    title = _restart_title(restarts, shut_down_at, down, sessions_seen_ending)
    return [
        Finding(
            id="SRV-001",
            category="server",
            severity=Severity.CRITICAL if sessions_seen_ending or still_down else Severity.INFO,
            confidence=CONFIDENCE_RESTART_LOGGED if not shutdowns.empty else CONFIDENCE_RESTART_INFERRED,
            title=title,
            evidence={
                "restarts": restarts,
                "shutdowns": len(shutdowns),
                "ready_again": len(starts),
                "still_down": still_down,
                "shut_down_at": shut_down_at.isoformat() if shut_down_at is not None else None,
                "postmaster_start": postmaster_start,
                "sessions_ended_at_shutdown": len(ended),
                "sampler_gaps": len(gaps),
                "app_errors": len(app_lost),
                "app_refused": len(refused),
                "playbook_refused": down.get("reason") if down else None,
                **first_last(shutdowns if not shutdowns.empty else refused),
            },
            recommendation=(
                (
                    "The server is down: nothing can connect until it is started again. Start it and read "
                    "the server log's last lines before the shutdown for who or what stopped it. "
                    if still_down
                    else ""
                )
                + "A restart ends every session; pools must expect it. Find who restarted the server "
                "(deploys, configuration changes that need a restart, failovers, OOM) and make the pool "
                "validate connections on checkout and retry the unit of work once (psycopg_pool: "
                "`check=ConnectionPool.check_connection`; HikariCP does it by default)."
            ),
        )
    ]


def _restart_title(
    restarts: int, shut_down_at: pd.Timestamp | None, down: dict[str, object] | None, seen_ending: int
) -> str:
    """SRV-001's title: the restarts, a shutdown not followed by a start, and what was seen ending."""
    parts = [f"the server restarted {restarts} time(s)"] if restarts else []
    if shut_down_at is not None:
        parts.append(
            f"{'then it ' if parts else 'the server '}was shut down at {shut_down_at:%H:%M:%S} UTC and not "
            "back by the end of the logs"
        )
    elif down:
        parts.append(
            f"{'now it ' if parts else 'the server '}is down: the playbook could not connect "
            f"({str(down.get('reason') or 'refused')[:120]})"
        )
    said = ", ".join(parts)
    if seen_ending:
        return f"{said}: every open session ended at once"
    if shut_down_at is not None or down:
        return f"{said}; no session was seen ending, but nothing can connect while it is down"
    return f"{said}; no session was seen ending then"


def find_crashes(evidence: Evidence) -> list[Finding]:
    """SRV-002: a backend crashed and the postmaster reinitialized (CRASH_EVENTS), or the app saw
    57P02. Critical: every session on the server ended."""
    crashes = server_events(evidence, *CRASH_EVENTS)
    app = app_events(evidence, "crash_shutdown")
    if crashes.empty and app.empty:
        return []
    kills = server_events(evidence, "backend_crash")
    messages = [str(m)[:200] for m in kills.get("message", pd.Series(dtype=str)).head(3)]
    return [
        Finding(
            id="SRV-002",
            category="server",
            severity=Severity.CRITICAL,
            confidence=CONFIDENCE_CRASH_LOGGED if not crashes.empty else CONFIDENCE_CRASH_APP_ONLY,
            title=(
                f"a server process crashed {max(len(kills), 1)} time(s) and the postmaster ended every "
                "session to reinitialize"
            ),
            evidence={
                "events": top_values(crashes, "event", 10),
                "app_errors": len(app),
                "crashes": messages,
                **first_last(crashes if not crashes.empty else app),
            },
            recommendation=(
                "One backend dying (signal 9 from the OOM killer, a segfault in an extension) takes every "
                "session down with it. Read the crash line for the signal and the process; with signal 9 "
                "check the kernel log for the OOM killer and lower work_mem / max_connections or add memory."
            ),
        )
    ]


def find_admin_terminations(evidence: Evidence) -> list[Finding]:
    """SRV-003: 57P01 terminations (server log, app log, or the sampler's own gaps) that are not part
    of a shutdown (within SHUTDOWN_ATTRIBUTION of one): pg_terminate_backend by a person or a reaper.
    Critical from ADMIN_CRITICAL_COUNT."""
    terminated = server_events(evidence, "admin_terminate")
    shutdowns = server_events(evidence, "shutdown_requested")
    stamps = pd.to_datetime(shutdowns["ts"], utc=True)

    def during_shutdown(ts: pd.Timestamp) -> bool:
        return bool(((ts - stamps).abs() <= SHUTDOWN_ATTRIBUTION).any())

    if not terminated.empty and not shutdowns.empty:
        terminated = terminated[
            ~pd.to_datetime(terminated["ts"], utc=True).apply(during_shutdown).astype(bool)
        ]
    app = app_events(evidence, "admin_shutdown") if shutdowns.empty else app_events(evidence).iloc[0:0]
    gaps = [
        g
        for g in evidence.gaps
        if "administrator command" in (g.get("error") or "") and not during_shutdown(pd.Timestamp(g["start"]))
    ]
    count = max(len(terminated), len(app), len(gaps))
    if not count:
        return []
    return [
        Finding(
            id="SRV-003",
            category="server",
            severity=Severity.CRITICAL if count >= ADMIN_CRITICAL_COUNT else Severity.WARNING,
            confidence=CONFIDENCE_ADMIN_LOGGED if not terminated.empty else CONFIDENCE_ADMIN_INFERRED,
            title=(
                f"{count} session(s) terminated by an administrator or a reaper (pg_terminate_backend, 57P01)"
            ),
            evidence={
                "server_log_events": len(terminated),
                "app_errors": len(app),
                "sampler_gaps": len(gaps),
                "users": top_values(terminated, "user"),
                "applications": top_values(terminated, "application"),
                **first_last(terminated if not terminated.empty else app),
            },
            recommendation=(
                "Something calls pg_terminate_backend on these sessions: an idle-connection reaper cron "
                "job, an ops script, a failover agent. Find it (pg_stat_activity rows running "
                "pg_terminate_backend, "
                "cron on the database hosts) and exempt pooled sessions, or let the pool retire them first: "
                "a pool max_idle / max_lifetime below the reaper's age threshold, with check-on-checkout."
            ),
        )
    ]


def find_recent_start(evidence: Evidence) -> list[Finding]:
    """SRV-004 (info): the postmaster started within RECENT_START before the window and no restart
    was read in the logs (SRV-001 tells those): context for the reader, not a cause."""
    postmaster_start = (evidence.settings.get("server") or {}).get("postmaster_start")
    window_start = _window_start(evidence)
    if not postmaster_start or not window_start:
        return []
    started = datetime.fromisoformat(postmaster_start)
    age = window_start - started
    if age > RECENT_START or age < timedelta(0) or not server_events(evidence, "shutdown_requested").empty:
        return []
    minutes = age.total_seconds() / 60
    return [
        Finding(
            id="SRV-004",
            category="server",
            severity=Severity.INFO,
            confidence=CONFIDENCE_RECENT_START,
            title=(
                f"the server started {minutes:.0f} min before this window"
                if minutes >= 1
                else f"the server started {age.total_seconds():.0f} s before this window"
            ),
            evidence={
                "postmaster_start": postmaster_start,
                "seconds_before_window": round(age.total_seconds()),
            },
            recommendation=(
                "If sessions closed around that time, the (re)start ended them: rerun with --since "
                "covering it and the server log to see why it restarted."
            ),
        )
    ]


def diagnose(evidence: Evidence) -> list[Finding]:
    """Every server finding (SRV-001..004) of this evidence."""
    return (
        find_restarts(evidence)
        + find_crashes(evidence)
        + find_admin_terminations(evidence)
        + find_recent_start(evidence)
    )

"""The diagnosis as pure functions of evidence recorded on real lab incidents (no server needed)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from playbook.diagnose import diagnose_all, rank_root_causes
from playbook.diagnose.findings import Finding, Severity
from playbook.evidence import Evidence
from playbook.evidence.frames import ACTIVITY_SAMPLES, ACTIVITY_TICKS, APP_LOG_EVENTS, SERVER_LOG_EVENTS

RECORDED = Path(__file__).parent / "data" / "evidence"
EXPECTED = {
    "leak": "leak",
    "idle_session_timeout": "timeout",
    "idle_in_transaction_timeout": "leak",  # the application holds the transaction; the timeout is how
    "too_many_connections": "pool_config",
    "reset_path": "network",
    "nat_drop": "network",
    "admin_terminate": "server",
    "server_restart": "server",
    "backend_crash": "server",
    "pgbouncer_idle_timeout": "timeout",
    "pgbouncer_saturation": "pool_config",
}


def recorded(name: str) -> Evidence:
    return Evidence.load(RECORDED / name)


def ids(findings: list[Finding]) -> set[str]:
    return {f.id for f in findings}


@pytest.mark.parametrize(("scenario", "category"), sorted(EXPECTED.items()))
def test_the_top_cause_of_each_recorded_incident(scenario: str, category: str) -> None:
    findings = diagnose_all(recorded(scenario))
    causes = rank_root_causes(findings)
    assert causes and causes[0]["category"] == category, causes
    for finding in findings:
        assert finding.recommendation.strip() and finding.evidence, finding.id


@pytest.mark.parametrize("scenario", ["healthy", "nat_drop_keepalive"])
def test_a_healthy_service_gets_no_invented_cause(scenario: str) -> None:
    """Also behind a NAT that drops idle flows, when keepalives keep them alive."""
    findings = diagnose_all(recorded(scenario))
    assert rank_root_causes(findings) == []
    assert all(f.severity is Severity.INFO for f in findings)


def test_each_incident_is_named_by_its_own_finding() -> None:
    assert "TMO-001" in ids(diagnose_all(recorded("idle_session_timeout")))
    assert "LEAK-005" in ids(diagnose_all(recorded("idle_in_transaction_timeout")))
    assert "POOL-002" in ids(diagnose_all(recorded("too_many_connections")))
    assert "NET-001" in ids(diagnose_all(recorded("reset_path")))
    assert "NET-002" in ids(diagnose_all(recorded("nat_drop")))
    assert "SRV-003" in ids(diagnose_all(recorded("admin_terminate")))
    assert "SRV-001" in ids(diagnose_all(recorded("server_restart")))
    assert "SRV-002" in ids(diagnose_all(recorded("backend_crash")))
    leak = ids(diagnose_all(recorded("leak")))
    assert leak & {"LEAK-001", "LEAK-002", "LEAK-004"}


def test_a_restart_is_not_also_blamed_on_a_reaper_or_the_network() -> None:
    """A fast shutdown sends 57P01 to every session: those lines belong to the restart."""
    found = ids(diagnose_all(recorded("server_restart")))
    assert "SRV-003" not in found
    assert "NET-002" not in found


def test_a_crash_is_not_blamed_on_the_network() -> None:
    found = diagnose_all(recorded("backend_crash"))
    assert not [f for f in found if f.category == "network" and f.severity is not Severity.INFO]


def test_the_same_app_errors_change_cause_with_the_server_log() -> None:
    """App-side 'connection closed' is network only while the server logged no reason of its own."""
    evidence = recorded("nat_drop")
    assert rank_root_causes(diagnose_all(evidence))[0]["category"] == "network"
    with_reaper = copy.deepcopy(evidence)
    events = with_reaper.frame("server_log_events")
    lost = with_reaper.frame("app_log_events")
    reaped = pd.DataFrame(
        {
            "ts": pd.to_datetime(lost["ts"], utc=True),
            "event": "admin_terminate",
            "category": "server",
            "level": "FATAL",
            "sqlstate": "57P01",
            "user": "lab_app",
            "database": "lab",
            "application": "ledger",
            "host": "127.0.0.1",
            "pid": 1,
            "message": "terminating connection due to administrator command",
        }
    )
    for column in ("event", "category", "level", "sqlstate", "user", "database", "application", "host"):
        events[column] = events[column].astype(str)
    with_reaper.frames["server_log_events"] = pd.concat([events, reaped], ignore_index=True)
    causes = rank_root_causes(diagnose_all(with_reaper))
    assert causes[0]["category"] == "server"
    assert "NET-002" not in ids(diagnose_all(with_reaper))


def test_without_a_server_log_the_network_verdict_is_less_sure() -> None:
    evidence = recorded("nat_drop")
    sure = next(f for f in diagnose_all(evidence) if f.id == "NET-002")
    blind = copy.deepcopy(evidence)
    blind.frames.pop("server_log_events")
    blind.manifest["collected"] = [c for c in blind.manifest["collected"] if c != "server_log"]
    unsure = next(f for f in diagnose_all(blind) if f.id == "NET-002")
    assert unsure.confidence < sure.confidence
    assert "--server-log" in unsure.title


def test_the_timeout_fix_keeps_the_pool_inside_the_server_limit() -> None:
    evidence = recorded("idle_session_timeout")
    finding = next(f for f in diagnose_all(evidence) if f.id == "TMO-001")
    timeout_s = finding.evidence["setting_s"]
    assert timeout_s == 2
    assert "ConnectionPool(" in finding.recommendation  # the app log revealed psycopg
    idle = float(re.search(r"max_idle=([\d.]+)", finding.recommendation).group(1))  # type: ignore[union-attr]
    life = float(re.search(r"max_lifetime=([\d.]+)", finding.recommendation).group(1))  # type: ignore[union-attr]
    assert 0 < idle < timeout_s and 0 < life < timeout_s
    assert "ALTER ROLE" in finding.recommendation


def test_the_leak_trend_has_a_positive_slope() -> None:
    growth = [f for f in diagnose_all(recorded("leak")) if f.id == "LEAK-002"]
    assert growth and growth[0].evidence["slope_per_min"] > 0
    assert growth[0].evidence["end"] > growth[0].evidence["start"]


def test_refusals_name_the_usable_limit() -> None:
    finding = next(f for f in diagnose_all(recorded("too_many_connections")) if f.id == "POOL-002")
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence["usable_connections"] == 20 - 3 - 4


def test_finding_ids_are_stable_and_match_their_category() -> None:
    every = [f for name in [*EXPECTED, "healthy"] for f in diagnose_all(recorded(name))]
    prefixes = {
        "leak": "LEAK-",
        "timeout": "TMO-",
        "network": "NET-",
        "pool_config": "POOL-",
        "server": "SRV-",
    }
    for finding in every:
        # PgBouncer's findings carry the layer's prefix, whatever the category of the close reason.
        assert finding.id.startswith((prefixes[finding.category], "BNC-"))
    with pytest.raises(ValueError):
        Finding(id="NET-001", category="leak", severity=Severity.INFO, title="x", recommendation="y")
    Finding(id="BNC-001", category="timeout", severity=Severity.INFO, title="x", recommendation="y")


def test_app_focus_limits_the_per_application_findings() -> None:
    """`playbook run --app NAME`: leak findings about other applications stay out."""
    evidence = recorded("leak")
    evidence.manifest["app"] = "billing"
    assert {"LEAK-001", "LEAK-002"} <= ids(diagnose_all(evidence))
    evidence.manifest["app"] = "some-other-service"
    focused = ids(diagnose_all(evidence))
    assert not focused & {"LEAK-001", "LEAK-002"}


def with_timeout(
    name: str, setting: str, server_wide: str, overrides: list[tuple[str, str, str]]
) -> Evidence:
    """A recorded incident with `setting` as the settings collector would read it: `server_wide` in
    pg_settings (in ms, '0' = disabled) and ALTER ROLE/DATABASE values (role, database, value) in
    pg_db_role_setting, the other settings untouched."""
    evidence = copy.deepcopy(recorded(name))
    settings = evidence.snapshots["settings"]
    settings["settings"][setting] = {**settings["settings"][setting], "setting": server_wide, "unit": "ms"}
    settings["overrides"] = [
        {"role": role, "database": database, "setconfig": [f"{setting}={value}"]}
        for role, database, value in overrides
    ]
    return evidence


def sized_idle_s(recommendation: str) -> float:
    # the idle limit the psycopg_pool block is sized under (its max_idle is the shrink period)
    return float(re.search(r"max_idle=[\d.]+,.*?under ([\d.]+) s", recommendation).group(1))  # type: ignore[union-attr]


def test_a_role_level_idle_session_timeout_is_the_limit_named_and_sized_against() -> None:
    """ALTER ROLE lab_app SET idle_session_timeout = '4s' under a server-wide 60 s: the killed
    sessions are lab_app's, so 4 s is the limit the title names and the pool is sized against
    (another role's value and the server-wide one do not apply to them)."""
    evidence = with_timeout(
        "idle_session_timeout",
        "idle_session_timeout",
        "60000",
        [("lab_app", "", "4s"), ("batch", "", "10min")],
    )
    finding = next(f for f in diagnose_all(evidence) if f.id == "TMO-001")
    assert "idle_session_timeout = 4 s, set for role lab_app" in finding.title, finding.title
    assert finding.evidence["limit_s"] == 4 and finding.evidence["limit_scope"] == "set for role lab_app"
    assert finding.evidence["setting_s"] == 60  # the server-wide value stays what it is
    assert sized_idle_s(finding.recommendation) == 2  # half of 4 s
    assert "(4 s, set for role lab_app)" in finding.recommendation


def test_a_role_level_value_is_found_with_the_server_wide_one_disabled() -> None:
    """The field case: server-wide 0, the role's 4 s (on a database-wide override the role's wins)."""
    evidence = with_timeout(
        "idle_session_timeout", "idle_session_timeout", "0", [("", "lab", "30s"), ("lab_app", "", "4s")]
    )
    finding = next(f for f in diagnose_all(evidence) if f.id == "TMO-001")
    assert finding.evidence["limit_s"] == 4 and finding.evidence["setting_s"] is None
    assert sized_idle_s(finding.recommendation) == 2


def test_an_unknown_idle_session_limit_is_said_not_invented() -> None:
    """Kills logged but no value anywhere in the evidence (a SET in the session): no number is made
    up to size the pool against; the fix says how to read the value in force."""
    evidence = with_timeout("idle_session_timeout", "idle_session_timeout", "0", [])
    finding = next(f for f in diagnose_all(evidence) if f.id == "TMO-001")
    assert "not in the evidence" in finding.title
    assert finding.evidence["limit_s"] is None
    assert "max_idle" not in finding.recommendation and "60 s" not in finding.recommendation
    assert "SHOW idle_session_timeout" in finding.recommendation


def test_a_role_level_transaction_timeout_is_named_and_statements_are_capped_inside_it() -> None:
    """The recorded incident: ALTER ROLE lab_app SET transaction_timeout = '1s', server-wide 0."""
    finding = next(f for f in diagnose_all(recorded("transaction_timeout")) if f.id == "TMO-003")
    assert "transaction_timeout = 1 s, set for role lab_app" in finding.title, finding.title
    assert finding.evidence["limit_s"] == 1
    assert "ALTER ROLE lab_app SET statement_timeout = '500ms';" in finding.recommendation


def test_a_role_level_idle_in_transaction_timeout_is_carried_and_kept_as_the_guard_rail() -> None:
    """ALTER ROLE lab_app SET idle_in_transaction_session_timeout = '3s', server-wide 0: the
    evidence carries 3 s, and the advice keeps it rather than proposing a tenfold raise beside
    "raising it only lets the held transactions block vacuum"."""
    setting = "idle_in_transaction_session_timeout"
    evidence = with_timeout("idle_in_transaction_timeout", setting, "0", [("lab_app", "", "3s")])
    finding = next(f for f in diagnose_all(evidence) if f.id == "LEAK-005")
    assert finding.evidence[f"{setting}_s"] == 3
    assert finding.evidence[f"{setting}_scope"] == "set for role lab_app"
    assert f"{setting} = 3 s, set for role lab_app" in finding.title
    assert f"SET {setting}" not in finding.recommendation  # no new value proposed
    # The code path comes first, the guard rail after it.
    assert finding.recommendation.index("Fix that path") < finding.recommendation.index("guard rail")


def test_an_unknown_idle_in_transaction_limit_gets_no_suggested_value() -> None:
    setting = "idle_in_transaction_session_timeout"
    evidence = with_timeout("idle_in_transaction_timeout", setting, "0", [])
    finding = next(f for f in diagnose_all(evidence) if f.id == "LEAK-005")
    assert finding.evidence[f"{setting}_s"] is None
    assert f"SET {setting}" not in finding.recommendation
    assert f"SHOW {setting}" in finding.recommendation


FIELD_DAY = pd.Timestamp("2026-11-20 09:34:00", tz="UTC")


def pool_evidence(states: dict[float, str], timeouts: list[float], connections: int = 7) -> Evidence:
    """Two applications' pools (4 + 3 connections of the same role) sampled every 0.5 s as the
    activity collector records them, `states` saying from which second (after 09:34:00) every
    connection is in which state, and psycopg_pool's PoolTimeouts at `timeouts` (seconds) in the
    application log. max_connections = 12 with 2 + 2 reserved, as on the field test's server."""
    rows, ticks = [], []
    for tick in np.arange(10.0, 25.0, 0.5):
        at = FIELD_DAY + pd.Timedelta(seconds=float(tick))
        since = [s for s in states if s <= tick]
        state = states[max(since)] if since else None
        ticks.append({"ts": at, "server_ts": at, "ok": True, "backends": connections if state else 0})
        for n in range(connections if state else 0):
            rows.append(
                {
                    "tick_ts": at,
                    "ts": at,
                    "pid": 4000 + n,
                    "state": state,
                    "application_name": "orders" if n < 4 else "reports",
                    "usename": "app",
                    "datname": "shop",
                    "client_addr": "10.0.0.5/32",
                    "backend_start": FIELD_DAY + pd.Timedelta(seconds=13.8),
                    "wait_event_type": "Timeout" if state == "active" else "Client",
                    "wait_event": "PgSleep" if state == "active" else "ClientRead",
                    "state_age_s": 0.5,
                    "conn_age_s": float(tick) - 13.8,
                }
            )
    samples = pd.DataFrame(rows).reindex(columns=ACTIVITY_SAMPLES.column_names)
    errors = pd.DataFrame(
        {
            "ts": [FIELD_DAY + pd.Timedelta(seconds=t) for t in timeouts],
            "kind": "pool_timeout",
            "stack": "psycopg",
            "line_no": range(1, len(timeouts) + 1),
            "file": "app.log",
            "text": "psycopg_pool.PoolTimeout: couldn't get a connection after 3.00 sec",
        }
    )
    return Evidence(
        manifest={
            "window": {
                "start": str(FIELD_DAY + pd.Timedelta(seconds=10)),
                "end": str(FIELD_DAY + pd.Timedelta(seconds=25)),
            },
            "interval_s": 0.5,
            "collected": ["settings", "activity", "app_log"],
        },
        frames={
            ACTIVITY_SAMPLES.name: samples.astype(ACTIVITY_SAMPLES.dtypes()),
            ACTIVITY_TICKS.name: pd.DataFrame(ticks).reindex(columns=ACTIVITY_TICKS.column_names).fillna(0),
            APP_LOG_EVENTS.name: errors,
        },
        snapshots={
            "settings": {
                "settings": {
                    name: {"setting": value, "unit": None}
                    for name, value in (
                        ("max_connections", "12"),
                        ("superuser_reserved_connections", "2"),
                        ("reserved_connections", "2"),
                    )
                }
            },
            "app_log_summary": {"primary_stack": "psycopg"},
        },
    )


def test_a_pool_saturated_by_busy_connections_is_too_small_not_leaking() -> None:
    """The field case: every connection running pg_sleep(3) from 09:34:14, two PoolTimeouts at
    16.839, then the load passed and the connections sat idle to the end of the window. What the
    connections did before the timeouts decides, not the last tick nor the whole window."""
    evidence = pool_evidence({13.8: "active", 16.9: "idle"}, [16.839, 16.839])
    found = {f.id: f for f in diagnose_all(evidence)}
    assert "LEAK-004" not in found, found["LEAK-004"].title
    assert "POOL-005" in found
    assert found["POOL-005"].evidence["active_before_waits"] == 7
    assert found["POOL-005"].evidence["idle_before_waits"] == 0


def test_a_pool_held_idle_in_transaction_while_requests_time_out_leaks_even_if_busy_later() -> None:
    """Connections checked out and left idle in transaction while requests time out, then busy
    at the end of the window: the held connections at the timeouts are the cause (LEAK-004)."""
    evidence = pool_evidence({11.0: "idle in transaction", 20.0: "active"}, [15.2, 16.3, 17.5])
    found = {f.id: f for f in diagnose_all(evidence)}
    assert "LEAK-004" in found
    assert found["LEAK-004"].severity is Severity.CRITICAL
    assert found["LEAK-004"].evidence["idle_before_timeouts"] == 7
    assert found["LEAK-004"].evidence["active_before_timeouts"] == 0
    assert "POOL-005" not in found


def test_a_timeout_before_the_first_tick_reads_the_first_tick_after_it() -> None:
    """Sampling began after the first timeouts (as in the recorded pool_held_not_used folder)."""
    evidence = pool_evidence({10.0: "idle"}, [9.9])
    assert "LEAK-004" in ids(diagnose_all(evidence))


def shut_down_and_not_back(*, playbook_refused: bool) -> Evidence:
    """The server log of a fast shutdown with no start after it, nothing else in the window: no
    session was open (no 57P01 line, no application error), as in the field test; the run either
    read the logs alone or was refused by the server as the playbook's login found it down."""
    at = pd.Timestamp("2026-11-20 10:12:03.250", tz="UTC")
    lines = [
        ("shutdown_requested", "LOG", "received fast shutdown request", 0.0),
        ("shut_down", "LOG", "database system is shut down", 0.04),
    ]
    events = pd.DataFrame(
        {
            "ts": [at + pd.Timedelta(seconds=s) for *_, s in lines],
            "event": [e for e, *_ in lines],
            "category": "server",
            "level": [level for _, level, *_ in lines],
            "sqlstate": "00000",
            "user": "",
            "database": "",
            "application": "",
            "host": "",
            "pid": 812,
            "message": [m for _, _, m, _ in lines],
            "detail": "",
        }
    )
    live = (
        {"connected": False, "reason": "connection refused", "sqlstate": None, "cause": "server_down"}
        if playbook_refused
        else {
            "connected": False,
            "reason": "offline: a post-mortem from the logs given, no connection was tried",
        }
    )
    return Evidence(
        manifest={"collected": ["server_log"], "live": live, "gaps": []},
        frames={SERVER_LOG_EVENTS.name: events.astype(SERVER_LOG_EVENTS.dtypes())},
    )


@pytest.mark.parametrize("playbook_refused", [True, False])
def test_a_server_shut_down_and_not_back_is_said_so_not_called_a_restart(playbook_refused: bool) -> None:
    """The field case: shut down, still down, nothing was open. Critical (nothing can connect), but
    the title says what happened: a shutdown at 10:12:03 with no start after it, and 0 sessions
    ended is not "every open session ended at once"."""
    finding = next(
        f
        for f in diagnose_all(shut_down_and_not_back(playbook_refused=playbook_refused))
        if f.id == "SRV-001"
    )
    assert finding.severity is Severity.CRITICAL
    assert "shut down at 10:12:03 UTC and not back by the end of the logs" in finding.title, finding.title
    assert "restarted" not in finding.title
    assert "every open session ended" not in finding.title
    assert "no session was seen ending" in finding.title
    assert finding.evidence["restarts"] == 0 and finding.evidence["still_down"] is True
    assert finding.evidence["sessions_ended_at_shutdown"] == 0 and finding.evidence["app_errors"] == 0
    assert finding.recommendation.startswith("The server is down")


def test_restarts_and_a_last_shutdown_are_counted_apart() -> None:
    """The recorded incident restarts the server twice and its logs end on a third shutdown."""
    finding = next(f for f in diagnose_all(recorded("server_restart")) if f.id == "SRV-001")
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence["restarts"] == 2 == finding.evidence["ready_again"]
    assert finding.evidence["still_down"] is True
    assert "restarted 2 time(s), then it was shut down at 05:38:39 UTC" in finding.title
    assert finding.evidence["sessions_ended_at_shutdown"] > 0  # so "every open session ended" is true


def test_a_restart_the_server_came_back_from_is_not_called_down() -> None:
    finding = next(f for f in diagnose_all(recorded("too_many_connections")) if f.id == "SRV-001")
    assert finding.severity is Severity.INFO
    assert finding.evidence["still_down"] is False and finding.evidence["restarts"] == 1
    assert finding.title == "the server restarted 1 time(s); no session was seen ending then"

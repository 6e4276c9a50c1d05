"""The pooler diagnosis from raw materials recorded on real lab runs (PgBouncer 1.18, psycopg_pool):
the logs go through the real readers, the console frames are the sampler's own parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from playbook.collect.applog import read_app_logs
from playbook.collect.pgbouncer_log import read_pgbouncer_logs
from playbook.diagnose import pgbouncer_findings
from playbook.diagnose.findings import Finding, Severity
from playbook.evidence import Evidence
from playbook.evidence.contract import FRAMES

RECORDED = Path(__file__).parent / "data" / "pgbouncer"
EXPECTED = {
    "pgbouncer_idle_timeout": ("BNC-001", "timeout"),
    "pgbouncer_saturation": ("BNC-004", "pool_config"),
}


def recorded(name: str) -> Evidence:
    folder = RECORDED / name
    evidence = Evidence(
        manifest={},
        frames={p.stem: pd.read_parquet(p) for p in folder.glob("*.parquet")},
        snapshots={p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")},
    )
    evidence.frames["pgbouncer_log_events"] = read_pgbouncer_logs([folder / "pgbouncer.log"]).events
    app_log = read_app_logs([folder / "app.log"])
    evidence.frames["app_log_events"] = app_log.events
    evidence.snapshots["app_log_summary"] = {"primary_stack": app_log.primary_stack}
    return evidence


def worst(findings: list[Finding]) -> Finding:
    return max(findings, key=lambda f: (f.severity.rank, f.confidence))


@pytest.mark.parametrize(("scenario", "expected"), sorted(EXPECTED.items()))
def test_each_recorded_incident_is_named_by_its_finding(scenario: str, expected: tuple[str, str]) -> None:
    findings = pgbouncer_findings.diagnose(recorded(scenario))
    fid, category = expected
    top = worst(findings)
    assert top.id == fid and top.category == category and top.severity is Severity.CRITICAL, findings
    for finding in findings:
        assert finding.id.startswith("BNC-") and finding.recommendation.strip() and finding.evidence


def test_the_timeout_finding_names_the_setting_and_the_client_fix() -> None:
    (finding,) = [
        f for f in pgbouncer_findings.diagnose(recorded("pgbouncer_idle_timeout")) if f.id == "BNC-001"
    ]
    assert finding.evidence["client_idle_timeout"] == 2
    assert finding.evidence["setting_source"] == "SHOW CONFIG"
    assert finding.evidence["app_errors"] > 0
    assert "max_idle" in finding.recommendation and "client_idle_timeout = 0" in finding.recommendation


def test_saturation_is_seen_in_the_console_too() -> None:
    findings = {f.id: f for f in pgbouncer_findings.diagnose(recorded("pgbouncer_saturation"))}
    assert findings["BNC-010"].evidence["peak_cl_waiting"] > 0
    assert "default_pool_size" in findings["BNC-004"].recommendation


RECYCLING_ONLY = """\
2024-05-01 12:00:00.000 UTC [9] LOG S-0x1: app/app@10.0.1.5:5432 closing because: server idle timeout (age=601s)
2024-05-01 12:10:00.000 UTC [9] LOG S-0x2: app/app@10.0.1.5:5432 closing because: server lifetime over (age=3601s)
2024-05-01 12:20:00.000 UTC [9] LOG S-0x3: app/app@10.0.1.5:5432 closing because: obsolete connection (age=30s)
2024-05-01 12:30:00.000 UTC [9] LOG S-0x4: app/app@10.0.1.5:5432 closing because: evicted (age=12s)
2024-05-01 12:31:00.000 UTC [9] LOG C-0x5: app/app@10.0.3.7:5555 closing because: client close request (age=900s)
"""  # noqa: E501


def test_recycling_alone_is_never_an_incident(tmp_path: Path) -> None:
    path = tmp_path / "pgbouncer.log"
    path.write_text(RECYCLING_ONLY * 20)
    evidence = Evidence(frames={"pgbouncer_log_events": read_pgbouncer_logs([path]).events})
    findings = pgbouncer_findings.diagnose(evidence)
    assert [f.id for f in findings] == ["BNC-090"]
    assert findings[0].severity is Severity.INFO


def test_no_pooler_evidence_no_finding() -> None:
    assert pgbouncer_findings.diagnose(Evidence()) == []


def test_server_trouble_absorbed_by_the_pooler_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "pgbouncer.log"
    path.write_text(
        "2024-05-01 12:00:00.000 UTC [9] LOG S-0x1: app/app@10.0.1.5:5432 closing because: server conn "
        "crashed? (age=61s)\n"
    )
    evidence = Evidence(
        frames={"pgbouncer_log_events": read_pgbouncer_logs([path]).events},
        snapshots={"settings": {"settings": {"idle_session_timeout": {"setting": "60000", "unit": "ms"}}}},
    )
    (finding,) = pgbouncer_findings.diagnose(evidence)
    assert finding.id == "BNC-030" and finding.severity is Severity.WARNING and finding.category == "server"
    assert "server_idle_timeout = 30" in finding.recommendation


# -- every finding id from the evidence a real incident leaves ----------------------------------------
# The log lines below are PgBouncer's own wording, checked against pgbouncer/pgbouncer src/ (objects.c
# builds "closing because: %s (age=%us)" for disconnect_client/disconnect_server; proto.c's
# send_pooler_error logs "pooler error: %s" at WARNING right after a notified client close; a server
# reason reaches its linked client through unlink_server). The release that first prints a wording is
# noted where it is not in every release from 1.9 on.
T0 = "2024-05-01 12:00:00"
APP_SERVER = "app/app_user@10.0.1.5:5432"  # a server connection's prefix
NO_LOGIN = "(nodb)/(nouser)"  # util.c: a client refused before it has a pool or a user


def client(n: int) -> str:
    return f"C-0x55d4b2a1{n:04x}: app/app_user@10.0.3.7:{51000 + n}"


def server(n: int) -> str:
    return f"S-0x55d4b2a3{n:04x}: {APP_SERVER}"


def at(second: int, level: str, message: str) -> str:
    """One line as PgBouncer's own log file prints it (libusual log_generic, UTC host)."""
    return f"2024-05-01 12:{second // 60:02d}:{second % 60:02d}.000 UTC [4321] {level} {message}\n"


def closes(side: str, reason: str, age: int, second: int, notify: bool = True) -> str:
    """A close as PgBouncer logs it; a notified client close is followed by its pooler error."""
    text = at(second, "LOG", f"{side} closing because: {reason} (age={age}s)")
    if notify and side.startswith("C-"):
        text += at(second, "WARNING", f"{side} pooler error: {reason}")
    return text


def linked(n: int, reason: str, age: int, second: int) -> str:
    """A server connection closed by a janitor timeout while a client was linked to it (janitor.c
    disconnect_server -> unlink_server -> disconnect_client with the same reason, notified)."""
    return closes(server(n), reason, age, second) + closes(client(n), reason, age + 5, second)


def pgbouncer_config(version: str = "1.23.1", **settings: str) -> dict[str, object]:
    """The pgbouncer_config snapshot: SHOW VERSION and SHOW CONFIG (values are text, as the console
    returns them)."""
    return {"version": version, "settings": {"pool_mode": "transaction", **settings}}


def console(name: str, rows: list[dict[str, object]]) -> pd.DataFrame:
    """A frame with every column of its schema (SHOW POOLS/CLIENTS/DATABASES as the sampler leaves
    them, missing columns empty)."""
    schema = FRAMES[name]
    frame = pd.DataFrame(rows).reindex(columns=schema.column_names)
    for column, dtype in schema.dtypes().items():
        is_time = dtype.startswith("datetime64")
        frame[column] = pd.to_datetime(frame[column], utc=True) if is_time else frame[column].astype(dtype)
    return frame


def pooler_evidence(tmp_path: Path, log: str, **snapshots: object) -> Evidence:
    path = tmp_path / "pgbouncer.log"
    path.write_text(log)
    return Evidence(
        frames={"pgbouncer_log_events": read_pgbouncer_logs([path]).events}, snapshots=dict(snapshots)
    )


def one(findings: list[Finding], fid: str) -> Finding:
    found = [f for f in findings if f.id == fid]
    assert len(found) == 1, findings
    return found[0]


def ids(findings: list[Finding]) -> set[str]:
    return {f.id for f in findings}


def test_idle_transaction_timeout_is_a_leak_the_application_felt(tmp_path: Path) -> None:
    # janitor.c: disconnect_server(server, true, "idle transaction timeout"), every release 1.9+.
    log = "".join(linked(n, "idle transaction timeout", 95, 10 * n) for n in range(1, 4))
    evidence = pooler_evidence(
        tmp_path, log, pgbouncer_config=pgbouncer_config(idle_transaction_timeout="30")
    )
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-002")
    assert finding.category == "leak" and finding.severity is Severity.CRITICAL
    assert finding.evidence["closed"]["count"] == 3  # the client closes, not their pooler errors too
    assert finding.evidence["by_side"] == {"server": 3, "client": 3}
    assert finding.evidence["idle_transaction_timeout"] == 30
    assert finding.evidence["setting_source"] == "SHOW CONFIG"
    assert "idle_transaction_timeout = <seconds>" in finding.recommendation
    assert "(30 s now)" in finding.recommendation


def test_no_idle_transaction_finding_without_its_reason(tmp_path: Path) -> None:
    log = "".join(closes(client(n), "client close request", 300, n, notify=False) for n in range(1, 6))
    evidence = pooler_evidence(
        tmp_path, log, pgbouncer_config=pgbouncer_config(idle_transaction_timeout="30")
    )
    assert not ids(pgbouncer_findings.diagnose(evidence)) & {"BNC-002", "BNC-003", "BNC-005"}


def test_query_timeout_ends_the_client_connection_in_both_wordings(tmp_path: Path) -> None:
    # janitor.c (1.9+): "query timeout" for a query running on a server connection (passed on to its
    # client), "query_timeout" for a client still queued for one.
    log = linked(1, "query timeout", 70, 5) + closes(client(2), "query_timeout", 61, 9)
    evidence = pooler_evidence(tmp_path, log, pgbouncer_config=pgbouncer_config(query_timeout="60"))
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-003")
    assert finding.category == "timeout" and finding.severity is Severity.CRITICAL
    assert finding.evidence["closed"]["count"] == 2
    assert finding.evidence["query_timeout"] == 60
    assert "statement_timeout" in finding.recommendation and "in place of 60 s now" in finding.recommendation


def test_transaction_timeout_of_pgbouncer_1_25(tmp_path: Path) -> None:
    # janitor.c: disconnect_server(server, true, "transaction timeout"), first in 1.25.0.
    log = at(0, "LOG", "process up: PgBouncer 1.25.1, libevent 2.1.12-stable (epoll), adns: c-ares 1.27.0, "
             "tls: OpenSSL 3.0.13 30 Jan 2024")  # fmt: skip
    log += linked(1, "transaction timeout", 301, 310) + linked(2, "transaction timeout", 305, 320)
    evidence = pooler_evidence(
        tmp_path, log, pgbouncer_config=pgbouncer_config("1.25.1", transaction_timeout="300")
    )
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-005")
    assert finding.category == "timeout" and finding.severity is Severity.CRITICAL
    assert finding.evidence["closed"]["count"] == 2 and finding.evidence["transaction_timeout"] == 300
    assert "transaction_timeout = <seconds>" in finding.recommendation
    assert "300 s now" in finding.recommendation
    assert "BNC-002" not in ids(
        pgbouncer_findings.diagnose(evidence)
    )  # "transaction timeout" is not the idle one


def test_client_login_timeout_drops_clients_that_never_logged_in(tmp_path: Path) -> None:
    # janitor.c cleanup_client_logins: "client_login_timeout" (1.9+), notified; a probe that sends
    # nothing before the timeout has no pool nor user yet.
    log = "".join(
        closes(f"C-0x55d4b2a5{n:04x}: {NO_LOGIN}@10.0.9.9:{40000 + n}", "client_login_timeout", 61, 60 + n)
        for n in range(4)
    )
    evidence = pooler_evidence(tmp_path, log)  # no console: the default applies
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-006")
    assert finding.category == "network" and finding.severity is Severity.CRITICAL
    assert finding.evidence["closed"]["count"] == 4
    assert finding.evidence["client_login_timeout"] == 60
    assert finding.evidence["setting_source"] == "PgBouncer's default (console not read)"
    assert "client_login_timeout" in finding.recommendation and "health checks" in finding.recommendation


def test_client_login_timeout_while_the_server_is_down_is_server_trouble(tmp_path: Path) -> None:
    # janitor.c: "client_login_timeout (server down)" (1.9+): the client waited for the pool's first
    # server login, which never succeeded. Not a slow client: BNC-030, not BNC-006.
    log = closes(client(1), "client_login_timeout (server down)", 60, 60)
    findings = pgbouncer_findings.diagnose(pooler_evidence(tmp_path, log))
    assert "BNC-006" not in ids(findings)
    trouble = one(findings, "BNC-030")
    assert trouble.severity is Severity.CRITICAL
    assert list(trouble.evidence["by_reason"]) == ["client_login_timeout_server_down"]


def test_max_client_conn_refusals(tmp_path: Path) -> None:
    # client.c: "no more connections allowed (max_client_conn)" (1.9+), before the client has a pool;
    # 1.24+ also refuses per database: "client connections exceeded (max_db_client_connections)".
    log = "".join(
        closes(f"C-0x55d4b2a6{n:04x}: {NO_LOGIN}@10.0.3.9:{40100 + n}",
               "no more connections allowed (max_client_conn)", 0, 30 + n)
        for n in range(5)
    )  # fmt: skip
    log += closes("C-0x55d4b2a70001: (nodb)/app_user@10.0.3.9:40200",
                  "client connections exceeded (max_db_client_connections)", 0, 40)  # fmt: skip
    evidence = pooler_evidence(tmp_path, log, pgbouncer_config=pgbouncer_config(max_client_conn="100"))
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-011")
    assert finding.category == "pool_config" and finding.severity is Severity.CRITICAL
    assert finding.evidence["refused"]["count"] == 6
    assert finding.evidence["reasons"] == {"max_client_conn": 5, "max_db_client_connections": 1}
    assert finding.evidence["max_client_conn"] == 100
    assert "max_client_conn" in finding.recommendation and "ulimit -n" in finding.recommendation


def _clients_at(tick: str, n: int) -> list[dict[str, object]]:
    return [
        {"tick_ts": tick, "type": "C", "user": "app_user", "database": "app", "state": "idle",
         "addr": "10.0.3.7", "port": 50000 + i}
        for i in range(n)
    ]  # fmt: skip


def test_max_client_conn_reached_on_the_console_alone_is_a_risk() -> None:
    # SHOW CLIENTS at the limit, no log read: nobody is known to have been refused (client.c refuses
    # only once the count exceeds max_client_conn).
    clients = console("pgbouncer_clients", _clients_at("2024-05-01T12:00:00Z", 60)
                      + _clients_at("2024-05-01T12:00:05Z", 100))  # fmt: skip
    evidence = Evidence(
        frames={"pgbouncer_clients": clients},
        snapshots={"pgbouncer_config": pgbouncer_config(max_client_conn="100")},
    )
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-011")
    assert finding.category == "pool_config" and finding.severity is Severity.WARNING
    assert finding.evidence["peak_clients_seen"] == 100 and finding.evidence["refused"]["count"] == 0
    assert "refused 0" not in finding.title
    below = Evidence(frames={"pgbouncer_clients": clients.iloc[:60]}, snapshots=evidence.snapshots)
    assert "BNC-011" not in ids(pgbouncer_findings.diagnose(below))


def _pool(tick: str, database: str, user: str, **counts: object) -> dict[str, object]:
    return {"tick_ts": tick, "database": database, "user": user, "pool_mode": "transaction",
            "cl_active": 0, "cl_waiting": 0, "sv_active": 0, "sv_idle": 0, "sv_used": 0, "sv_tested": 0,
            "sv_login": 0, "maxwait_s": 0.0, **counts}  # fmt: skip


def _database(tick: str, name: str, **values: object) -> dict[str, object]:
    return {"tick_ts": tick, "name": name, "host": "10.0.1.5", "port": 5432, "database": name,
            "pool_size": 20, "min_pool_size": 0, "reserve_pool": 0, "max_connections": 0,
            "current_connections": 0, "paused": 0, "disabled": 0, **values}  # fmt: skip


def test_max_db_connections_reached_while_clients_wait(tmp_path: Path) -> None:
    t1, t2 = "2024-05-01T12:00:00Z", "2024-05-01T12:00:05Z"
    databases = console("pgbouncer_databases", [
        _database(t1, "app", max_connections=10, current_connections=6),
        _database(t2, "app", max_connections=10, current_connections=10),
    ])  # fmt: skip
    pools = console("pgbouncer_pools", [
        _pool(t1, "app", "app_user", cl_active=6, sv_active=6),
        _pool(t2, "app", "app_user", cl_active=10, cl_waiting=4, sv_active=10, maxwait_s=2.5),
        _pool(t2, "pgbouncer", "pgbouncer", cl_active=1),
    ])  # fmt: skip
    # janitor.c: an idle server connection of another pool closed to make room ("evicted", 1.9+).
    evidence = pooler_evidence(
        tmp_path,
        closes("S-0x55d4b2a30009: app/report_user@10.0.1.5:5432", "evicted", 12, 5),
        pgbouncer_config=pgbouncer_config(max_db_connections="10"),
    )
    evidence.frames.update(pgbouncer_databases=databases, pgbouncer_pools=pools)
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-012")
    assert finding.category == "pool_config" and finding.severity is Severity.WARNING
    assert finding.evidence["max_db_connections"] == {"databases": {"app": 1}, "ticks": 1, "limit": 10}
    assert finding.evidence["evicted_server_connections"] == 1
    assert "max_db_connections" in finding.recommendation
    idle = pools.assign(cl_waiting=0)
    evidence.frames.update(pgbouncer_pools=idle)  # at the cap with nobody waiting: what a cap is for
    assert "BNC-012" not in ids(pgbouncer_findings.diagnose(evidence))


def test_max_user_connections_reached_across_databases() -> None:
    tick = "2024-05-01T12:00:00Z"
    pools = console("pgbouncer_pools", [
        _pool(tick, "app", "app_user", cl_active=8, sv_active=8),
        _pool(tick, "reports", "app_user", cl_active=7, cl_waiting=3, sv_active=6, sv_idle=1),
    ])  # fmt: skip
    evidence = Evidence(
        frames={"pgbouncer_pools": pools},
        snapshots={"pgbouncer_config": pgbouncer_config(max_user_connections="15")},
    )
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-012")
    assert finding.severity is Severity.WARNING
    assert finding.evidence["max_user_connections"] == {"users": {"app_user": 1}, "ticks": 1, "limit": 15}
    assert "max_user_connections" in finding.recommendation


# server.c kill_pool_logins_server_error: "server login failed: %s %s" (level, message) at WARNING
# without a connection prefix, then the waiting clients are closed with the server's message. The
# server connection's own close says "login failed" through 1.23 and the server's message from 1.24.
def server_login_refused(second: int, message: str, waiting: list[int], version: str) -> str:
    text = at(second, "WARNING", f"server login failed: FATAL {message}")
    text += "".join(closes(client(n), message, 2, second) for n in waiting)
    return text + closes(server(90 + second), message if version >= "1.24" else "login failed", 0, second)


@pytest.mark.parametrize("version", ["1.18", "1.24"])
def test_the_server_refusing_pgbouncer_for_lack_of_slots(tmp_path: Path, version: str) -> None:
    log = server_login_refused(5, "sorry, too many clients already", [1, 2, 3], version)
    log += server_login_refused(20, "sorry, too many clients already", [4], version)
    findings = pgbouncer_findings.diagnose(pooler_evidence(tmp_path, log))
    finding = one(findings, "BNC-013")
    assert finding.category == "pool_config" and finding.severity is Severity.CRITICAL
    assert finding.title.startswith("PostgreSQL refused 2 PgBouncer login(s)"), finding.title
    assert "max_connections" in finding.recommendation
    # The refusal is no credentials problem, whichever release printed "login failed" beside it.
    assert "BNC-031" not in ids(findings)


def test_pools_larger_than_the_server_allows_are_a_risk() -> None:
    tick = "2024-05-01T12:00:00Z"
    databases = console("pgbouncer_databases", [
        _database(tick, "app", pool_size=20, reserve_pool=5), _database(tick, "reports", pool_size=10),
    ])  # fmt: skip
    pools = console("pgbouncer_pools", [
        _pool(tick, "app", "app_user"), _pool(tick, "app", "batch_user"), _pool(tick, "reports", "app_user"),
    ])  # fmt: skip
    evidence = Evidence(
        frames={"pgbouncer_databases": databases, "pgbouncer_pools": pools},
        snapshots={"settings": {"usable_connections": 47}},  # max_connections 50, 3 reserved
    )
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-013")
    assert finding.severity is Severity.WARNING and finding.category == "pool_config"
    assert finding.evidence["pool_connections_possible"] == 60  # (20 + 5) x 2 users + 10 x 1
    assert finding.evidence["server_usable_connections"] == 47
    assert "default_pool_size" in finding.recommendation
    evidence.snapshots["settings"] = {"usable_connections": 97}
    assert "BNC-013" not in ids(pgbouncer_findings.diagnose(evidence))


def test_prepared_statements_broken_by_transaction_pooling(tmp_path: Path) -> None:
    # prepare.c (1.21+, with max_prepared_statements > 0): the client is closed, notified.
    log = closes(client(1), "prepared statement did not exist", 40, 3)
    log += closes(client(2), "prepared statement name is already in use", 41, 4)
    evidence = pooler_evidence(
        tmp_path, log, pgbouncer_config=pgbouncer_config("1.21.0", max_prepared_statements="100")
    )
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-020")
    assert finding.category == "pool_config" and finding.severity is Severity.CRITICAL
    assert "(2 error(s)" in finding.title, finding.title
    errors = {"prepared_statement_missing": 1, "prepared_statement_in_use": 1}
    assert finding.evidence["pooler_errors"] == errors
    assert finding.evidence["pool_mode"] == "transaction"
    assert finding.evidence["pgbouncer_version"] == "1.21.0"
    assert "prepare_threshold=None" in finding.recommendation
    assert "max_prepared_statements = 100" in finding.recommendation


def test_multi_statement_transactions_in_statement_pooling(tmp_path: Path) -> None:
    # server.c: "transaction blocks not allowed in statement pooling mode" (1.12+; 1.9-1.11 printed
    # "long transactions not allowed"), a server close passed on to its client.
    log = linked(1, "transaction blocks not allowed in statement pooling mode", 3, 7)
    evidence = pooler_evidence(tmp_path, log, pgbouncer_config=pgbouncer_config(pool_mode="statement"))
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-020")
    assert finding.severity is Severity.CRITICAL and finding.evidence["pool_mode"] == "statement"
    assert "(1 error(s)" in finding.title, finding.title


def _app_errors(texts: list[str]) -> pd.DataFrame:
    return console("app_log_events", [
        {"ts": f"2024-05-01T12:00:{i:02d}Z", "kind": "other", "stack": "psycopg", "line_no": i + 1,
         "file": "app.log", "text": text}
        for i, text in enumerate(texts)
    ])  # fmt: skip


def test_prepared_statement_errors_in_the_application_log_need_transaction_pooling() -> None:
    # PostgreSQL's own words (26000 / 42P05) as the driver raises them, with PgBouncer < 1.21 or
    # max_prepared_statements = 0: PgBouncer itself logs nothing.
    app = _app_errors(['psycopg.errors.InvalidSqlStatementName: prepared statement "_pg3_3" does not exist'])
    evidence = Evidence(
        frames={"app_log_events": app}, snapshots={"pgbouncer_config": pgbouncer_config("1.18.0")}
    )
    finding = one(pgbouncer_findings.diagnose(evidence), "BNC-020")
    assert finding.severity is Severity.CRITICAL and finding.evidence["app_errors"] == 1
    session = Evidence(
        frames={"app_log_events": app},
        snapshots={"pgbouncer_config": pgbouncer_config("1.18.0", pool_mode="session")},
    )
    assert "BNC-020" not in ids(pgbouncer_findings.diagnose(session))


def test_prepared_statement_errors_reach_bnc_020_through_the_app_log_reader(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text(
        "2024-05-01 12:00:01,000 ERROR app.orders: request failed: "
        'psycopg.errors.InvalidSqlStatementName: prepared statement "_pg3_3" does not exist\n'
    )
    evidence = Evidence(
        frames={"app_log_events": read_app_logs([path]).events},
        snapshots={"pgbouncer_config": pgbouncer_config("1.18.0")},
    )
    assert "BNC-020" in ids(pgbouncer_findings.diagnose(evidence))


@pytest.mark.parametrize("version", ["1.18", "1.24"])
def test_pgbouncer_cannot_log_in_to_postgresql(tmp_path: Path, version: str) -> None:
    log = server_login_refused(5, 'password authentication failed for user "app_user"', [1, 2], version)
    finding = one(pgbouncer_findings.diagnose(pooler_evidence(tmp_path, log)), "BNC-031")
    assert finding.category == "pool_config" and finding.severity is Severity.CRITICAL
    assert "(1 failure(s))" in finding.title, finding.title
    assert 'password authentication failed for user "app_user"' in finding.evidence["reasons"]
    assert "auth_file" in finding.recommendation and "pg_hba.conf" in finding.recommendation


def test_an_auth_query_failure_is_a_login_failure(tmp_path: Path) -> None:
    # client.c / objects.c: the auth_query answer is checked; "error response from auth_query" (1.9+).
    log = closes(server(7), "error response from auth_query", 0, 3)
    finding = one(pgbouncer_findings.diagnose(pooler_evidence(tmp_path, log)), "BNC-031")
    assert finding.evidence["failures"]["count"] == 1


def test_pgbouncer_shutting_down_is_the_operator_not_postgresql(tmp_path: Path) -> None:
    # 1.23+ (main.c, janitor.c, objects.c): SIGINT is the rolling-restart shutdown; clients still
    # queued or arriving are closed with "server shutting down" -- PgBouncer, the server to its
    # clients, is going down; PostgreSQL is fine.
    log = at(0, "LOG", "got SIGINT, shutting down, waiting for all servers connections to be released")
    log += closes(client(1), "server shutting down", 40, 1) + closes(client(2), "server shutting down", 3, 2)
    log += at(5, "LOG", "server connections dropped, exiting")
    findings = pgbouncer_findings.diagnose(pooler_evidence(tmp_path, log))
    finding = one(findings, "BNC-032")
    assert finding.category == "server" and finding.severity is Severity.CRITICAL
    assert finding.evidence["events"] == {"pooler_restart": 1}
    assert finding.evidence["closed"]["count"] == 2
    assert "RELOAD" in finding.recommendation and "so_reuseport" in finding.recommendation
    assert "BNC-030" not in ids(findings)


def test_an_operator_kill_closes_clients_and_a_pause_alone_is_a_warning(tmp_path: Path) -> None:
    # admin.c: "KILL '%s' command issued", then janitor.c kill_pool closes every connection of the
    # database with "database removed" (1.9+).
    log = at(0, "LOG", "KILL 'app' command issued")
    log += closes(client(1), "database removed", 120, 0) + closes(server(1), "database removed", 300, 0)
    finding = one(pgbouncer_findings.diagnose(pooler_evidence(tmp_path, log)), "BNC-032")
    assert finding.severity is Severity.CRITICAL and finding.evidence["closed"]["count"] == 1
    assert finding.evidence["events"] == {"pause": 1}
    (tmp_path / "pause").mkdir()
    paused = pooler_evidence(
        tmp_path / "pause", at(0, "LOG", "PAUSE command issued") + at(30, "LOG", "RESUME command issued")
    )
    finding = one(pgbouncer_findings.diagnose(paused), "BNC-032")
    assert finding.severity is Severity.WARNING and finding.evidence["closed"]["count"] == 0


def test_clients_vanishing_without_a_goodbye(tmp_path: Path) -> None:
    # client.c: "client unexpected eof" (1.9+, not notified: the socket is gone); objects.c: the server
    # connection the client left mid-query is closed with "client disconnected with query in progress"
    # (1.23+; "client disconnect while server was not ready" in every release).
    log = "".join(closes(client(n), "client unexpected eof", 350, n, notify=False) for n in range(8))
    log += closes(server(1), "client disconnected with query in progress", 900, 9)
    log += closes(server(2), "client disconnect while server was not ready", 900, 9)
    log += "".join(closes(client(n), "client close request", 60, 10 + n, notify=False) for n in range(20, 40))
    finding = one(pgbouncer_findings.diagnose(pooler_evidence(tmp_path, log)), "BNC-040")
    assert finding.category == "network" and finding.severity is Severity.WARNING
    assert finding.evidence["closed"]["count"] == 10
    assert finding.evidence["by_reason"] == {"client_unexpected_eof": 8, "client_gone_mid_query": 2}
    assert "keepalives_idle=60" in finding.recommendation


def test_a_few_vanished_clients_among_many_goodbyes_are_no_finding(tmp_path: Path) -> None:
    log = "".join(closes(client(n), "client unexpected eof", 350, n, notify=False) for n in range(6))
    log += "".join(closes(client(n), "client close request", 60, n, notify=False) for n in range(100, 200))
    assert "BNC-040" not in ids(pgbouncer_findings.diagnose(pooler_evidence(tmp_path, log)))

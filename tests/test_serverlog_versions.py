"""Server logs of older PostgreSQL versions: the csvlog had 23 fields in 9.0-12 and 24 in 13.

tests/data/logs/pg13_incident.{log,csv} are one small incident recorded by a real PostgreSQL 13.23,
as stderr and csvlog side by side; pg12_shape_incident.csv is the same csvlog with backend_type cut
off every record, the 23-field shape of 9.0-12 (tests/data/logs/README_pg13.md says how).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from playbook.collect.serverlog import ServerLogEvidence, read_server_logs
from playbook.lab.server import STDERR_PREFIX

DATA = Path(__file__).parent / "data" / "logs"
PG13_STDERR = DATA / "pg13_incident.log"
PG13_CSVLOG = DATA / "pg13_incident.csv"
PG12_SHAPE_CSVLOG = DATA / "pg12_shape_incident.csv"

# What the recorded incident holds, counted from its lines: 9 connections received (one of them the
# wrong password, which is never authorized), 8 authorized, 7 disconnections (the refused
# CONNECTION LIMIT login and the failed password write none).
PG13_COUNTS = {
    "server_start": 1,
    "ready_to_accept": 1,
    "connection_received": 9,
    "connection_authorized": 8,
    "disconnection": 7,
    "admin_terminate": 1,
    "idle_in_transaction_timeout": 1,
    "statement_timeout": 1,
    "auth_failed": 1,
    "role_conn_limit": 1,
    "shutdown_requested": 1,
    "shut_down": 1,
}


def _counts(evidence: ServerLogEvidence) -> dict[str, int]:
    return {str(k): int(v) for k, v in evidence.events["event"].value_counts().items() if v}


def _records(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_recorded_csvlogs_have_their_versions_field_counts() -> None:
    """13 writes 24 fields (backend_type last); the derived 12-shape twin has 23, the rest unchanged."""
    pg13, pg12 = _records(PG13_CSVLOG), _records(PG12_SHAPE_CSVLOG)
    assert len(pg13) == len(pg12) == 38
    assert {len(row) for row in pg13} == {24}
    assert {len(row) for row in pg12} == {23}
    assert [row[:23] for row in pg13] == pg12
    assert {row[23] for row in pg13} >= {"postmaster", "client backend", "not initialized"}


def test_pg13_stderr_log_counts_the_incident() -> None:
    evidence = read_server_logs([PG13_STDERR])
    assert (evidence.format, evidence.prefix) == ("stderr", STDERR_PREFIX)
    assert _counts(evidence) == PG13_COUNTS
    events = evidence.events
    for event_id, level in (
        ("admin_terminate", "FATAL"),
        ("idle_in_transaction_timeout", "FATAL"),
        ("statement_timeout", "ERROR"),
    ):
        row = events[events["event"] == event_id].iloc[0]
        assert (row["user"], row["database"], row["application"]) == ("app", "shop", "orders-api"), event_id
        assert row["level"] == level
    assert events.loc[events["event"] == "auth_failed", "user"].tolist() == ["pwuser"]
    assert events.loc[events["event"] == "role_conn_limit", "user"].tolist() == ["limited_app"]
    assert set(evidence.sessions["application"]) == {"orders-api", "reaper"}
    ended = evidence.sessions["ended_by"].tolist()
    assert ended.count("admin_terminate") == ended.count("idle_in_transaction_timeout") == 1


@pytest.mark.parametrize("path", [PG13_CSVLOG, PG12_SHAPE_CSVLOG], ids=["pg13-24-fields", "pg12-23-fields"])
def test_older_csvlogs_read_like_their_stderr_twin(path: Path) -> None:
    """A 24- or 23-field csvlog is read, not skipped: the same events and sessions as stderr."""
    stderr = read_server_logs([PG13_STDERR])
    csvlog = read_server_logs([path])
    assert csvlog.format == "csvlog"
    assert csvlog.summary["entries"] > 0
    assert _counts(csvlog) == _counts(stderr) == PG13_COUNTS
    assert set(csvlog.sessions["application"]) == set(stderr.sessions["application"])

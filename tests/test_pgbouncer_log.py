"""PgBouncer's log read by content, and every close reason in its source mapped (no server needed)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from playbook.collect.pgbouncer_log import looks_like_pgbouncer_log, read_pgbouncer_logs
from playbook.errors import PlaybookError
from playbook.evidence.pgbouncer_frames import (
    REASONS,
    SCHEMAS,
    UNKNOWN_REASON,
    classify_reason,
    format_matches,
)
from playbook.evidence.vocab import CATEGORIES
from playbook.evidence.zones import zone_named

DATA = Path(__file__).parent / "data"
EXTRACTED = json.loads((DATA / "pgbouncer" / "reasons.json").read_text())


@pytest.mark.parametrize("entry", EXTRACTED["reasons"], ids=lambda e: e["format"][:60])
def test_every_reason_in_the_source_maps(entry: dict[str, str]) -> None:
    reason = classify_reason(format_matches(entry["format"]))
    assert reason is not UNKNOWN_REASON, entry
    if entry["side"] in ("client", "server") and reason.side != "either":
        # a server reason reaches the client it was linked to, never the other way round
        assert reason.side == entry["side"] or entry["side"] == "client", (entry, reason)


@pytest.mark.parametrize("text", EXTRACTED["server_passthrough"])
def test_the_servers_own_login_errors_passed_on_map(text: str) -> None:
    assert classify_reason(text) is not UNKNOWN_REASON


def test_the_vocabulary_is_coherent() -> None:
    assert len(EXTRACTED["reasons"]) >= 170
    keys = [r.key for r in REASONS]
    assert len(keys) == len(set(keys))
    for reason in REASONS:
        assert reason.category is None or reason.category in CATEGORIES
        # normal work is never an incident, and an incident always has a category
        assert (reason.recycling or reason.benign) == (reason.category is None), reason.key
        assert reason.app_feels and reason.patterns
    recycling = {r.key for r in REASONS if r.recycling}
    assert {"server_lifetime", "server_idle_timeout", "obsolete_connection", "evicted"} <= recycling
    wording = {
        "server lifetime over": "server_lifetime",  # 1.17+
        "server_lifetime": "server_lifetime",  # up to 1.16
        "client_idle_timeout": "client_idle_timeout",
        "query_timeout": "query_timeout",  # the client's side
        "query timeout": "query_timeout",  # the server's side
        "cancel request query_wait_timeout": "cancel_wait_timeout",  # 1.18 only
        "server login has been failing, try again later (server_login_retry)": "server_login_retry",  # -1.23
        "server login has been failing, cached error: FATAL x (server_login_retry)": "server_login_retry",
        "password authentication failed": "client_auth_failed",  # at PgBouncer
        'password authentication failed for user "app"': "server_login_failed",  # at the server
    }
    for text, key in wording.items():
        assert classify_reason(text).key == key, text


LINES = """\
2024-05-01 14:00:00.123 CEST [4321] LOG process up: PgBouncer 1.18.0, libevent 2.1.12-stable (epoll)
2024-05-01 14:00:01.001 CEST [4321] LOG C-0x55d4b2a1c0e0: app/app_user@10.0.3.7:51234 login attempt: db=app user=app_user tls=no
2024-05-01 14:00:05.201 CEST [4321] LOG S-0x55d4b2a3f1a0: app/app_user@10.0.1.5:5432 closing because: server conn crashed? (age=3605s)
2024-05-01 14:01:00.000 CEST [4321] LOG C-0x55d4b2a1c0e0: app/app_user@[::1]:51234 closing because: client_idle_timeout (age=600s)
2024-05-01 14:01:00.000 CEST [4321] WARNING C-0x55d4b2a1c0e0: app/app_user@[::1]:51234 pooler error: client_idle_timeout
2024-05-01 14:02:30.000 CEST [4321] WARNING C-0x55d4b2a1e100: (nodb)/(nouser)@10.0.3.9:40100 pooler error: no more connections allowed (max_client_conn)
2024-05-01 14:03:00.000 CEST [4321] LOG S-0x55d4b2a3f1a0: app/app_user@10.0.1.5:5432 closing because: server idle timeout (age=601s)
2024-05-01 14:03:01.000 CEST [4321] WARNING server login failed: FATAL sorry, too many clients already
2024-05-01 14:04:00.000 CEST [4321] LOG stats: 2 xacts/s, 2 queries/s, in 312 B/s, out 1024 B/s, xact 812 us, query 640 us
"""  # noqa: E501


def test_reading_a_log_in_a_named_zone(tmp_path: Path) -> None:
    path = tmp_path / "pgbouncer.log.gz"
    path.write_bytes(gzip.compress(LINES.encode()))
    log = read_pgbouncer_logs([path], zone=zone_named("Europe/Berlin"))
    events = log.events
    assert list(events.columns[: len(SCHEMAS["pgbouncer_log_events"].columns)]) == (
        SCHEMAS["pgbouncer_log_events"].column_names
    )
    assert str(events["ts"].iloc[0]) == "2024-05-01 12:00:00.123000+00:00"  # CEST is UTC+2
    closes = events[events["kind"] == "close"].set_index("reason_key")
    assert closes.loc["server_conn_crashed", "side"] == "server"
    assert closes.loc["server_conn_crashed", "age_s"] == 3605
    assert closes.loc["client_idle_timeout", "addr"] == "[::1]:51234"
    assert closes.loc["client_idle_timeout", "category"] == "timeout"
    assert bool(closes.loc["server_idle_timeout", "recycling"])
    refused = events[events["reason_key"] == "max_client_conn"].iloc[0]
    assert refused["kind"] == "pooler_error" and pd.isna(refused["database"])  # (nodb)
    login = events[events["kind"] == "server_login_failed"].iloc[0]
    assert login["reason_key"] == "server_too_many_clients" and login["category"] == "pool_config"
    assert log.summary["versions"] == ["1.18.0"] and not log.summary["warnings"]


def test_abbreviations_without_a_zone_are_said_out_loud(tmp_path: Path) -> None:
    path = tmp_path / "pgbouncer.log"
    path.write_text(LINES)
    log = read_pgbouncer_logs([path])
    assert any("CEST" in w for w in log.summary["warnings"])


def test_syslog_lines_are_read_in_the_given_zone(tmp_path: Path) -> None:
    path = tmp_path / "syslog"
    path.write_text(
        "May  1 14:01:00 db1 pgbouncer[812]: C-0x55d4b2a1c0e0: app/app@10.0.3.7:51234 closing because: "
        "query_wait_timeout (age=120s)\n"
        "May  1 14:01:00 db1 sshd[99]: Accepted publickey for root\n"
    )
    events = read_pgbouncer_logs([path], zone=zone_named("+02:00")).events
    assert len(events) == 1 and events["reason_key"].iloc[0] == "query_wait_timeout"
    assert events["ts"].iloc[0].hour == 12


def test_recognised_by_content() -> None:
    assert looks_like_pgbouncer_log(LINES.encode())
    recorded = DATA / "pgbouncer" / "pgbouncer_saturation" / "pgbouncer.log"
    assert looks_like_pgbouncer_log(recorded.read_bytes())
    for other in (DATA / "applogs").glob("*.log"):
        if other.name != "pgbouncer.log":
            assert not looks_like_pgbouncer_log(other.read_bytes()[:65536]), other
    for other in ("pg18_incident.log", "cet_prefix.log", "garbage.bin", "pg18_incident.csv"):
        assert not looks_like_pgbouncer_log((DATA / "logs" / other).read_bytes()[:65536]), other
    assert not looks_like_pgbouncer_log(b"")


def test_bad_input_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="does not exist"):
        read_pgbouncer_logs([tmp_path / "missing.log"])
    with pytest.raises(PlaybookError, match="no line in PgBouncer's log format"):
        read_pgbouncer_logs([DATA / "logs" / "pg18_incident.log"])

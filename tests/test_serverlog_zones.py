"""Server-log times are read in the server's log_timezone, whatever abbreviation it prints.

A real server logs in three non-UTC zones (Asia/Shanghai prints "CST" like US Central,
America/Chicago is west of UTC, Asia/Kolkata is +05:30 and prints "IST"), in stderr, csvlog and
jsonlog at once. A session is ended at a UTC moment we know; read with the zone, its event lands
at that moment in every format. Read without it, an ambiguous name is a warning, never silent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from playbook import logs_command
from playbook.collect.serverlog import read_server_logs
from playbook.errors import PlaybookError
from playbook.evidence.zones import zone_named
from playbook.lab.server import APP_ROLE, STDERR_PREFIX, LabServer
from playbook.lab.wait import wait_until

ZONES = ["Asia/Shanghai", "America/Chicago", "Asia/Kolkata"]


@pytest.fixture(scope="module")
def zoned(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LabServer, dict[str, tuple[int, datetime, datetime]]]]:
    """For each zone: the pid of a session terminated while the server logged in that zone, and
    the UTC moments just before and after the terminate."""
    lab = LabServer(tmp_path_factory.mktemp("zones"))
    lab.up()
    try:
        lab.alter_system({"log_destination": "stderr,csvlog,jsonlog"})
        wait_until(lambda: (lab.log_dir / "postgresql.json").exists(), timeout=15, what="the jsonlog file")
        victims: dict[str, tuple[int, datetime, datetime]] = {}
        for zone in ZONES:
            lab.alter_system({"log_timezone": zone})

            def reloaded(zone: str = zone) -> bool:
                with psycopg.connect(lab.dsn(APP_ROLE)) as conn:
                    row = conn.execute("SHOW log_timezone").fetchone()
                return row is not None and row[0] == zone

            wait_until(reloaded, timeout=15, what=f"log_timezone {zone}")
            victim = psycopg.connect(lab.dsn(APP_ROLE), application_name=f"victim-{zone}", autocommit=True)
            pid = victim.info.backend_pid
            before = datetime.now(timezone.utc)
            with lab.admin() as admin:
                # with a timeout it returns once the victim has exited, so after its FATAL was
                # logged: without one the line may come after `after` on a busy machine
                admin.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
            after = datetime.now(timezone.utc)
            victim.close()
            wait_until(
                lambda pid=pid: f"[{pid}] {APP_ROLE}@lab FATAL:  terminating" in lab.stderr_log.read_text(),
                timeout=15,
                what=f"the terminate of {pid} in the log",
            )
            victims[zone] = (pid, before, after)
        wait_until(
            lambda: all(str(v[0]) in (lab.log_dir / "postgresql.json").read_text() for v in victims.values()),
            timeout=15,
            what="every terminate in the jsonlog",
        )
        yield lab, victims
    finally:
        lab.destroy()


def _paths(lab: LabServer) -> dict[str, Path]:
    return {
        "stderr": lab.stderr_log,
        "csvlog": lab.log_dir / "postgresql.csv",
        "jsonlog": lab.log_dir / "postgresql.json",
    }


@pytest.mark.parametrize("fmt", ["stderr", "csvlog", "jsonlog"])
@pytest.mark.parametrize("zone", ZONES)
def test_event_lands_at_its_utc_moment(
    zoned: tuple[LabServer, dict[str, tuple[int, datetime, datetime]]], fmt: str, zone: str
) -> None:
    lab, victims = zoned
    pid, before, after = victims[zone]
    prefix = STDERR_PREFIX if fmt == "stderr" else None
    evidence = read_server_logs([_paths(lab)[fmt]], fmt=fmt, prefix=prefix, log_tz=zone_named(zone, "server"))
    events = evidence.events
    rows = events[(events["event"] == "admin_terminate") & (events["pid"] == pid)]
    assert len(rows) == 1, fmt
    ts = rows.iloc[0]["ts"]
    # the log prints milliseconds: the event is within the moments around the terminate
    assert pd.Timestamp(before).floor("ms") <= ts <= pd.Timestamp(after) + pd.Timedelta(milliseconds=1), (
        f"{fmt} {zone}: {ts} not in [{before}, {after}]"
    )
    assert rows.iloc[0]["application"] == f"victim-{zone}"
    names = evidence.summary["zones_assumed"][str(_paths(lab)[fmt])]["names"]
    assert any(zone in how for how in names.values()), names


@pytest.mark.parametrize("fmt", ["stderr", "csvlog", "jsonlog"])
def test_without_a_zone_ambiguous_names_are_warnings(
    zoned: tuple[LabServer, dict[str, tuple[int, datetime, datetime]]], fmt: str
) -> None:
    lab, victims = zoned
    prefix = STDERR_PREFIX if fmt == "stderr" else None
    evidence = read_server_logs([_paths(lab)[fmt]], fmt=fmt, prefix=prefix)
    warnings = " ".join(evidence.summary["warnings"])
    assert "'CST'" in warnings and "ambiguous" in warnings and "Asia/Shanghai" in warnings
    assert "'IST'" in warnings and "Asia/Kolkata" in warnings
    assert evidence.warnings == evidence.summary["warnings"]
    # read as UTC, and said so: the Shanghai event is 8 hours late
    pid, before, _after = victims["Asia/Shanghai"]
    events = evidence.events
    ts = events[(events["event"] == "admin_terminate") & (events["pid"] == pid)].iloc[0]["ts"]
    assert abs(ts - pd.Timestamp(before) - pd.Timedelta(hours=8)) < pd.Timedelta(seconds=5)


def test_recorded_lines_cst_in_both_zones(tmp_path: Path) -> None:
    path = tmp_path / "cst.log"
    path.write_text(
        "2025-03-01 18:00:05.000 CST [7] a@s FATAL:  terminating connection due to administrator command\n"
        "2025-03-01 18:00:06.000 +0530 [8] a@s FATAL:  terminating connection due to administrator command\n"
    )
    shanghai = read_server_logs([path], prefix=STDERR_PREFIX, log_tz=zone_named("Asia/Shanghai"))
    chicago = read_server_logs([path], prefix=STDERR_PREFIX, log_tz=zone_named("America/Chicago"))
    assert shanghai.events["ts"].tolist() == [
        pd.Timestamp("2025-03-01 10:00:05", tz="UTC"),
        pd.Timestamp("2025-03-01 12:30:06", tz="UTC"),  # a number is exact whatever the zone
    ]
    assert chicago.events["ts"].iloc[0] == pd.Timestamp("2025-03-02 00:00:05", tz="UTC")
    assert not shanghai.warnings and not chicago.warnings


def test_summer_time_names_pick_their_side_of_the_repeated_hour(tmp_path: Path) -> None:
    # 2025-11-02 01:30 happens twice in Chicago: CDT (-05) first, then CST (-06)
    path = tmp_path / "fallback.log"
    path.write_text(
        "2025-11-02 01:30:00.000 CDT [7] LOG:  received SIGHUP, reloading configuration files\n"
        "2025-11-02 01:30:00.000 CST [7] LOG:  received SIGHUP, reloading configuration files\n"
    )
    evidence = read_server_logs([path], prefix=STDERR_PREFIX, log_tz=zone_named("America/Chicago"))
    assert evidence.events["ts"].tolist() == [
        pd.Timestamp("2025-11-02 06:30", tz="UTC"),
        pd.Timestamp("2025-11-02 07:30", tz="UTC"),
    ]


def test_logs_command_log_tz_and_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ist.log"
    path.write_text(
        "2025-03-01 15:30:05.000 IST [7] a@s FATAL:  terminating connection due to administrator command\n"
    )
    parser = __import__("argparse").ArgumentParser()
    logs_command.add_arguments(parser)
    assert logs_command.run(parser.parse_args([str(path), "--log-tz", "Asia/Kolkata", "--json"])) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"]["admin_terminate"]["first_seen"] == "2025-03-01T10:00:05+00:00"
    assert summary["warnings"] == []
    assert logs_command.run(parser.parse_args([str(path)])) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "'IST'" in out and "ambiguous" in out
    with pytest.raises(PlaybookError, match="unknown time zone 'Mars/Olympus'"):
        logs_command.run(parser.parse_args([str(path), "--log-tz", "Mars/Olympus"]))


def test_jobs_give_the_same_result(tmp_path: Path) -> None:
    sample = (Path(__file__).parent / "data" / "logs" / "pg18_incident.log").read_bytes()
    path = tmp_path / "big.log"
    path.write_bytes(sample * 40)
    one = read_server_logs([path])
    two = read_server_logs([path], jobs=2)
    assert one.summary == two.summary
    pd.testing.assert_frame_equal(one.events, two.events)

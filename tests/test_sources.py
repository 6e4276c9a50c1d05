"""The sources of evidence share one protocol; a source's failure and the window are handled once.

Offline runs on real logs (a recorded server log; logs written in the formats PostgreSQL,
PgBouncer and a psycopg application write), read by the real readers: no database is needed,
none is mocked.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from playbook.collect.collection import collect_evidence, within_window
from playbook.collect.sources import SOURCES, Context, Contribution, Source
from playbook.errors import PlaybookError
from playbook.report.summary import evidence_warnings
from playbook.request import RunRequest

DATA = Path(__file__).parent / "data"
SERVER_LOG = DATA / "logs" / "pg18_incident.log"
APP_LOG = DATA / "applogs" / "psycopg_pool.log"
LOG_FRAMES = ("server_log_events", "pgbouncer_log_events", "app_log_events")


class BrokenSource:
    """A source that fails the way a collector's bug would: registered only in these tests."""

    name = "broken test source"
    live = False
    windowed = True

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        self.calls += 1
        raise self.error


def test_every_source_satisfies_the_protocol() -> None:
    names = [source.name for source in SOURCES]
    assert len(set(names)) == len(names), names
    for source in SOURCES:
        assert isinstance(source, Source), source
        assert isinstance(source.name, str) and source.name.strip(), source
        assert isinstance(source.live, bool) and isinstance(source.windowed, bool), source
        assert not (source.live and source.windowed), f"{source.name}: a sampler's frames are the window"
    # the order the run consults them in: settings frame the window, the logs are read last
    assert names == [
        "settings",
        "probes",
        "activity sampler",
        "server log",
        "PgBouncer log",
        "application log",
        "path probe",
    ]
    # offline, the live sources are never asked, and a log source with no file adds nothing
    evidence = collect_evidence(None, RunRequest(duration=0, server_logs=(SERVER_LOG,), progress=False))
    assert evidence.manifest["collected"] == ["server_log"]
    assert set(evidence.frames) == {"server_log_events", "server_log_sessions"}
    assert evidence.manifest["failures"] == []


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (RuntimeError("deliberately broken " + "x" * 400), "deliberately broken " + "x" * 280),
        (
            PlaybookError("a sentence of ours is kept whole: " + "y" * 400),
            "a sentence of ours is kept whole: " + "y" * 400,
        ),
    ],
)
def test_a_source_that_raises_is_a_failure_naming_it_while_the_others_contribute(
    error: Exception, said: str
) -> None:
    broken = BrokenSource(error)
    alone = collect_evidence(
        None,
        RunRequest(duration=0, server_logs=(SERVER_LOG,), app_logs=(APP_LOG,), app_tz="UTC", progress=False),
    )
    sources = (*SOURCES[:3], broken, *SOURCES[3:])
    evidence = collect_evidence(
        None,
        RunRequest(duration=0, server_logs=(SERVER_LOG,), app_logs=(APP_LOG,), app_tz="UTC", progress=False),
        sources=sources,
    )
    assert broken.calls == 1
    assert evidence.manifest["failures"] == [{"what": "broken test source", "error": said}]
    # the sources after it still contributed, exactly what they contribute without it
    assert evidence.manifest["collected"] == alone.manifest["collected"] == ["server_log", "app_log"]
    for name, frame in alone.frames.items():
        pd.testing.assert_frame_equal(evidence.frames[name], frame)
    assert not alone.frames["server_log_events"].empty and not alone.frames["app_log_events"].empty
    # and the report says so, as it says any source it could not read
    assert any(w.startswith("broken test source") for w in evidence_warnings(evidence)), evidence_warnings(
        evidence
    )


def test_a_real_source_failing_is_the_same_kind_of_failure(tmp_path: Path) -> None:
    """The application log that cannot be read is a failure named for its source, like any other;
    the server log is still read. A live source is never asked offline, even a broken one."""
    missing = tmp_path / "gone.log"
    broken_live = BrokenSource(RuntimeError("never asked offline"))
    broken_live.live, broken_live.windowed = True, False
    evidence = collect_evidence(
        None,
        RunRequest(duration=0, server_logs=(SERVER_LOG,), app_logs=(missing,), progress=False),
        sources=(broken_live, *SOURCES),
    )
    assert broken_live.calls == 0
    [failure] = evidence.manifest["failures"]
    assert failure["what"] == "application log" and str(missing) in failure["error"], failure
    assert evidence.manifest["collected"] == ["server_log"]
    # offline with nothing read at all, nothing is diagnosed: one sentence naming every failure
    with pytest.raises(PlaybookError, match=r"no log could be read.*application log: .*gone\.log"):
        collect_evidence(None, RunRequest(duration=0, app_logs=(missing,), progress=False))


def _write_logs(folder: Path) -> tuple[Path, Path, Path]:
    """A server, a PgBouncer and an application log, in the formats their writers use, each with
    one session lost before the window (10:00), one inside (10:05) and one after (10:10), and
    one on each bound (10:02:00.000, 10:08:00.000)."""
    server = folder / "postgresql.log"
    pgbouncer = folder / "pgbouncer.log"
    app = folder / "app.log"
    moments = ["10:00:00.000", "10:02:00.000", "10:05:00.000", "10:08:00.000", "10:10:00.000"]
    server.write_text(
        "".join(
            f"2026-12-01 {m} UTC [{100 + i}] lab_app@lab FATAL:  terminating connection due to "
            "idle-session timeout\n"
            f"2026-12-01 {m} UTC [{100 + i}] lab_app@lab LOG:  disconnection: session time: 0:00:03.001 "
            "user=lab_app database=lab host=127.0.0.1 port=5000\n"
            for i, m in enumerate(moments)
        )
    )
    pgbouncer.write_text(
        "".join(
            f"2026-12-01 {m} UTC [17942] LOG C-0x5569ddd67a6{i}: lab/lab_app@127.0.0.1:6035{i} "
            "closing because: client_idle_timeout (age=3s)\n"
            for i, m in enumerate(moments)
        )
    )
    app.write_text(
        "".join(
            f"2026-12-01 {m.replace('.', ',')} ERROR lab.search: request failed: "
            "psycopg.OperationalError: consuming input failed: server closed the connection unexpectedly\n"
            for m in moments
        )
    )
    return server, pgbouncer, app


def test_the_window_drops_the_same_rows_from_every_log_frame(tmp_path: Path) -> None:
    server, pgbouncer, app = _write_logs(tmp_path)
    since = datetime(2026, 12, 1, 10, 2, tzinfo=timezone.utc)
    until = datetime(2026, 12, 1, 10, 8, tzinfo=timezone.utc)
    request = RunRequest(
        duration=0,
        progress=False,
        server_logs=(server,),
        pgbouncer_logs=(pgbouncer,),
        app_logs=(app,),
        app_tz="UTC",
    )
    whole = collect_evidence(None, request)
    bounded = collect_evidence(None, replace(request, since=since, until=until))
    assert bounded.manifest["failures"] == [] and whole.manifest["failures"] == []
    minute = {name: sorted(whole.frames[name]["ts"].dt.strftime("%H:%M").unique()) for name in LOG_FRAMES}
    assert minute == {name: ["10:00", "10:02", "10:05", "10:08", "10:10"] for name in LOG_FRAMES}, minute
    for name in LOG_FRAMES:
        kept = bounded.frames[name]
        # the same moments in every frame: the bounds are kept, before and after are dropped
        assert sorted(kept["ts"].dt.strftime("%H:%M").unique()) == ["10:02", "10:05", "10:08"], name
        expected = whole.frames[name][
            (whole.frames[name]["ts"] >= since) & (whole.frames[name]["ts"] <= until)
        ]
        pd.testing.assert_frame_equal(kept.reset_index(drop=True), expected.reset_index(drop=True))
    # the offline window is what the logs cover within the bounds, and the manifest says so
    assert bounded.manifest["window"]["start"] == since.isoformat()
    assert bounded.manifest["window"]["end"] == until.isoformat()
    assert bounded.manifest["logs_since"] == since.isoformat()
    assert bounded.manifest["logs_until"] == until.isoformat()


def test_within_window_reads_bounds_to_the_millisecond_and_drops_unplaced_rows() -> None:
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(
                ["2026-12-01 10:00:00.000", "2026-12-01 10:00:00.001", "NaT", "2026-12-01 10:00:00.002"],
                utc=True,
            ),
            "n": [0, 1, 2, 3],
        }
    )
    assert within_window(frame, None, None) is frame  # no bound: nothing dropped, not even unplaced rows
    # a naive bound is UTC; its microseconds are below the logs' resolution
    since = datetime(2026, 12, 1, 10, 0, 0, 1500)
    until = datetime(2026, 12, 1, 10, 0, 0, 1900, tzinfo=timezone.utc)
    assert within_window(frame, since, until)["n"].tolist() == [1]
    assert within_window(frame, None, until)["n"].tolist() == [0, 1]

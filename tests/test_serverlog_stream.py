"""The streaming reader on generated logs: several blocks, --jobs, frame caps, frames=False, and
the bench's csvlog/jsonlog copies. No server: the bench's generator writes the logs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

import playbook.collect.serverlog as serverlog
from playbook.collect.serverlog import read_server_logs, state

BENCH = Path(__file__).parents[1] / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        import log_throughput
    finally:
        sys.path.pop(0)
    yield log_throughput


@pytest.fixture(scope="module")
def pooled(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bench's pooled mix: logins that pair with their disconnections, rare causes."""
    path = tmp_path_factory.mktemp("pooled") / "postgresql.log"
    bench.generate(path, 0.6)
    return path


def _counts(summary: dict[str, Any]) -> dict[str, int]:
    return {event_id: entry["count"] for event_id, entry in summary["events"].items()}


def test_jobs_give_the_same_result_over_several_blocks(bench: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "postgresql.log"
    bench.generate(path, 2.5 * serverlog.BLOCK_SIZE / 2**20)
    assert path.stat().st_size > 2 * serverlog.BLOCK_SIZE  # three blocks at least
    one = read_server_logs([path], prefix=bench.PREFIX)
    two = read_server_logs([path], prefix=bench.PREFIX, jobs=2)
    assert one.summary == two.summary
    pd.testing.assert_frame_equal(one.events, two.events)
    pd.testing.assert_frame_equal(one.sessions, two.sessions)
    # sessions that span a block boundary pair as well as the others
    assert one.summary["sessions"]["count"] == _counts(one.summary)["connection_authorized"]


def test_session_ending_events_are_never_capped(
    bench: ModuleType, pooled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = read_server_logs([pooled], prefix=bench.PREFIX)
    monkeypatch.setattr(state, "SESSION_LINE_ROWS", 50)
    monkeypatch.setattr(state, "SESSION_ROWS", 40)
    capped = read_server_logs([pooled], prefix=bench.PREFIX)
    counts = _counts(capped.summary)
    assert counts == _counts(whole.summary)  # the summary counts every line either way
    assert capped.summary["sessions"] == whole.summary["sessions"]
    in_frame = capped.events["event"].astype(str).value_counts().to_dict()
    left_out = capped.summary["frame_rows_left_out"]
    for event_id, count in counts.items():
        if event_id in state.SESSION_LINE_EVENTS:
            assert in_frame[event_id] == 50
            assert left_out["events"][event_id] == count - 50
        else:
            assert in_frame[event_id] == count, event_id  # every one, however many
            assert event_id not in left_out["events"]
    assert sum(1 for e in counts if e not in state.SESSION_LINE_EVENTS) >= 5
    # the latest session lines are kept, in log order with the rest
    assert capped.events["ts"].is_monotonic_increasing
    last = whole.events[whole.events["event"] == "disconnection"].tail(50).reset_index(drop=True)
    kept = capped.events[capped.events["event"] == "disconnection"].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, last, check_categorical=False)
    assert len(capped.sessions) == 40
    assert left_out["sessions"] == whole.summary["sessions"]["count"] - 40
    assert any("left out" in w for w in capped.warnings)


def test_without_frames_the_summary_is_the_same(bench: ModuleType, pooled: Path) -> None:
    full = read_server_logs([pooled], prefix=bench.PREFIX)
    bare = read_server_logs([pooled], prefix=bench.PREFIX, frames=False)
    assert bare.events.empty and bare.sessions.empty
    assert bare.summary["frame_rows_left_out"] is None
    assert {**bare.summary, "frame_rows_left_out": None} == {**full.summary, "frame_rows_left_out": None}


def test_csvlog_and_jsonlog_copies_read_like_the_stderr_log(
    bench: ModuleType, pooled: Path, tmp_path: Path
) -> None:
    csv_path, json_path = tmp_path / "postgresql.csv", tmp_path / "postgresql.json"
    bench.to_csvlog(pooled, csv_path)
    bench.to_jsonlog(pooled, json_path)
    stderr = read_server_logs([pooled], prefix=bench.PREFIX, frames=False)
    csvlog = read_server_logs([csv_path], frames=False)
    jsonlog = read_server_logs([json_path], frames=False)
    assert (csvlog.format, jsonlog.format) == ("csvlog", "jsonlog")
    assert _counts(stderr.summary) == _counts(csvlog.summary) == _counts(jsonlog.summary)
    for evidence in (csvlog, jsonlog):
        assert evidence.summary["sessions"]["count"] == stderr.summary["sessions"]["count"]
        assert evidence.summary["sessions"]["duration_s"] == stderr.summary["sessions"]["duration_s"]
        assert evidence.summary["sessions"]["ended_by"] == stderr.summary["sessions"]["ended_by"]

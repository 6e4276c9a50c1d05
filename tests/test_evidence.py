"""The evidence contract: frame schemas, the manifest's format, typed settings, the shared views."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from playbook.errors import PlaybookError
from playbook.evidence import MANIFEST_SCHEMA, Evidence
from playbook.evidence.contract import FRAMES
from playbook.evidence.frames import (
    ACTIVITY_SAMPLES,
    APP_LOG_EVENTS,
    SERVER_LOG_EVENTS,
)
from playbook.evidence.settings import duration_text_seconds, setting_seconds, usable_connections
from playbook.evidence.views import counts_over_time, overrides_of, server_events

RECORDED = Path(__file__).parent / "data" / "evidence"


def test_every_recorded_frame_has_its_schemas_columns() -> None:
    """The schemas describe what the collectors really wrote on real incidents."""
    seen = set()
    for folder in sorted(p for p in RECORDED.iterdir() if p.is_dir()):
        evidence = Evidence.load(folder)
        for name, frame in evidence.frames.items():
            schema = FRAMES.get(name)
            assert schema is not None, f"{folder.name}/{name} has no schema"
            assert schema.missing(frame) == [], (folder.name, name)
            seen.add(name)
    assert seen == set(FRAMES), set(FRAMES) - seen


def test_every_recorded_pooler_frame_has_its_schemas_columns() -> None:
    from playbook.evidence.pgbouncer_frames import SCHEMAS

    folders = sorted((Path(__file__).parent / "data" / "pgbouncer").glob("*/"))
    assert folders
    for folder in folders:
        for path in folder.glob("*.parquet"):
            assert SCHEMAS[path.stem].missing(pd.read_parquet(path)) == [], path


def test_a_frame_not_collected_reads_empty_with_its_columns() -> None:
    evidence = Evidence()
    for schema in (ACTIVITY_SAMPLES, SERVER_LOG_EVENTS, APP_LOG_EVENTS):
        frame = evidence.frame(schema)
        assert frame.empty and list(frame.columns) == schema.column_names
    assert server_events(evidence, "admin_terminate").empty
    assert str(evidence.server_log_events["ts"].dtype) == "datetime64[ms, UTC]"


def test_save_and_load_keep_every_frame_and_snapshot(tmp_path: Path) -> None:
    recorded = Evidence.load(RECORDED / "leak")
    recorded.save(tmp_path / "copy")
    again = Evidence.load(tmp_path / "copy")
    assert set(again.frames) == set(recorded.frames)
    assert set(again.snapshots) == set(recorded.snapshots)
    for name, frame in recorded.frames.items():
        pd.testing.assert_frame_equal(again.frames[name], frame, check_dtype=False)
    assert json.loads((tmp_path / "copy" / "manifest.json").read_text())["schema"] == MANIFEST_SCHEMA


def test_saving_a_frame_that_breaks_its_schema_is_refused(tmp_path: Path) -> None:
    evidence = Evidence(frames={"activity_ticks": pd.DataFrame({"ts": []})})
    with pytest.raises(ValueError, match="lacks the columns"):
        evidence.save(tmp_path / "bad")


def test_evidence_of_another_format_is_one_sentence(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    shutil.copytree(RECORDED / "healthy", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(
        json.dumps({**manifest, "schema": "pg-session-playbook/evidence/v0"})
    )
    with pytest.raises(PlaybookError, match="evidence/v0.*collect it again") as caught:
        Evidence.load(folder)
    assert "\n" not in str(caught.value)
    with pytest.raises(PlaybookError, match="no evidence"):
        Evidence.load(tmp_path)


def test_settings_read_in_seconds_and_usable_slots() -> None:
    evidence = Evidence.load(RECORDED / "idle_session_timeout")
    assert evidence.setting_s("idle_session_timeout") == pytest.approx(
        setting_seconds(evidence.settings["settings"]["idle_session_timeout"])
    )
    assert evidence.setting_s("idle_session_timeout")  # the scenario sets one
    assert setting_seconds({"setting": "0", "unit": "ms"}) is None  # 0 disables a timeout
    assert setting_seconds({"setting": "5", "unit": "min"}) == 300
    assert setting_seconds(None) is None
    snapshot = {
        "settings": {
            "max_connections": {"setting": "100"},
            "superuser_reserved_connections": {"setting": "3"},
            "reserved_connections": {"setting": "5"},
        }
    }
    assert usable_connections(snapshot) == 92
    assert usable_connections({"settings": {}}) is None
    assert duration_text_seconds("2min") == 120
    assert duration_text_seconds("1500") == 1.5  # a bare number is milliseconds for timeouts
    assert duration_text_seconds("0") is None


def test_overrides_are_read_per_role_and_database() -> None:
    evidence = Evidence(
        snapshots={
            "settings": {
                "overrides": [
                    {"role": "app", "database": "", "setconfig": ["idle_session_timeout=30s", "work_mem=4MB"]}
                ]
            }
        }
    )
    assert overrides_of(evidence, "idle_session_timeout") == [{"role": "app", "database": "", "value": "30s"}]
    assert overrides_of(evidence, "statement_timeout") == []


def test_counts_over_time_zero_fills_and_leaves_lost_ticks_out() -> None:
    evidence = Evidence.load(RECORDED / "server_restart")
    counts = counts_over_time(evidence.activity_samples, evidence.activity_ticks, ["state"])
    ok_ticks = int(evidence.activity_ticks["ok"].sum())
    assert len(counts) == ok_ticks
    assert (counts >= 0).all().all() and counts.dtypes.eq("int64").all()

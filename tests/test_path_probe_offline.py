"""`playbook run --evidence-from DIR --path-probe PROBE` joins the probe to evidence read from disk.

No server: the recorded `path_probed` evidence is split into what a run saved without the probe
and the probe folder `playbook probe path` would have written (its frame and meta, through the
same writer), and a real `playbook run` in its own process joins them again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from playbook.collect.sources.read_path_probe import join_path_probe
from playbook.diagnose import diagnose_all
from playbook.diagnose.chain import chain_links
from playbook.errors import PlaybookError
from playbook.evidence import Evidence
from playbook.probes.path import write_probe

RECORDED = Path(__file__).parent / "data" / "evidence" / "path_probed"
PROBE_LINK = "idle cut-off (playbook probe path)"  # the path link's setting when the probe measured it


def split_recording(tmp_path: Path) -> tuple[Path, Path]:
    """The recording without its probe (as a run without --path-probe saves it) and the probe's folder."""
    recorded = Evidence.load(RECORDED)
    probe_dir = tmp_path / "probe"
    write_probe(probe_dir, recorded.frames["path_probe"], recorded.snapshots["path_probe"])
    saved = tmp_path / "saved"
    shutil.copytree(RECORDED, saved)
    for name in ("path_probe.parquet", "path_probe.json"):
        (saved / name).unlink()
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["collected"].remove("path_probe")
    (saved / "manifest.json").write_text(json.dumps(manifest))
    return saved, probe_dir


def test_the_run_joins_the_probe_to_saved_evidence(tmp_path: Path) -> None:
    saved, probe_dir = split_recording(tmp_path)
    without = Evidence.load(saved)
    assert "NET-007" not in [f.id for f in diagnose_all(without)]  # the probe is what brings it
    assert chain_links(without)[-1].after.setting != PROBE_LINK

    out = tmp_path / "report"
    done = run_cli(
        "run", "--evidence-from", str(saved), "--path-probe", str(probe_dir),
        "--notebooks", "triage", "--out", str(out), timeout=240,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr  # NET-007 is critical: keepalives do not help here
    summary = json.loads((out / "summary.json").read_text())
    assert "NET-007" in [f["id"] for f in summary["findings"]]
    evidence = Evidence.load(out / "evidence")
    link = chain_links(evidence)[-1].after
    assert link.layer == "network path" and link.source == "measured" and link.setting == PROBE_LINK
    assert evidence.collected("path_probe")
    assert evidence.manifest.get("path_probe") == str(probe_dir.resolve())


def test_the_named_probe_replaces_the_one_the_evidence_held(tmp_path: Path) -> None:
    recorded = Evidence.load(RECORDED)
    frame = recorded.frames["path_probe"].iloc[:1].reset_index(drop=True)
    write_probe(tmp_path / "other", frame, recorded.snapshots["path_probe"])
    joined = join_path_probe(recorded, tmp_path / "other")
    pd.testing.assert_frame_equal(joined.frames["path_probe"].reset_index(drop=True), frame)
    assert joined.manifest["collected"].count("path_probe") == 1
    assert joined.manifest.get("path_probe") == str((tmp_path / "other").resolve())
    assert "path_probe" not in recorded.manifest  # the loaded evidence itself is left as it was
    assert join_path_probe(recorded, None) is recorded


def test_a_folder_that_is_no_probe_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="--path-probe .* holds no path_probe"):
        join_path_probe(Evidence.load(RECORDED), tmp_path)

"""The architecture, checked: what each entry point loads, and the package installed whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from playbook.lab.server import LabServer

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCES = (".venv", ".git", "build", "*.egg-info", "__pycache__", "*_cache", "demo", "reports", ".lab")


def modules_loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (argparse's SystemExit is fine)."""
    probe = (
        "import sys, json\n"
        f"try:\n    {code}\nexcept SystemExit:\n    pass\n"
        "sys.stdout = sys.__stdout__\n"
        "print('\\n' + json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


HEAVY_FOR_DIAGNOSE = {
    "psycopg",
    "psycopg_pool",
    "rich",
    "playbook.collect",
    "playbook.target",
    "playbook.report",
}


def test_the_diagnosis_stands_on_evidence_alone() -> None:
    loaded = modules_loaded_by("import playbook.diagnose")
    assert not loaded & HEAVY_FOR_DIAGNOSE, loaded & HEAVY_FOR_DIAGNOSE


@pytest.mark.parametrize(
    "argv", [["--help"], ["run", "--help"], ["logs", "--help"], ["demo", "--help"]], ids=" ".join
)
def test_help_and_run_load_no_lab(argv: list[str]) -> None:
    loaded = modules_loaded_by(f"from playbook.cli import main; main({argv!r})")
    assert not {m for m in loaded if m.startswith("playbook.lab") or m == "psycopg_pool"}
    if argv[0] in ("--help", "run", "logs", "demo"):  # nothing to read yet: not even pandas
        assert not {"pandas", "psycopg", "matplotlib"} & loaded


@pytest.mark.parametrize("name", ["pg18_incident.log", "pg18_incident.csv", "pg18_incident.json"])
def test_reading_logs_loads_no_pandas(name: str) -> None:
    """`playbook logs` builds no frame: it reads, pairs and sums without pandas (half a second
    of start-up that bench/log_throughput.py counts), in stderr, csvlog and jsonlog."""
    log = ROOT / "tests" / "data" / "logs" / name
    loaded = modules_loaded_by(f"from playbook.cli import main; main(['logs', {str(log)!r}, '--json'])")
    assert "pandas" not in loaded


def test_a_notebook_reading_saved_evidence_loads_no_collector_or_report() -> None:
    """Every kernel of a run imports playbook.notebook: collectors, the driver and the report's
    nbformat/jsonschema (seconds of import each) load only when a notebook collects by hand."""
    loaded = modules_loaded_by(
        "from playbook import notebook, plots, plots_layers\n"
        "    from playbook.evidence import Evidence\n"
        "    notebook.verdict(Evidence(), 'triage')"
    )
    heavy = {"nbformat", "jsonschema", "psycopg", "playbook.collect", "playbook.report.run_command"}
    assert not heavy & loaded, heavy & loaded


def test_running_loads_no_lab() -> None:
    loaded = modules_loaded_by("import playbook.report.run_command, playbook.notebook, playbook.plots")
    assert not {m for m in loaded if m.startswith("playbook.lab")}


def test_a_run_with_no_notebook_to_execute_is_not_ok(lab: LabServer, tmp_path: Path) -> None:
    empty = tmp_path / "no-notebooks"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "playbook.cli", "run", "--dsn", lab.dsn(), "--duration", "1",
         "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env={**os.environ, "PLAYBOOK_NOTEBOOKS": str(empty)},
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 3
    assert "no notebook to execute" in result.stderr and "Traceback" not in result.stderr

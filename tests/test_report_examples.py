"""Scheduling that works as written, and papermill's own conventions.

Each example's `playbook` command is parsed by playbook's own parser (a flag the CLI does not
know fails here, not at 3 a.m.); the systemd units pass `systemd-analyze verify`; papermill lists
the notebooks' typed parameters and runs a notebook with -p on recorded evidence.
"""

from __future__ import annotations

import ast
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from playbook.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent


def playbook_commands(text: str) -> list[list[str]]:
    """Every `…/playbook <subcommand> …` in a text, as argv after the program name."""
    commands = []
    for chunk in text.replace("\\\n", " ").replace(">-\n", " ").split("\n"):
        if "bin/playbook " not in chunk:
            continue
        for part in chunk.split(";")[0:] + []:
            for piece in part.split("&&"):
                if "bin/playbook " in piece:
                    words = shlex.split(piece.split("bin/playbook ", 1)[1].split(">>")[0].strip("\"' \n"))
                    commands.append(words)
    return commands


def check(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.command in ("run", "history")


@pytest.mark.parametrize("name", ["playbook.cron", "pg-session-playbook.service"])
def test_example_commands_parse(name: str) -> None:
    commands = playbook_commands(
        (EXAMPLES / name)
        .read_text()
        .replace("${PLAYBOOK_WEBHOOK}", "https://h/x")
        .replace('"$PLAYBOOK_WEBHOOK"', "https://h/x")
    )
    assert {c[0] for c in commands} == {"run", "history"}
    for argv in commands:
        check(argv)


def test_github_workflow_and_airflow_dag_commands_parse() -> None:
    import yaml

    workflow = yaml.safe_load((EXAMPLES / "github" / "pg-session-playbook.yml").read_text())
    steps = workflow["jobs"]["diagnose"]["steps"]
    run = next(s["run"] for s in steps if "playbook run" in s.get("run", ""))
    argv = shlex.split(run.split("playbook ", 1)[1].replace("${{ secrets.PLAYBOOK_WEBHOOK }}", "https://h/x"))
    check(argv)
    source = (EXAMPLES / "airflow_dag.py").read_text()
    tree = ast.parse(source)
    namespace: dict[str, object] = {}
    for node in tree.body:  # the constants only: Airflow itself is not installed here
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            exec(compile(ast.Module([node], []), "airflow_dag.py", "exec"), namespace)
    command = (
        str(namespace["COMMAND"])
        .replace("{{ var.value.playbook_dsn }}", "host=db")
        .replace("{{ var.value.playbook_webhook }}", "https://h/x")
    )
    for piece in command.split("&&"):
        check(shlex.split(piece.split("bin/playbook ", 1)[1]))


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed: the units cannot be verified on this machine")
    # The units name the install location; verify them against this checkout's playbook.
    for name in ("pg-session-playbook.service", "pg-session-playbook.timer"):
        text = (EXAMPLES / name).read_text().replace("/opt/pg-session-playbook/.venv/bin", str(BIN))
        text = text.replace("User=postgres", "User=root").replace(
            "/var/lib/pg-session-playbook", str(tmp_path)
        )
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            str(tmp_path / "pg-session-playbook.timer"),
            str(tmp_path / "pg-session-playbook.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "pg-session-playbook" not in result.stderr, result.stderr


def test_papermill_lists_typed_parameters_and_runs_a_notebook_with_p(tmp_path: Path) -> None:
    help_text = subprocess.run(
        [str(BIN / "papermill"), "--help-notebook", str(REPO / "notebooks" / "03_network.ipynb")],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for line in (
        'dsn: str (default "")',
        "duration: float (default 30)",
        "server_log: list (default [])",
        'app: str (default "")',
        'since: str (default "")',
        'evidence_dir: str (default "")',
    ):
        assert line in help_text, help_text
    assert "Unable to parse" not in help_text
    out = tmp_path / "triage.ipynb"
    result = subprocess.run(
        [
            str(BIN / "papermill"),
            str(REPO / "notebooks" / "00_triage.ipynb"),
            str(out),
            "--no-progress-bar",
            "-k",
            "pg-session-playbook",
            "-p",
            "evidence_dir",
            str(REPO / "tests/data/evidence/server_restart"),
            "-p",
            "duration",
            "5",
            "-p",
            "app",
            "billing",
            "-p",
            "since",
            "2h",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    executed = nbformat.read(out, as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'app = "billing"' in injected.source and "duration = 5" in injected.source
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("pb-verdict" in o.get("data", {}).get("text/html", "") for o in outputs)

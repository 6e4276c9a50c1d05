"""`playbook run` end to end: real server, real pool, real papermill, real HTML."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import jsonschema
import nbformat
import psycopg
import pytest

from conftest import run_cli, xact_age
from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.wait import wait_until
from playbook.lab.workloads import Service, wait_for_requests
from playbook.report.render import notebook_to_html
from playbook.report.summary import exit_code, schema, validate


def test_run_finds_a_leak_and_writes_the_whole_report(lab: LabServer, tmp_path: Path) -> None:
    out = tmp_path / "report"
    with Service(lab.dsn(APP_ROLE), "billing", workers=2, min_size=2, max_size=4) as service:
        wait_for_requests(service, 10)
        service.leak_transaction()
        wait_until(lambda: xact_age(lab, "billing") >= 10.5, timeout=30, what="a 10 s old leak")
        result = run_cli("run", "--dsn", lab.dsn(), "--duration", "2", "--interval", "0.5", "--out", str(out))
    assert result.returncode == 1, result.stderr  # the worst finding is a warning
    assert f"report: {out.resolve() / 'index.html'}" in result.stdout
    assert "verdict: WARNING: most likely leak" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    validate(summary)
    assert summary["status"] == "warning"
    assert summary["root_causes"][0]["category"] == "leak"
    leak = next(f for f in summary["findings"] if f["id"] == "LEAK-001")
    assert leak["evidence"]["sessions"][0]["application_name"] == "billing"
    assert "idle_in_transaction_session_timeout" in leak["recommendation"]
    assert summary["target"]["server_version"].startswith("18")
    for notebook in summary["notebooks"]:
        assert notebook["status"] == "ok", notebook
        executed = nbformat.read(out / notebook["ipynb"], as_version=4)
        assert any(cell.get("outputs") for cell in executed.cells if cell.cell_type == "code")
        page = (out / notebook["html"]).read_text()
        assert "load_or_collect" not in page  # code hidden by default
        assert "data:image/png;base64" in page  # the figures are in the page itself
    index = (out / "index.html").read_text()
    assert 'href="triage.html"' in index and "LEAK-001" in index
    manifest = json.loads((out / "evidence" / "manifest.json").read_text())
    assert manifest["gaps"] == [] and manifest["privileges"]["has_pg_monitor"] is True
    assert (out / "evidence" / "activity_samples.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work folder left
    # The executed notebooks point at the published evidence, not at the private work folder.
    assert str(out.resolve() / "evidence") in (out / "triage.ipynb").read_text()

    notebook_to_html(out / "triage.ipynb", tmp_path / "with-code.html", show_code=True)
    assert "load_or_collect" in (tmp_path / "with-code.html").read_text()


@pytest.fixture(scope="module")
def secret_role(lab: LabServer) -> tuple[str, str]:
    password = "Pw-" + secrets.token_hex(12)
    with lab.admin() as admin:
        admin.execute(f"CREATE ROLE secret_monitor LOGIN PASSWORD '{password}' IN ROLE pg_monitor")
    return "secret_monitor", password


@pytest.mark.parametrize("form", ["keyword", "url", "PGPASSWORD", "pgpass"])
def test_a_password_appears_in_no_artifact(
    lab: LabServer, secret_role: tuple[str, str], tmp_path: Path, form: str
) -> None:
    user, password = secret_role
    base = f"host=127.0.0.1 port={lab.port} dbname=lab user={user}"
    env = {"PGPASSWORD": "", "PGPASSFILE": str(tmp_path / "none")}
    if form == "keyword":
        dsn = f"{base} password={password}"
    elif form == "url":
        dsn = f"postgresql://{user}:{password}@127.0.0.1:{lab.port}/lab"
    elif form == "PGPASSWORD":
        dsn, env = base, {"PGPASSWORD": password}
    else:
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"127.0.0.1:{lab.port}:lab:{user}:{password}\n")
        passfile.chmod(0o600)
        dsn, env = base, {"PGPASSFILE": str(passfile)}
    out = tmp_path / "out"
    # Two notebooks (the kernels get the password through the environment, and a page each); every
    # notebook runs in test_architecture's wheel run and test_run_finds_a_leak.
    notebooks = "triage,timeouts"
    result = run_cli(
        "run", "--dsn", dsn, "--duration", "1", "--interval", "0.5", "--notebooks", notebooks,
        "--out", str(out), env=env,
    )  # fmt: skip
    assert result.returncode in (0, 1, 2), result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert all(nb["status"] == "ok" for nb in summary["notebooks"]), summary["notebooks"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 8
    needle = password.encode()
    leaked = [str(p) for p in files if needle in p.read_bytes()]
    assert leaked == []
    assert password not in result.stdout and password not in result.stderr


def test_a_role_without_pg_monitor_is_told_what_it_missed(lab: LabServer, tmp_path: Path) -> None:
    dsn = lab.create_role("plain_watcher")
    out = tmp_path / "out"
    with psycopg.connect(lab.dsn(APP_ROLE), application_name="other-team"):
        result = run_cli(
            "run", "--dsn", dsn, "--duration", "1", "--interval", "0.5", "--notebooks", "triage",
            "--out", str(out),
        )  # fmt: skip
    assert result.returncode in (0, 1, 2), result.stderr
    index = (out / "index.html").read_text()
    assert "Not visible to this role" in index
    assert "GRANT pg_read_all_stats TO plain_watcher;  -- or pg_monitor" in index
    assert "GRANT pg_read_all_settings TO plain_watcher;" in index
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] != "error"
    # an "OK" that could not see other roles' sessions says so beside the verdict, and on stderr
    hidden = [w for w in summary["evidence_warnings"] if "hidden from this role" in w]
    assert hidden and "GRANT pg_read_all_stats TO plain_watcher;" in hidden[0], summary["evidence_warnings"]
    assert "playbook: warning: other roles' activity hidden from this role" in result.stderr


@pytest.mark.parametrize(
    ("status", "fail_on", "code"),
    [
        ("ok", "warning", 0),
        ("warning", "warning", 1),
        ("critical", "warning", 2),
        ("warning", "critical", 0),
        ("critical", "critical", 2),
        ("critical", "never", 0),
        ("error", "never", 3),
    ],
)
def test_exit_codes_follow_the_contract(status: str, fail_on: str, code: int) -> None:
    assert exit_code(status, fail_on) == code


def test_the_schema_rejects_a_summary_that_breaks_the_contract() -> None:
    good = {
        "schema": "pg-session-playbook/summary/v1",
        "status": "ok",
        "target": {"dsn": "host=db user=x", "server_version": "18.1"},
        "window": {
            "start": "2026-01-01T00:00:00+00:00",
            "end": "2026-01-01T00:01:00+00:00",
            "duration_s": 60,
        },
        "root_causes": [],
        "findings": [],
        "notebooks": [],
    }
    validate(good)
    assert schema()["$id"] == "pg-session-playbook/summary/v1"
    for broken in (
        {**good, "status": "fine"},
        {**good, "target": {"dsn": "host=db password=x", "server_version": "18"}},
        {k: v for k, v in good.items() if k != "findings"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_a_relative_out_gives_the_notebooks_the_runs_own_evidence(lab: LabServer, tmp_path: Path) -> None:
    """`make demo` passes a relative --out: the kernels, which run inside it, must still find the evidence."""
    result = run_cli(
        "run",
        "--dsn",
        lab.dsn(),
        "--duration",
        "1",
        "--notebooks",
        "triage",
        "--out",
        "relative-report",
        cwd=tmp_path,
    )
    assert result.returncode in (0, 1, 2), result.stderr
    out = tmp_path / "relative-report"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["notebooks"][0]["status"] == "ok", summary["notebooks"]
    # It read the run's own evidence (by its absolute path); it did not sample again.
    assert str(out.resolve() / "evidence") in (out / "triage.ipynb").read_text()


def test_a_notebook_refuses_an_evidence_folder_that_is_not_there(tmp_path: Path) -> None:
    from playbook.errors import PlaybookError
    from playbook.notebook import load_or_collect

    with pytest.raises(PlaybookError, match="no evidence in"):
        load_or_collect(evidence_dir=str(tmp_path / "missing"))

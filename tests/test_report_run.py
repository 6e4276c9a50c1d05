"""The published report end to end: two real `playbook run`s against the lab, shared by every
assertion here (a module-scoped fixture), read by a real receiver, a real Prometheus parser and
Debian's chromium driven by playwright.

The first run sees a leak, replaces an earlier report whole, records itself in a history, writes
metrics and posts to a local webhook. Between the runs the server kills a session; the second run
(`--since last`) shows that in pg_stat_database's counters, and its webhook is down: a warning,
never a failed run. A third run is interrupted with Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import pytest

from conftest import refused_port, run_cli, xact_age
from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.wait import wait_until
from playbook.lab.workloads import Service, wait_for_requests
from playbook.report.summary import validate

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Receiver:
    """A webhook receiver on a free port of its own: every POST's JSON body is kept."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    posts: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            posts.append({"path": self.path, "type": self.headers.get("Content-Type"), **json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000/secret", posts)
    server.shutdown()


def sessions_killed(lab: LabServer) -> int:
    with psycopg.connect(lab.dsn()) as conn:
        row = conn.execute("SELECT sessions_killed FROM pg_stat_database WHERE datname = 'lab'").fetchone()
    return int(row[0]) if row else 0


@dataclass
class Runs:
    base: Path
    out: Path
    out2: Path
    history: Path
    prometheus: Path
    tmp: Path
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    history_cli: subprocess.CompletedProcess[str]
    receiver: Receiver


@pytest.fixture(scope="module")
def runs(
    lab: LabServer,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: Receiver,
    request: pytest.FixtureRequest,
) -> Runs:
    base = tmp_path_factory.mktemp("report-run")
    out, out2, history = base / "report", base / "report2", base / "history"
    prometheus = base / "textfile" / "pg_session_playbook.prom"
    # A temp folder of the run's own, short enough for the kernels' Unix socket paths.
    tmp = Path(tempfile.mkdtemp(prefix="pgpbt-", dir="/tmp"))
    env = {"TMPDIR": str(tmp)}
    # An earlier report with a page the new run will not write: it must not survive the new run.
    out.mkdir()
    (out / "summary.json").write_text("{}")
    (out / "stale_notebook.html").write_text("<p>an earlier run's page</p>")
    common = ["--dsn", lab.dsn(), "--duration", "2", "--interval", "0.5", "--history", str(history)]
    with Service(lab.dsn(APP_ROLE), "billing", workers=2, min_size=2, max_size=4) as service:
        wait_for_requests(service, 10)
        service.leak_transaction()
        wait_until(lambda: xact_age(lab, "billing") >= 10.5, timeout=30, what="a 10 s old leak")
        first = run_cli(
            "run",
            *common,
            "--notebooks",
            "triage,leaks",
            "--out",
            str(out),
            "--prometheus",
            str(prometheus),
            "--notify",
            receiver.url,
            env=env,
        )
        # Between the runs the server kills a session: no log is read, the counters tell. The leak
        # stays, so the second run alerts too, to a receiver that is down.
        killed_before = sessions_killed(lab)
        victim = psycopg.connect(lab.dsn(APP_ROLE), application_name="victim")
        with lab.admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'victim'"
            )
        victim.close()
        wait_until(lambda: sessions_killed(lab) > killed_before, timeout=20, what="the kill counted")
        second = run_cli(
            "run",
            *common,
            "--notebooks",
            "triage",
            "--since",
            "last",
            "--out",
            str(out2),
            "--notify",
            f"http://127.0.0.1:{refused_port()}/hook",
            "--fail-on",
            "warning",
            env=env,
        )
    history_cli = run_cli("history", str(history), "--keep", "5")
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    return Runs(base, out, out2, history, prometheus, tmp, first, second, history_cli, receiver)


def test_the_run_publishes_a_whole_new_report(runs: Runs) -> None:
    assert runs.first.returncode == 1, runs.first.stderr  # the leak is a warning
    names = sorted(p.name for p in runs.out.iterdir())
    assert names == [
        "evidence",
        "index.html",
        "leaks.html",
        "leaks.ipynb",
        "report.html",
        "summary.json",
        "triage.html",
        "triage.ipynb",
    ]
    assert not [p for p in runs.base.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    # The kernels' sockets and connection files went with the run.
    assert not [p.name for p in runs.tmp.iterdir()], list(runs.tmp.iterdir())
    summary = json.loads((runs.out / "summary.json").read_text())
    validate(summary)
    assert summary["root_causes"][0]["category"] == "leak"


def test_every_page_opens_with_the_verdict_and_its_findings(runs: Runs) -> None:
    for name in ("triage", "leaks"):
        page = (runs.out / f"{name}.html").read_text()
        verdict = page.index('class="pb-verdict')
        assert verdict < page.index("<img"), name  # before any figure
        assert "Times are UTC, to the second." in page
    leaks = (runs.out / "leaks.html").read_text()
    assert "Read next:</b> this page" in leaks
    triage = (runs.out / "triage.html").read_text()
    assert '<a href="leaks.html">leaks.html</a>' in triage
    assert "LEAK-001" in triage and "…" not in re.sub(r"<[^>]+>", "", triage.split("LEAK-001", 1)[1])[:400]
    assert "03_network.ipynb" not in triage


def test_pages_load_nothing_from_elsewhere(runs: Runs) -> None:
    for page in [*runs.out.glob("*.html"), runs.history / "index.html"]:
        text = page.read_text()
        assert not re.search(r"<script[^>]+src=", text), page.name
        assert not re.search(r"<link[^>]+href=\"?https?:", text), page.name
        assert not re.search(r"(src|href)=\"(https?:)?//", text), page.name
        assert "require.js" not in text and "mathjax" not in text.lower(), page.name


def test_report_html_is_one_file_with_everything(runs: Runs) -> None:
    report = (runs.out / "report.html").read_text()
    assert report.index('class="pb-verdict') < report.index('id="page-triage"')
    for name in ("triage", "leaks"):
        assert f'id="page-{name}"' in report
    links = set(re.findall(r'href="([^"]+)"', report))
    assert all(link.startswith("#") for link in links), links  # nothing outside the file
    assert "LEAK-001" in report


def test_history_records_runs_and_counters_between_them(runs: Runs) -> None:
    assert runs.second.returncode == 1, runs.second.stderr  # a failed post never fails a run
    second = json.loads((runs.out2 / "summary.json").read_text())
    validate(second)
    between = second["between_runs"]
    lab_row = next(row for row in between["databases"] if row["database"] == "lab")
    assert lab_row["sessions_killed"] >= 1
    assert "Since the previous run" in (runs.out2 / "index.html").read_text()
    # --since last: the second run read logs from where the first stopped.
    first = json.loads((runs.out / "summary.json").read_text())
    manifest = json.loads((runs.out2 / "evidence" / "manifest.json").read_text())
    assert manifest["logs_since"] == first["window"]["end"]
    assert runs.history_cli.returncode == 0, runs.history_cli.stderr
    assert "2 run(s) kept, 0 removed" in runs.history_cli.stdout
    records = sorted((runs.history / "runs").glob("*/record.json"))
    assert len(records) == 2
    record = json.loads(records[0].read_text())
    assert record["status"] == "warning" and record["usable_connections"] > record["peak_connections"] > 0
    index = (runs.history / "index.html").read_text()
    assert index.count("data:image/png;base64") == 3
    for link in re.findall(r'href="([^"]+)"', index):
        assert (runs.history / link).is_file(), link


def test_alerts_reach_real_receivers(runs: Runs) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    assert len(runs.receiver.posts) == 1  # the second run's receiver was down
    post = runs.receiver.posts[0]
    assert post["type"] == "application/json"
    assert post["text"].startswith("pg-session-playbook WARNING: most likely leak")
    fields = [f["text"] for block in post["blocks"] for f in block.get("fields", [])]
    assert "*Status*\nWARNING" in fields
    assert any(f.startswith("*Top cause*\nleak (LEAK-001)") for f in fields)
    assert f"*Report*\n{runs.out.resolve() / 'report.html'}" in fields
    assert "warning: --notify http://127.0.0.1:" in runs.second.stderr and "/hook" not in runs.second.stderr
    metrics = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(runs.prometheus.read_text())
        for sample in family.samples
    }
    assert metrics[("pg_session_playbook_status", (("status", "warning"),))] == 1
    assert metrics[("pg_session_playbook_status", (("status", "ok"),))] == 0
    assert metrics[("pg_session_playbook_severity", ())] == 1
    leak = (
        "pg_session_playbook_finding",
        (("category", "leak"), ("id", "LEAK-001"), ("severity", "warning")),
    )
    assert metrics[leak] == 1
    assert (
        metrics[("pg_session_playbook_usable_connections", ())]
        > metrics[("pg_session_playbook_peak_connections", ())]
        > 0
    )
    assert metrics[("pg_session_playbook_last_run_duration_seconds", ())] > 2
    assert [p.name for p in runs.prometheus.parent.iterdir()] == [runs.prometheus.name]  # no temp file left


def test_pages_in_a_real_browser(runs: Runs) -> None:
    """Debian's chromium, offline by construction: any request that is not a file of the report
    is recorded and refused; every link resolves; a copy button copies; screenshots are kept."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: `make install` installs it as root"
    # Kept as artifacts: under $PLAYBOOK_TEST_ARTIFACTS when CI sets it, else in the test's tmp
    # folder (which the suite keeps when a test fails, or always with --basetemp).
    artifacts = os.environ.get("PLAYBOOK_TEST_ARTIFACTS")
    shots = (Path(artifacts) if artifacts else runs.base) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    outside: list[str] = []
    pages = [*sorted(runs.out.glob("*.html")), runs.history / "index.html"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(("file://", "data:"))
                else (outside.append(route.request.url), route.abort())
            ),
        )
        page = context.new_page()
        page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else outside.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        for path in pages:
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            label = f"{path.parent.name}-{path.stem}"
            page.screenshot(path=str(shots / f"{label}.png"), full_page=False)
            # Every figure decoded (an inline image that failed has no natural width).
            broken = page.evaluate(
                "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length"
            )
            assert broken == 0, path
            for href in page.evaluate(
                "[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
            ):
                if href.startswith("#"):
                    assert page.locator(f"[id='{href[1:]}']").count() >= 1, (path.name, href)
                else:
                    assert not urlsplit(href).scheme, (path.name, href)
                    assert (path.parent / unquote(href)).exists(), (path.name, href)
            if path.name not in ("index.html",) or path.parent == runs.out:
                assert page.locator(".pb-verdict").first.is_visible(), path
        # A link between pages really navigates, and the copy button copies.
        page.goto((runs.out / "index.html").as_uri())
        page.click('a[href="triage.html"]')
        page.wait_for_url("**/triage.html")
        # The label says "copied" once the clipboard's promise settles, and "copy" again 1.5 s
        # later: every label it takes is recorded, so neither a slow nor a fast page misses it.
        page.evaluate(
            """() => { const b = document.querySelector('button.pb-copy'); window.pbSeen = [];
            new MutationObserver(() => window.pbSeen.push(b.textContent))
              .observe(b, {childList: true, characterData: true, subtree: true}); }"""
        )
        page.locator("button.pb-copy").first.click()
        page.wait_for_function("() => window.pbSeen.includes('copied')", timeout=10_000)
        browser.close()
    print(f"\nscreenshots: {shots}")
    assert outside == []
    assert errors == []
    assert all((shots / f"{p.parent.name}-{p.stem}.png").stat().st_size > 10_000 for p in pages)


@pytest.mark.parametrize(
    ("jobs", "notebooks", "at_first_kernel"),
    [
        (1, "triage", False),
        (2, "triage,leaks", False),
        # Interrupted while the first kernel is still starting, with pages still queued: a kernel runs
        # in a session of its own (no Ctrl-C reaches it) and would write its connection file after
        # the run removed the kernel folder, unless the run kills it first.
        (2, "triage,leaks,timeouts", True),
    ],
)
def test_ctrl_c_leaves_no_kernel_file_and_the_earlier_report_intact(
    lab: LabServer, tmp_path: Path, jobs: int, notebooks: str, at_first_kernel: bool
) -> None:
    """Also with --jobs 2: every kernel running at once is stopped and its files removed."""
    out = tmp_path / "report"
    tmp = Path(tempfile.mkdtemp(prefix="pgpbt-", dir="/tmp"))
    out.mkdir()
    (out / "summary.json").write_text('{"earlier": true}')
    (out / "index.html").write_text("earlier report")
    process = subprocess.Popen(
        [sys.executable, "-m", "playbook.cli", "run", "--dsn", lab.dsn(), "--duration", "1"]
        + ["--notebooks", notebooks, "--jobs", str(jobs), "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        # Interrupt once every kernel has started (their sockets and connection files exist; a
        # quick page's kernel may already be gone: the names seen are kept).
        seen: set[str] = set()

        def started() -> bool:
            seen.update(p.name for p in tmp.glob("pg-session-playbook-kernels-*/kernel-*"))
            return len(seen) >= (1 if at_first_kernel else jobs)

        wait_until(started, timeout=90, what=f"{jobs} kernel(s) started")
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground group
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "summary.json"]
    assert (out / "index.html").read_text() == "earlier report"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    left: list[str] = []

    def nothing_left() -> bool:
        left[:] = [str(p.relative_to(tmp)) for p in tmp.rglob("*")]
        return not left

    try:
        # a kernel stopping on a loaded 2-core machine (the whole suite running) may take its time
        wait_until(nothing_left, timeout=60, what="no kernel file left")
    except Exception as exc:
        raise AssertionError(f"left in TMPDIR after Ctrl-C: {left}") from exc
    tmp.rmdir()


def test_an_out_of_other_files_is_refused_never_deleted(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    log = tmp_path / "server.log"
    log.write_text("2026-01-01 00:00:00 UTC [1] LOG:  database system is ready to accept connections\n")
    result = run_cli("run", "--offline", "--server-log", str(log), "--out", str(tmp_path / "mine"))
    assert result.returncode == 3 and "not a playbook report" in result.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

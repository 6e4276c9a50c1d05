"""JupyterLab as the user meets it: a real JupyterLab from the venv (started here, on a free port
with a token), Debian's chromium driven by playwright, the triage notebook opened by hand against
a lab incident. The notebook opens on the project's kernel, Run All shows the window live (one
figure redrawn in place), interrupting the kernel mid-window keeps what was sampled (the cells
below run on it and the verdict says the window was cut short), and no cell shows an error.

Screenshots are kept as artifacts: under $PLAYBOOK_TEST_ARTIFACTS when CI sets it, else in the
test's tmp folder (kept when a test fails).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from playbook.lab.scenarios import RunningScenario, start_scenario
from playbook.lab.server import LabServer, free_port
from playbook.lab.wait import wait_until

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
KERNEL = "pg-session-playbook"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
DURATION_S = 90  # the window asked for: the test interrupts it long before
SEEN_JS = """() => {
    const out = [...document.querySelectorAll('.jp-OutputArea-output')];
    const text = out.map(o => o.innerText).join('\\n');
    const tick = text.match(/live · tick (\\d+)/);
    const img = document.querySelector('.pb-live img');
    window.pbTicks = window.pbTicks || new Set();
    window.pbImages = window.pbImages || new Set();
    if (tick) window.pbTicks.add(tick[1]);
    if (img) window.pbImages.add(img.src.slice(-80));
    return window.pbTicks.size >= 3 && window.pbImages.size >= 3;
}"""


@dataclass
class Lab:
    url: str
    root: Path
    shots: Path
    scenario: RunningScenario


def _kernel_dirs(tmp: Path) -> dict[str, str]:
    """JUPYTER_PATH for a kernelspec named pg-session-playbook: the venv's (make install registers
    it there), else one installed into a temp prefix for this test."""
    if (Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json").exists():
        return {}
    prefix = tmp / "kernel-prefix"
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL,
         "--display-name", "Python (pg-session-playbook)"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return {"JUPYTER_PATH": str(prefix / "share" / "jupyter")}


def _notebook_copy(root: Path, scenario: RunningScenario) -> None:
    """The notebooks as a user finds them, with the first cell edited as the README says (dsn, and
    here the logs and a long window)."""
    for notebook in (REPO / "notebooks").glob("*.ipynb"):
        shutil.copy(notebook, root / notebook.name)
    triage = root / "00_triage.ipynb"
    page = json.loads(triage.read_text())
    cell = next(c for c in page["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {
        "dsn: str = ": json.dumps(scenario.dsn),
        "duration: float = ": str(DURATION_S),
        "server_log: list = ": json.dumps([str(scenario.server_log)]),
        "app_log: list = ": json.dumps([str(scenario.app_log)]),
    }
    lines = "".join(cell["source"]).split("\n")
    for i, line in enumerate(lines):
        for start, value in values.items():
            if line.startswith(start):
                lines[i] = f"{start}{value}  # set by hand"
    cell["source"] = "\n".join(lines)
    triage.write_text(json.dumps(page, indent=1))


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("jupyterlab")
    server = LabServer(base / "lab")
    server.up()
    scenario = start_scenario("idle_in_transaction_timeout", server, base / "work")
    root = base / "root"
    root.mkdir()
    _notebook_copy(root, scenario)
    port, token = free_port(), "playbook-test-token"
    env = {
        **os.environ,
        **_kernel_dirs(base),
        "JUPYTER_CONFIG_DIR": str(base / "config"),  # nobody's own settings
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("PLAYBOOK_LIVE", None)
    # No "official Jupyter news?" prompt over the screenshots (and no request for it).
    news = base / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))
    log = (base / "jupyterlab.log").open("w")
    lab = subprocess.Popen(
        [str(VENV_BIN / "jupyter-lab"), "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=None", "--ServerApp.port_retries=0",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            assert lab.poll() is None, (base / "jupyterlab.log").read_text()[-2000:]
            return False

    artifacts = os.environ.get("PLAYBOOK_TEST_ARTIFACTS")
    shots = (Path(artifacts) if artifacts else base) / "screenshots-jupyterlab"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        wait_until(ready, timeout=60, what="JupyterLab answering")
        yield Lab(
            url=f"{url}/lab/tree/00_triage.ipynb?token={token}", root=root, shots=shots, scenario=scenario
        )
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
        log.close()
        scenario.stop()
        server.destroy()


def test_triage_live_in_jupyterlab_interrupted_keeps_the_window(jupyterlab: Lab) -> None:
    """Run All, at least three redraws of the one live figure, an interrupt, the cells below."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: `make install` installs it as root"
    wait_until(jupyterlab.scenario.signature_seen, timeout=60, what="the incident under way")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(jupyterlab.url)
        # The project's kernel, found without a "Select Kernel" dialog.
        page.wait_for_selector(".jp-NotebookPanel", timeout=60_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-NotebookPanel-toolbar')]"
            ".some(t => t.innerText.includes('pg-session-playbook'))",
            polling=250,
            timeout=60_000,
        )

        started = time.monotonic()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

        # The live figure: one output, redrawn in place at least three times (tick and image change).
        page.wait_for_function(SEEN_JS, polling=250, timeout=90_000)
        seen = page.evaluate("() => [window.pbTicks.size, window.pbImages.size]")
        live_at = time.monotonic() - started
        assert page.locator(".pb-live").count() == 1, "one live figure, updated in place"
        page.locator(".pb-live").scroll_into_view_if_needed()
        page.screenshot(path=str(jupyterlab.shots / "live.png"))

        # Interrupt mid-window, as a user does with the stop button.
        page.locator("[data-jp-item-name='interrupt'] button, [data-jp-item-name='interrupt']").first.click()
        page.wait_for_function(
            "() => document.body.innerText.includes('window cut short at')", polling=250, timeout=60_000
        )
        # Every cell below ran on what was kept: the last one (root causes) has its output.
        page.wait_for_function(
            """() => {
                const cells = [...document.querySelectorAll('.jp-CodeCell')];
                const last = cells[cells.length - 1];
                const prompts = cells.map(c => c.querySelector('.jp-InputPrompt').innerText);
                return !prompts.some(p => p.includes('*'))
                    && last.querySelectorAll('.jp-OutputArea-output').length > 0;
            }""",
            polling=250,
            timeout=120_000,
        )
        finished = time.monotonic() - started
        verdict = page.locator(".pb-verdict").first
        verdict.scroll_into_view_if_needed()
        page.screenshot(path=str(jupyterlab.shots / "interrupted-verdict.png"))
        page.locator(".pb-live").scroll_into_view_if_needed()
        page.screenshot(path=str(jupyterlab.shots / "interrupted-live.png"))

        shown_errors = page.locator("[data-mime-type='application/vnd.jupyter.error']").count()
        verdict_text = verdict.inner_text()
        live_text = page.locator(".pb-live").inner_text()
        read_next = page.locator(".pb-verdict a", has_text=".ipynb").all_inner_texts()
        browser.close()

    print(f"live: {seen[0]} ticks, {seen[1]} images in {live_at:.1f} s; every cell ran in {finished:.1f} s")
    assert shown_errors == 0, "a cell shows an error"
    assert "window cut short at" in verdict_text, verdict_text
    assert "window cut short at" in live_text, live_text
    assert verdict_text.startswith(("CRITICAL", "WARNING")), verdict_text  # the sampled incident, diagnosed
    assert read_next and all((jupyterlab.root / name).exists() for name in read_next), read_next
    assert not errors, errors


def test_opened_by_hand_with_only_a_dsn(jupyterlab: Lab) -> None:
    """The README's interactive paragraph (only `dsn` set): no zone claimed for a log that was not
    read, "Read next" names a notebook that is beside this one, and the verdict without the logs
    is weaker than with them (the server's words are what make it critical)."""
    from playbook import notebook as pb

    evidence = pb.load_or_collect(dsn=jupyterlab.scenario.dsn, duration=4, interval=0.5, live=False)
    page = str(pb.verdict(evidence, "triage").data)
    assert "app log read in" not in page and "server log read in" not in page, page
    summary = pb.summary_of(evidence)
    print(f"only a dsn: {summary['status']}; root causes {[c['category'] for c in summary['root_causes']]}")
    assert summary["status"] in ("ok", "warning"), summary["root_causes"]
    if summary["root_causes"]:
        target = page.split('<b>Read next:</b> <a href="', 1)[1].split('"', 1)[0]
        assert target.endswith(".ipynb") and (REPO / "notebooks" / target).exists(), target
        assert target in str(pb.next_step(evidence).data)


def test_papermill_renders_the_final_figures_only(jupyterlab: Lab, tmp_path: Path) -> None:
    """papermill on its own (README), collecting: no live figure in the executed notebook, no
    redraws in the page a run shares; the notebook runs on the kernel its metadata names."""
    import papermill

    out = tmp_path / "triage.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "00_triage.ipynb"),
        str(out),
        parameters={"dsn": jupyterlab.scenario.dsn, "duration": 3, "interval": 0.5},
        cwd=str(tmp_path),
        progress_bar=False,
    )
    text = out.read_text()
    assert "pb-live" not in text and "live · tick" not in text
    assert json.loads(text)["metadata"]["kernelspec"]["name"] == KERNEL


def test_an_interrupt_keeps_the_window_only_where_asked(jupyterlab: Lab) -> None:
    """The interrupt path without a browser: a KeyboardInterrupt at the third tick (here raised by
    the live view's callback, as a kernel interrupt lands in it while it draws) ends the window with
    three ticks kept and the warning said; where nobody asked to keep it (`playbook run`), the
    interrupt ends the collection (the CLI removes its partial report)."""
    from playbook.collect.collection import collect_evidence
    from playbook.notebook import request_of
    from playbook.report.summary import evidence_warnings
    from playbook.target import resolve_target

    request = request_of(dsn=jupyterlab.scenario.dsn, duration=30, interval=0.2)
    ticks: list[float] = []

    def third_tick_interrupts(tick: object, _context: object) -> None:
        ticks.append(time.monotonic())
        if len(ticks) == 3:
            raise KeyboardInterrupt

    started = time.monotonic()
    evidence = collect_evidence(
        resolve_target(request.dsn), request, on_tick=third_tick_interrupts, keep_on_interrupt=True
    )
    assert time.monotonic() - started < 20, "the window ended at the interrupt, not after 30 s"
    assert len(evidence.frames["activity_ticks"]) == 3
    assert evidence.manifest["window"]["duration_s"] < 5
    sampling = evidence.snapshot("sampling")
    assert sampling["cut_short_at_s"] < 5 and sampling["duration_s"] == 30
    assert any(w.startswith("window cut short at ") and w.endswith(" s of 30 s by an interrupt")
               for w in evidence_warnings(evidence)), evidence_warnings(evidence)  # fmt: skip

    ticks.clear()
    with pytest.raises(KeyboardInterrupt):
        collect_evidence(resolve_target(request.dsn), request, on_tick=third_tick_interrupts)

"""`playbook demo`: every lab scenario, diagnosed by a real `playbook run`, scored against its cause.

Each scenario runs on a lab server of its own (about a second to create), so scenarios that
restart, crash or reconfigure a server run side by side without touching each other. The run is
the CLI in a subprocess, exactly as a user would start it, with --since at the scenario's start.

Then "fix and prove": for one diagnosed scenario (the first of FIX_AND_PROVE that passed), the
top finding's first block that applies (playbook/lab/fixes.py) is applied for real and the
scenario rerun with it on a fresh server; the scorecard shows its errors before and after, and
what else the evidence shows (server kills, lost connections).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import jinja2
from rich.console import Console
from rich.table import Table

from playbook.diagnose.fix_text import fenced_blocks
from playbook.errors import PlaybookError
from playbook.extras import require
from playbook.lab.fixes import NotApplicable, fix_from_block, outcome
from playbook.lab.scenarios import SCENARIOS, start_scenario
from playbook.lab.scenarios import unavailable as scenario_unavailable
from playbook.lab.server import LabServer
from playbook.lab.wait import DeadlineExceeded, wait_until

WARM_UP_TIMEOUT_S = 30.0  # an incident that has not shown itself by then is a failed scenario
# The scenarios "fix and prove" picks from, in order: each recurs every few seconds, so a short
# rerun shows whether the fix holds.
FIX_AND_PROVE = ("idle_session_timeout", "pgbouncer_idle_timeout", "reset_path", "nat_drop")
PROVE_WINDOW_S = (10.0, 20.0)  # the fixed rerun: the run's duration, within these bounds
console = Console(stderr=True)


@dataclass
class Score:
    scenario: str
    expected: str | None
    top_cause: str | None
    passed: bool
    seconds: float
    report: str
    status: str
    note: str = ""
    app_errors: int = 0  # the application's errors while the scenario ran


@dataclass
class FixProof:
    """One scenario rerun with its top finding's fix applied: errors before and after."""

    scenario: str
    finding: str
    block: str  # the fenced block's kind (sql, python, ini …)
    text: str
    before_errors: int
    before_seconds: float
    after_errors: int
    after_seconds: float
    after: str  # what the rerun's evidence shows, in words
    cured: bool
    note: str = ""


def _run_playbook(
    dsn: str,
    out: Path,
    *,
    duration: float,
    since: datetime,
    logs: Sequence[Path],
    app_logs: Sequence[Path],
    pgbouncer: str | None = None,
    pgbouncer_logs: Sequence[Path] = (),
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "playbook.cli",
        "run",
        "--dsn",
        dsn,
        "--duration",
        str(duration),
        "--interval",
        "0.5",
        "--since",
        since.isoformat(),
        "--out",
        str(out),
        "--jobs",
        "1",
        # triage and the pages of what was found, as the fleet renders: every page of every scenario
        # cost the demo a minute and a half
        "--notebooks",
        "relevant",
    ]
    for log in logs:
        command += ["--server-log", str(log)]
    for log in app_logs:
        command += ["--app-log", str(log)]
    if pgbouncer:
        command += ["--pgbouncer", pgbouncer]
    for log in pgbouncer_logs:
        command += ["--pgbouncer-log", str(log)]
    return subprocess.run(command, capture_output=True, text=True, timeout=duration + 300)


def score_scenario(name: str, out: Path, labs: Path, duration: float) -> Score:
    spec = SCENARIOS[name]
    started = time.monotonic()
    server = LabServer(labs / name)
    report = out / name
    try:
        server.up()
        since = datetime.now(timezone.utc)
        with start_scenario(name, server, labs / f"{name}-work") as running:
            if spec.expected_category:
                wait_until(running.signature_seen, timeout=WARM_UP_TIMEOUT_S, what=f"the {name} incident")
            done = _run_playbook(
                running.dsn,
                report,
                duration=duration,
                since=since,
                logs=[running.server_log],
                app_logs=[running.app_log],
                pgbouncer=running.pgbouncer.console_dsn() if running.pgbouncer else None,
                pgbouncer_logs=[running.pgbouncer.log_file] if running.pgbouncer else [],
            )
            errors = running.app_errors()
        if done.returncode == 3 or not (report / "summary.json").exists():
            raise PlaybookError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "run failed")
        summary = json.loads((report / "summary.json").read_text())
        causes = summary["root_causes"]
        top = causes[0]["category"] if causes else None
        passed = top == spec.expected_category
        if spec.expected_category is None:  # healthy: no root cause and no critical finding at all
            passed = passed and all(f["severity"] != "critical" for f in summary["findings"])
        return Score(
            name,
            spec.expected_category,
            top,
            passed,
            round(time.monotonic() - started, 1),
            str(report / "index.html"),
            summary["status"],
            app_errors=errors,
        )
    except (PlaybookError, DeadlineExceeded, subprocess.TimeoutExpired) as exc:
        return Score(
            name,
            spec.expected_category,
            None,
            False,
            round(time.monotonic() - started, 1),
            str(report / "index.html"),
            "error",
            str(exc)[:200],
        )
    finally:
        server.destroy()


def prove_fix(score: Score, labs: Path, window: float) -> FixProof:
    """Apply the top finding's first applicable block to `score`'s scenario, rerun it for `window`
    seconds on a fresh lab server and read the outcome from its evidence."""
    summary = json.loads((Path(score.report).parent / "summary.json").read_text())
    choice: tuple[str, str, str, Any] | None = None
    for finding in summary["findings"]:
        for kind, text in fenced_blocks(finding["recommendation"]):
            try:
                choice = (finding["id"], kind, text, fix_from_block(kind, text))
            except NotApplicable:
                continue
            break
        if choice is not None or finding["severity"] != "info":
            break  # the top finding's own fix, or none
    if choice is None:
        raise PlaybookError(f"the top finding of {score.scenario} offers no block the lab can apply")
    finding_id, kind, text, fix = choice
    server = LabServer(labs / f"{score.scenario}-fixed")
    try:
        server.up()
        with start_scenario(
            score.scenario, server, labs / f"{score.scenario}-fixed-work", fix=fix
        ) as running:
            # the same traffic, bursts and idle gaps that crossed the limits unfixed, for the window
            wait_until(lambda: running.elapsed() >= window or None, timeout=window + 30, what="the rerun")
            after = outcome(running)
    finally:
        server.destroy()
    return FixProof(
        score.scenario,
        finding_id,
        kind,
        text,
        score.app_errors,
        score.seconds,
        after.app_errors,
        after.seconds,
        after.describe(),
        after.cured,
    )


def print_fix_proof(proof: FixProof) -> None:
    if proof.note:
        print(f"fix and prove: {proof.scenario}: {proof.note}")
        return
    verdict = "the incident is gone" if proof.cured else "the incident is NOT gone"
    print(
        f"fix and prove: {proof.scenario}, {proof.finding}'s {proof.block} block applied, rerun\n"
        f"  before: {proof.before_errors} errors in {proof.before_seconds:.0f} s / "
        f"after: {proof.after_errors} errors in {proof.after_seconds:.0f} s ({proof.after}): {verdict}"
    )


def print_scorecard(scores: list[Score], seconds: float) -> None:
    table = Table(
        title=f"pg-session-playbook demo: {sum(s.passed for s in scores)}/{len(scores)} passed "
        f"in {seconds:.0f} s"
    )
    for column in ("scenario", "expected cause", "top-ranked cause", "result", "seconds", "report"):
        table.add_column(column)
    for s in scores:
        table.add_row(
            s.scenario,
            s.expected or "(none)",
            s.top_cause or "(none)",
            "[green]PASS[/]" if s.passed else f"[red]FAIL[/] {s.note}",
            f"{s.seconds:.0f}",
            s.report,
        )
    Console(width=200).print(table)


def write_scorecard_page(
    out: Path, scores: list[Score], seconds: float, proof: FixProof | None = None
) -> Path:
    env = jinja2.Environment(loader=jinja2.PackageLoader("playbook.report", "templates"), autoescape=True)
    page = env.get_template("demo.html.j2").render(
        scores=[asdict(s) for s in scores],
        seconds=seconds,
        out=out.resolve(),
        proof=asdict(proof) if proof else None,
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    (out / "scorecard.json").write_text(json.dumps([asdict(s) for s in scores], indent=2))
    if proof is not None:
        (out / "fix_and_prove.json").write_text(json.dumps(asdict(proof), indent=2))
    return path


def run_demo(
    *, out: Path, duration: float = 15.0, jobs: int = 3, scenarios: Sequence[str] | None = None
) -> int:
    require("lab", "playbook demo")  # every scenario runs on a lab server of its own
    names = list(scenarios or SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise PlaybookError(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    # Scenarios that need more than Python (the Prisma 7 ones need node and the lab's npm packages):
    # skipped out loud by default, refused when asked for by name.
    cannot = {name: reason for name in names if (reason := scenario_unavailable(name))}
    if cannot and scenarios:
        raise PlaybookError(next(iter(cannot.values())))
    for reason in cannot.values():
        console.print(f"skipped: {reason}")
    names = [n for n in names if n not in cannot]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlaybookError(f"cannot write the demo to {out}: {exc.strerror or exc}") from None
    labs = Path(tempfile.mkdtemp(prefix="playbook-demo-"))
    started = time.monotonic()
    console.print(
        f"running {len(names)} lab scenarios, {jobs} side by side, each diagnosed by `playbook run`…"
    )
    try:
        # One process per scenario: loggers, pools and threads of one never see another's.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(score_scenario, name, out, labs, duration) for name in names]
            scores = []
            for future in futures:
                score = future.result()
                console.print(
                    f"  {score.scenario}: {'PASS' if score.passed else 'FAIL'} "
                    f"(top cause {score.top_cause or 'none'}, {score.seconds:.0f} s)"
                )
                scores.append(score)
        seconds = time.monotonic() - started
        proof = _fix_and_prove(scores, labs, duration)
    finally:
        shutil.rmtree(labs, ignore_errors=True)
    print_scorecard(scores, seconds)
    if proof is not None:
        print_fix_proof(proof)
    page = write_scorecard_page(out, scores, seconds, proof)
    print(f"scorecard: {page.resolve()}")
    proven = proof is None or proof.cured  # a fix that could not be proven fails the demo
    return 0 if all(s.passed for s in scores) and proven else 1


def _fix_and_prove(scores: list[Score], labs: Path, duration: float) -> FixProof | None:
    """The fix-and-prove step on the first FIX_AND_PROVE scenario that passed (None: none ran)."""
    passed = {s.scenario: s for s in scores if s.passed}
    name = next((n for n in FIX_AND_PROVE if n in passed), None)
    if name is None:
        return None
    window = min(max(duration, PROVE_WINDOW_S[0]), PROVE_WINDOW_S[1])
    console.print(f"fix and prove: {name}, its top finding's fix applied, rerun for {window:.0f} s…")
    # a process of its own, as every scenario: its pools and loggers see nothing of the others
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        try:
            return pool.submit(prove_fix, passed[name], labs, window).result()
        except (PlaybookError, DeadlineExceeded) as exc:
            score = passed[name]
            return FixProof(
                name, "", "", "", score.app_errors, score.seconds, 0, 0.0, "", False, str(exc)[:200]
            )

"""Every fix the playbook offers for a lab scenario, proven: applied for real, the incident gone.

For each lab scenario the module runs it on a server of its own, diagnoses it from a real
collection (the finding must appear, with the block), stops it, applies the block as its
destination would (playbook/lab/fixes.py: the SQL run on the server, the DSN parameters in the
workload's conninfo, the psycopg_pool block executed as pasted into the workload's pool, the
node-postgres options into the Prisma app's pg.Pool, the pgbouncer.ini lines into the scenario's
PgBouncer), reruns the scenario over the same traffic and reads the outcome from its evidence
(lab/fixes.py Outcome: the applications' errors, the server log's kills and losses, PgBouncer's
closes, the path's cuts, the pools' lost connections).

PROOFS is the table: (scenario, finding, block) and what the block must achieve, "cures" (no
application error and no sign of the incident at all) or "masks" (no application error while
the incident goes on: check-on-checkout replacing what was cut; its text must say it masks).
NOT_PROVEN lists every other block a finding offers for a scenario, with why it is not proven
here; test_every_offered_block_is_in_the_table fails when a diagnosis offers one in neither.
README.md's finding table names the proven ones (test_the_readme_names_the_proven_fixes).

The scenarios run three at a time, each in a process of its own (as `playbook demo` runs them):
the module takes about 100-150 s on a loaded 2-core machine.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from playbook.diagnose.fix_text import fenced_blocks
from playbook.diagnose.pool_snippets import stack_fix
from playbook.lab.fixes import NotApplicable, Outcome, ScenarioFix, fix_from_block, outcome
from playbook.lab.scenarios import SCENARIOS, RunningScenario, start_scenario
from playbook.lab.scenarios import unavailable as scenario_unavailable
from playbook.lab.server import LabServer
from playbook.lab.wait import wait_until

REPO = Path(__file__).resolve().parents[1]
JOBS = 3
SIGNATURE_TIMEOUT_S = 30.0
# The "after" run: long enough for the unfixed incident to recur several times (BURST: 1 s of
# traffic, 3 s idle; LONG_GAPS: 1 s, 4 s; restarts at 2 s, then every 8 s).
OBSERVE_S = {
    "idle_session_timeout": 10.0,
    "reset_path": 10.0,
    "nat_drop": 11.0,
    "admin_terminate": 11.0,
    "server_restart": 7.0,
    "pgbouncer_idle_timeout": 10.0,
    "pgbouncer_saturation": 6.0,
    "prisma_forgotten_flow": 10.0,
    "idle_in_transaction_timeout": 6.0,
    "too_many_connections": 8.0,
}
# How long the diagnosis samples: a path's cut-off is measured from sessions lost while sampled,
# so the network scenarios are sampled over two idle gaps.
COLLECT_S = {"reset_path": 9.0, "nat_drop": 11.0, "prisma_forgotten_flow": 9.0, "leak": 12.0}
DEFAULT_COLLECT_S = 5.0


@dataclass(frozen=True)
class Proof:
    scenario: str
    finding: str
    block: str  # the fenced block's kind, or "prose" for a fix the finding words without a block
    expect: str  # "cures", "masks", or "fails" (a block known not to end the incident: see `why`)
    prose_fix: tuple[str, ...] = ()  # for "prose" or code: the words of the finding the fix applies
    code_fix: tuple[tuple[str, Any], ...] = ()  # for a code block: the workload option standing for it
    why: str = ""  # for "fails": what is wrong with the block

    @property
    def id(self) -> str:
        return f"{self.scenario}-{self.finding}-{self.block}"


PROOFS = [
    Proof("idle_session_timeout", "TMO-001", "sql", "cures"),
    Proof("idle_session_timeout", "TMO-001", "python", "cures"),
    Proof("reset_path", "NET-001", "python", "cures"),
    Proof("reset_path", "NET-001", "sql", "cures"),
    Proof("nat_drop", "NET-002", "python", "cures"),
    Proof("nat_drop", "NET-002", "sql", "cures"),
    Proof("pgbouncer_idle_timeout", "BNC-001", "ini", "cures"),
    Proof("pgbouncer_idle_timeout", "BNC-001", "python", "cures"),
    Proof("pgbouncer_saturation", "BNC-004", "ini", "cures"),
    Proof("prisma_forgotten_flow", "NET-002", "javascript", "cures"),
    Proof("prisma_forgotten_flow", "NET-002", "sql", "cures"),
    # A code pattern: the workload's slow call moved out of the transaction, as the block says.
    Proof(
        "idle_in_transaction_timeout",
        "LEAK-005",
        "python",
        "cures",
        ("do slow calls (HTTP, queues) outside the `with` block",),
        (("think_outside_transaction", True),),
    ),
    # PgBouncer in front of the three pools, as POOL-002 offers, sized from the evidence
    # (default_pool_size = 13, the usable slots): the server refuses no login any more, but a pooler
    # adds no capacity (30 workers holding 1 s queries want 30 connections, the server leaves 13),
    # so the application's pools still time out waiting.
    Proof(
        "too_many_connections",
        "POOL-002",
        "ini",
        "fails",
        why="sized to the 13 usable slots it ends the refused logins, but a pooler adds no capacity",
    ),
    # No configuration stops an operator's pg_terminate_backend or a restart: the finding's own
    # words (check on checkout; and retry the unit of work once) keep the application error-free.
    Proof("admin_terminate", "SRV-003", "prose", "masks", ("with check-on-checkout",)),
    Proof(
        "server_restart",
        "SRV-001",
        "prose",
        "masks",
        ("check=ConnectionPool.check_connection", "retry the unit of work once"),
    ),
]
# (scenario, finding, block kind) -> why it is not proven here. A finding's block offered for a
# scenario must be here or in PROOFS.
NOT_PROVEN = {
    ("leak", "LEAK-001", "sql"): (
        "idle_in_transaction_session_timeout ends the leaked sessions (a kill by design): it bounds "
        "the harm, the cure is the code that returns its connections"
    ),
}
# Blocks of a stack the lab does not run, and the informational keepalive advice offered beside
# every incident (NET-003 at info), are outside the table.
OUTSIDE = {"shell"}  # Prisma 6's URL parameters: the lab's Prisma is 7, with the driver adapter


# -- running one scenario's proofs, in a process of its own ------------------------------------------
def _signs_of_cut(running: RunningScenario) -> int:
    stats = running.stats().get("proxy") or {}
    return sum(int(stats.get(key, 0)) for key in ("idle_resets", "drops", "dropped_resets"))


def diagnose_scenario(name: str, server: LabServer, workdir: Path) -> list[dict[str, Any]]:
    """Run `name` unfixed, collect while it runs, and return its findings as plain dicts."""
    from playbook.collect.collection import collect_evidence
    from playbook.diagnose import diagnose_all
    from playbook.request import RunRequest
    from playbook.target import Target

    since = datetime.now(timezone.utc)
    with start_scenario(name, server, workdir) as running:
        wait_until(running.signature_seen, timeout=SIGNATURE_TIMEOUT_S, what=f"the {name} incident")
        before = outcome(running)
        request = RunRequest(
            duration=COLLECT_S.get(name, DEFAULT_COLLECT_S),
            interval=0.5,
            since=since,
            server_logs=(running.server_log,),
            app_logs=(running.app_log,),
            pgbouncer_dsn=running.pgbouncer.console_dsn() if running.pgbouncer else None,
            pgbouncer_logs=(running.pgbouncer.log_file,) if running.pgbouncer else (),
            progress=False,
        )
        evidence = collect_evidence(Target(running.dsn), request)
    return [
        {
            "id": f.id,
            "severity": f.severity.value,
            "consequence_of": f.consequence_of,
            "recommendation": f.recommendation,
            "blocks": fenced_blocks(f.recommendation),
            "before": before.__dict__,
        }
        for f in diagnose_all(evidence)
    ]


def fix_of(proof: Proof, findings: list[dict[str, Any]]) -> ScenarioFix:
    """The fix `proof` applies, from the finding's own block (or words, for "prose")."""
    matching = [f for f in findings if f["id"] == proof.finding]
    if not matching:
        raise AssertionError(f"{proof.finding} was not found: {[f['id'] for f in findings]}")
    finding = matching[0]
    if proof.block == "prose":
        for words in proof.prose_fix:
            if words not in finding["recommendation"]:
                raise AssertionError(f"{proof.finding} no longer says {words!r}: {finding['recommendation']}")
        return ScenarioFix(
            pool={"check": ConnectionPool.check_connection},
            retry_once=any("retry" in words for words in proof.prose_fix),
        )
    blocks = [text for kind, text in finding["blocks"] if kind == proof.block]
    if not blocks:
        raise AssertionError(f"{proof.finding} offers no {proof.block} block: {finding['recommendation']}")
    if proof.code_fix:
        for words in proof.prose_fix:
            if words not in blocks[0]:
                raise AssertionError(f"{proof.finding}'s block no longer says {words!r}: {blocks[0]}")
        return ScenarioFix(service=dict(proof.code_fix))
    return fix_from_block(proof.block, blocks[0])


def run_fixed(name: str, fix: ScenarioFix, server: LabServer, workdir: Path) -> Outcome:
    """`name` again with `fix` applied, over OBSERVE_S of its traffic; its outcome."""
    with start_scenario(name, server, workdir, fix=fix) as running:
        window = OBSERVE_S[name]
        # The traffic is the stimulus (bursts and idle gaps that crossed every limit unfixed): it
        # runs its window, and the evidence is read after.
        wait_until(
            lambda: running.elapsed() >= window or None, timeout=window + 30, what=f"{window} s of {name}"
        )
        return outcome(running)


def prove_scenario(name: str, proofs: list[Proof], base: str) -> dict[str, Any]:
    """Diagnose `name`, then apply each of `proofs` to a rerun; plain data for the parent process."""
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    server = LabServer(root / "lab")
    started = time.monotonic()
    result: dict[str, Any] = {"findings": [], "proofs": {}, "error": None}
    try:
        server.up()
        result["findings"] = diagnose_scenario(name, server, root / "before")
        result["diagnosed_s"] = round(time.monotonic() - started, 1)
        for n, proof in enumerate(proofs):
            try:
                fix = fix_of(proof, result["findings"])
            except (AssertionError, NotApplicable) as exc:
                result["proofs"][proof.id] = {"error": str(exc)}
                continue
            after = run_fixed(name, fix, server, root / f"after-{n}")
            result["proofs"][proof.id] = {"outcome": after.__dict__, "fix": repr(fix)}
    except Exception as exc:  # reported by every test of the scenario, with its cause
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        server.destroy()
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


# -- the module's runs: the scenarios the selected tests need, three at a time ----------------------
def _selected_scenarios(session: pytest.Session) -> set[str]:
    names: set[str] = set()
    for item in session.items:
        module = getattr(item, "module", None)
        if module is None or module.__name__ != __name__:
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "proof" in params:
            names.add(params["proof"].scenario)
        elif "scenario" in params:
            names.add(params["scenario"])
    return names


@pytest.fixture(scope="module")
def results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    names = sorted(_selected_scenarios(request.session), key=lambda n: -len(_proofs_of(n)))
    runnable = [n for n in names if not scenario_unavailable(n)]
    base = tmp_path_factory.mktemp("fix-proofs")
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=JOBS, mp_context=get_context("spawn")) as pool:
        futures = {n: pool.submit(prove_scenario, n, _proofs_of(n), str(base)) for n in runnable}
        done = {n: future.result(timeout=600) for n, future in futures.items()}
    print(f"\nfix proofs: {len(runnable)} scenarios in {time.monotonic() - started:.1f} s")  # noqa: T201
    for name in runnable:
        print(f"  {name}: {done[name]['seconds']} s {done[name]['error'] or ''}")  # noqa: T201
        for key, proof in done[name]["proofs"].items():
            said = proof.get("error") or Outcome(**proof["outcome"]).describe()
            if proof.get("outcome", {}).get("errors"):
                said += f"; first error: {proof['outcome']['errors'][0]}"
            print(f"    {key}: {said}")  # noqa: T201
    yield done


def _proofs_of(name: str) -> list[Proof]:
    return [p for p in PROOFS if p.scenario == name]


def _need(results: dict[str, Any], name: str) -> dict[str, Any]:
    reason = scenario_unavailable(name)
    if reason:
        pytest.skip(reason)
    result = results[name]
    assert result["error"] is None, result["error"]
    return result


# -- the table ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("proof", PROOFS, ids=[p.id for p in PROOFS])
def test_the_fix_ends_the_incident(proof: Proof, results: dict[str, Any]) -> None:
    result = _need(results, proof.scenario)
    found = {f["id"]: f for f in result["findings"]}
    assert proof.finding in found, f"{proof.scenario}: {proof.finding} not diagnosed ({list(found)})"
    before = found[proof.finding]["before"]
    unfixed = Outcome(**{**before, "errors": tuple(before["errors"])})
    assert not unfixed.cured, f"the unfixed run showed no incident to cure: {unfixed.describe()}"
    done = result["proofs"][proof.id]
    assert "error" not in done, done.get("error")
    after = Outcome(**{**done["outcome"], "errors": tuple(done["outcome"]["errors"])})
    served = f"{proof.id} with {done['fix']}: {after.describe()}; errors {list(after.errors)}"
    if proof.expect == "cures":
        assert after.cured, served
    elif proof.expect == "fails":  # when this fails, the block was fixed: move it to "cures"
        assert not after.cured, served
    else:
        assert after.masked or after.cured, served
        # a fix that only masks says so where it is offered (the block's or the finding's words)
        text = found[proof.finding]["recommendation"]
        assert re.search(r"\bmask", text) or proof.block == "prose", text


@pytest.mark.parametrize("scenario", sorted(n for n, spec in SCENARIOS.items() if spec.expected_category))
def test_every_offered_block_is_in_the_table(scenario: str, results: dict[str, Any]) -> None:
    """Every block a warning or critical finding offers for the scenario is proven or said why not."""
    result = _need(results, scenario)
    proven = {(p.finding, p.block) for p in PROOFS if p.scenario == scenario}
    unproven = {(k[1], k[2]) for k in NOT_PROVEN if k[0] == scenario}
    offered = {
        (f["id"], kind)
        for f in result["findings"]
        if f["severity"] != "info" and f["consequence_of"] is None and not f["id"].startswith("NET-003")
        for kind, _ in f["blocks"]
        if kind not in OUTSIDE
    }
    # NET-001 and NET-002 offer the same blocks for one path: one of them proves both
    if {"NET-001", "NET-002"} <= {f["id"] for f in result["findings"]}:
        offered = {(("NET-001" if fid == "NET-002" else fid), kind) for fid, kind in offered}
    assert offered - proven - unproven == set(), f"{scenario}: blocks in neither table: {result['findings']}"
    stale = unproven - offered
    assert not stale, f"{scenario}: NOT_PROVEN names blocks no finding offers now: {stale}"


def test_the_readme_names_the_proven_fixes() -> None:
    """README.md's finding table says which fixes are proven, and by which test: the same set."""
    readme = (REPO / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        test = re.search(r"`test_fix_proofs::([a-z_]+-[A-Z]+-\d{3}-[a-z]+)`", line)
        if test and line.startswith("|"):
            result = line.split("|")[4].strip().strip("*").split("*")[0].split(":")[0]
            rows[test.group(1)] = result
    assert rows == {p.id: p.expect for p in PROOFS}, set(rows.items()) ^ {(p.id, p.expect) for p in PROOFS}


def test_blocks_are_read_as_their_destination_reads_them() -> None:
    """No server needed: each kind of block becomes the settings its destination would take."""
    (python,) = [
        t
        for k, t in fenced_blocks(
            stack_fix("psycopg", max_idle_s=2, max_lifetime_s=None, keepalives_idle_s=1)
        )
        if k == "python"
    ]
    fix = fix_from_block("python", python)
    assert fix.pool["min_size"] == 0 and fix.pool["max_idle"] == 0.4  # (4 + 1) periods under 2 s
    assert fix.pool["check"] is ConnectionPool.check_connection and fix.conninfo["keepalives_idle"] == 1
    assert fix_from_block("dsn", "keepalives=1 keepalives_idle=5").conninfo == {
        "keepalives": "1",
        "keepalives_idle": "5",
    }
    assert fix_from_block("ini", "[pgbouncer]\n; why\nclient_idle_timeout = 0").pgbouncer == {
        "client_idle_timeout": 0
    }
    sql = fix_from_block("sql", "ALTER ROLE lab_app SET idle_session_timeout = 0;\nSELECT pg_reload_conf();")
    assert sql.sql == ("ALTER ROLE lab_app SET idle_session_timeout = 0", "SELECT pg_reload_conf()")
    js = fix_from_block("javascript", "new PrismaPg({ idleTimeoutMillis: 1000, keepAlive: true })")
    assert js.prisma == {"idle_timeout_ms": 1000} and js.unused == ("keepAlive: true",)


def test_a_fix_with_a_placeholder_is_not_applied() -> None:
    with pytest.raises(NotApplicable, match="<n>"):
        fix_from_block("ini", "[pgbouncer]\ndefault_pool_size = <n>")
    with pytest.raises(NotApplicable, match="cannot undo"):
        fix_from_block("sql", "DROP ROLE lab_app;")
    with pytest.raises(NotApplicable, match="code pattern"):
        fix_from_block("python", "with pool.connection() as conn:\n    conn.execute(...)")
    assert set(SCENARIOS) >= {p.scenario for p in PROOFS}

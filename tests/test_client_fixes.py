"""The fixes to paste, per client stack: valid in their own language, never a value the stack ignores."""

from __future__ import annotations

import ast
import configparser
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from psycopg_pool import ConnectionPool

from playbook.diagnose.fix_text import fenced_blocks
from playbook.diagnose.pool_snippets import RETRY_ADVICE, STACKS, can_enforce, stack_fix, transaction_fix
from playbook.errors import PlaybookError
from playbook.lab.server import APP_ROLE, LAB_DATABASE, LabServer
from playbook.probes.keepalive import client_keepalive_settings

LIMITS = [
    {"max_idle_s": 120.0, "max_lifetime_s": 240.0, "keepalives_idle_s": None},
    {"max_idle_s": None, "max_lifetime_s": None, "keepalives_idle_s": 60},
    {"max_idle_s": 2.5, "max_lifetime_s": 4.0, "keepalives_idle_s": None},
]


def code(fix: str, kind: str) -> str:
    """The fenced block of `kind` in a fix (exactly one)."""
    (text,) = [text for found, text in fenced_blocks(fix) if found == kind]
    return text


@pytest.mark.parametrize("limits", LIMITS, ids=["limits", "keepalives", "short"])
@pytest.mark.parametrize("stack", ["psycopg", "psycopg2", "sqlalchemy", "asyncpg"])
def test_python_fixes_are_valid_python(stack: str, limits: dict[str, float | None]) -> None:
    python = code(stack_fix(stack, **limits), "python")  # type: ignore[arg-type]
    # asyncpg's create_pool is awaited at the top of the snippet, as in an async main().
    ast.parse(python.replace("await ", ""))


@pytest.mark.parametrize("stack", ["node-postgres"])
def test_node_fixes_are_valid_javascript(stack: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to check the node-postgres fixes (it ships with the CI machine)")
    for limits in LIMITS:
        script = tmp_path / "fix.js"
        script.write_text(code(stack_fix(stack, **limits), "javascript"))  # type: ignore[arg-type]
        checked = subprocess.run([node, "--check", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_pgbouncer_fixes_are_valid_ini() -> None:
    for limits in LIMITS:
        ini = configparser.ConfigParser()
        ini.read_string(code(stack_fix("pgbouncer", **limits), "ini"))  # type: ignore[arg-type]
        assert ini.has_section("pgbouncer")


def test_hikaricp_is_never_offered_a_value_it_clamps() -> None:
    """HikariCP resets a maxLifetime under 30 s to 30 min: offering 30000 for a 5 s limit is wrong."""
    fix = stack_fix("hikaricp", max_idle_s=2.5, max_lifetime_s=4.0, keepalives_idle_s=None)
    assert "max-lifetime=" not in fix and "idle-timeout=" not in fix
    assert "must be raised where it is set" in fix
    assert not can_enforce("hikaricp", max_idle_s=2.5, max_lifetime_s=4.0)
    ok = stack_fix("hikaricp", max_idle_s=120, max_lifetime_s=240, keepalives_idle_s=None)
    assert "max-lifetime=240000" in ok and "idle-timeout=120000" in ok
    assert can_enforce("hikaricp", max_idle_s=120, max_lifetime_s=240)
    assert can_enforce("psycopg", max_idle_s=2.5, max_lifetime_s=4.0)


def test_sqlalchemy_recycles_by_the_shorter_limit() -> None:
    fix = stack_fix("sqlalchemy", max_idle_s=600, max_lifetime_s=90.7, keepalives_idle_s=None)
    assert "pool_recycle=90," in fix


def pool_call_keywords(python: str) -> dict[str, object]:
    """The literal keyword arguments of the block's pool call, as Python reads them."""
    call = next(
        n for n in ast.walk(ast.parse(python.replace("await ", ""))) if isinstance(n, ast.Call) and n.keywords
    )
    return {k.arg: k.value.value for k in call.keywords if k.arg and isinstance(k.value, ast.Constant)}


def test_asyncpg_idle_limit_comes_with_min_size_0() -> None:
    """asyncpg 0.32 never closes a connection while the pool holds min_size or fewer (pool.py
    _deactivate_inactive_connection; min_size defaults to 10): the inactive lifetime alone does
    nothing against a server idle limit."""
    keywords = pool_call_keywords(
        code(stack_fix("asyncpg", max_idle_s=2, max_lifetime_s=None, keepalives_idle_s=None), "python")
    )
    assert keywords["min_size"] == 0 and keywords["max_inactive_connection_lifetime"] == 2
    keepalive = stack_fix("asyncpg", max_idle_s=None, max_lifetime_s=None, keepalives_idle_s=30)
    assert "min_size=0" in keepalive


def test_sqlalchemy_block_says_it_masks_and_names_what_prevents_the_cut() -> None:
    """QueuePool never closes an idle connection: pool_recycle and pool_pre_ping act at checkout,
    after the server's cut. The block must not present them as a cure."""
    python = code(
        stack_fix("sqlalchemy", max_idle_s=2, max_lifetime_s=None, keepalives_idle_s=None), "python"
    )
    assert pool_call_keywords(python)["pool_recycle"] == 2
    assert "QueuePool never closes an idle connection" in python and "masks the cut" in python
    assert "role-level SQL" in python and "NullPool" in python


def test_hikaricp_keepalive_stays_below_its_lifetime_and_floor() -> None:
    assert "keepalive-time=" not in stack_fix(
        "hikaricp", max_idle_s=None, max_lifetime_s=40, keepalives_idle_s=45
    )
    short = stack_fix("hikaricp", max_idle_s=5, max_lifetime_s=40, keepalives_idle_s=20)
    assert "keepalive-time=" not in short and "keepaliveTime cannot go below 30000 ms" in short


def test_limits_are_never_rounded_up() -> None:
    fix = stack_fix("psycopg", max_idle_s=2.9, max_lifetime_s=4.9, keepalives_idle_s=None)
    assert "max_idle=0.5," in fix and "max_lifetime=4," in fix  # max_idle: 2.9 s over max_size + 1


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_has_a_fix_that_ends_its_transactions(stack: str) -> None:
    fix = transaction_fix(stack)
    assert fix.strip()
    assert any(word in fix.lower() for word in ("commit", "rollback", "roll", "transaction", "begin"))
    if stack in ("psycopg", "psycopg2", "sqlalchemy", "asyncpg"):
        python = code(fix, "python")
        ast.parse(python.replace("async with", "with").replace("await ", "").replace("...", "None"))


def test_prisma_fixes_name_the_url_and_the_adapter() -> None:
    fix = stack_fix("prisma", max_idle_s=60, max_lifetime_s=120, keepalives_idle_s=None)
    kinds = [kind for kind, _ in fenced_blocks(fix)]
    assert kinds == ["shell", "javascript"]
    assert "max_connection_lifetime=120" in code(fix, "shell")


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_ends_with_retry_advice(stack: str) -> None:
    fix = stack_fix(stack, max_idle_s=60, max_lifetime_s=120, keepalives_idle_s=30)
    assert fix.rstrip().endswith(RETRY_ADVICE[stack])


def test_bad_input_is_refused() -> None:
    with pytest.raises(PlaybookError, match="unknown client stack"):
        stack_fix("jdbc-magic", max_idle_s=1, max_lifetime_s=None, keepalives_idle_s=None)
    with pytest.raises(PlaybookError, match="positive number"):
        stack_fix("psycopg", max_idle_s=-1, max_lifetime_s=None, keepalives_idle_s=None)
    with pytest.raises(ValueError, match="needs a limit"):
        stack_fix("psycopg", max_idle_s=None, max_lifetime_s=None, keepalives_idle_s=None)


def test_the_psycopg_fix_builds_a_real_pool_with_its_keepalives(lab: LabServer) -> None:
    """The pasted code runs: a real psycopg_pool on a real server, with the limits and keepalives."""
    fix = stack_fix("psycopg", max_idle_s=240, max_lifetime_s=1800, keepalives_idle_s=60)
    scope: dict[str, object] = {"conninfo": lab.dsn(APP_ROLE, LAB_DATABASE)}
    exec(code(fix, "python"), scope)
    pool = scope["pool"]
    assert isinstance(pool, ConnectionPool)
    try:
        pool.wait(timeout=10)
        assert (pool.max_idle, pool.max_lifetime) == (48, 1800)  # one closed per 240 / (max_size + 1) s
        with pool.connection() as conn:
            assert client_keepalive_settings(conn)["tcp_keepidle_s"] == 60
    finally:
        pool.close()


def test_the_psycopg_idle_fix_retires_every_idle_connection(lab: LabServer) -> None:
    """psycopg_pool's max_idle closes only connections above min_size: the snippet sets min_size=0,
    and on a real server the pool then closes every connection left idle (one per max_idle)."""
    fix = stack_fix("psycopg", max_idle_s=1, max_lifetime_s=None, keepalives_idle_s=None)
    assert "min_size=0," in fix and "max_idle=0.2," in fix
    scope: dict[str, object] = {"conninfo": lab.dsn(APP_ROLE, LAB_DATABASE)}
    exec(code(fix, "python"), scope)
    pool = scope["pool"]
    assert isinstance(pool, ConnectionPool) and pool.min_size == 0
    try:
        held = [pool.getconn(timeout=10), pool.getconn(timeout=10)]
        for conn in held:
            pool.putconn(conn)
        assert pool.get_stats()["pool_size"] == 2
        deadline = time.monotonic() + 20
        while pool.get_stats()["pool_size"] and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the pool's own counter, bounded by the deadline
        assert pool.get_stats()["pool_size"] == 0, pool.get_stats()
    finally:
        pool.close()


def test_a_psycopg_lifetime_limit_alone_cannot_reach_idle_connections() -> None:
    """max_lifetime is checked when a connection is returned (pool.py _return_connection)."""
    assert not can_enforce("psycopg", max_idle_s=None, max_lifetime_s=4.0)
    assert can_enforce("psycopg", max_idle_s=2.0, max_lifetime_s=4.0)
    fix = stack_fix("psycopg", max_idle_s=None, max_lifetime_s=4.0, keepalives_idle_s=None)
    assert "min_size=0" not in fix and "checked when a connection is returned" in fix


def test_pooler_advice_is_sized_to_the_usable_slots() -> None:
    """POOL-002's PgBouncer block on the recorded too_many_connections evidence (max_connections 20,
    3 + 4 reserved, only the application's role seen): default_pool_size at most the 13 usable
    slots, not a fixed 20 the server would refuse."""
    from playbook.diagnose import diagnose_all
    from playbook.evidence import Evidence

    evidence = Evidence.load(Path(__file__).parent / "data" / "evidence" / "too_many_connections")
    finding = next(f for f in diagnose_all(evidence) if f.id == "POOL-002")
    ini = configparser.ConfigParser()
    ini.read_string(code(finding.recommendation, "ini"))
    assert ini.getint("pgbouncer", "default_pool_size") == 13
    assert ini.getint("pgbouncer", "max_db_connections") == 13
    assert ini.getint("pgbouncer", "max_client_conn") >= 100
    assert "multiplexes many client connections onto fewer server connections" in finding.recommendation
    assert "adds no capacity" in finding.recommendation

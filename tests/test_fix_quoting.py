"""Names as users spell them, in every fix: quoted as PostgreSQL, PgBouncer and libpq read them back.

The quoting functions are checked against the server's own quote_ident / quote_literal and keyword
list, libpq's parser (psycopg.conninfo), Python's and Node's. Then every recorded incident is
diagnosed again with its role and database renamed to names that need quoting (`billing-api`,
`o"brien`, `MyApp`, `select`, `отчёты`), and every SQL block of every finding is executed as pasted
on a lab server where those roles and databases exist, beside a plain `myapp` that no fix may
touch: in a transaction that is rolled back, asserting that exactly the named object changed
(ALTER SYSTEM, which cannot run in a transaction, runs through psql on the test's own server and is
read back from pg_file_settings). The pgbouncer.ini blocks that name users are loaded by a real
PgBouncer, which then admits each awkward user to its awkward database.
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from playbook.diagnose import diagnose_all
from playbook.diagnose.findings import Finding
from playbook.diagnose.fix_text import fenced_blocks
from playbook.diagnose.quoting import (
    QUOTED_INI_KEYS_SINCE,
    UnwritableName,
    dsn_pair,
    javascript_string,
    pgbouncer_auth_file_line,
    pgbouncer_connstr_value,
    pgbouncer_ini_key,
    pgbouncer_ini_key_needs_quotes,
    python_string,
    sql_identifier,
    sql_literal,
    uri_component,
)
from playbook.evidence import Evidence
from playbook.lab.pgbouncer_process import PgBouncer, find_pgbouncer
from playbook.lab.server import APP_ROLE, LAB_DATABASE, SUPERUSER, LabServer
from playbook.lab.wait import wait_until
from playbook.report.findings_html import FixRenderer

RECORDED = Path(__file__).parent / "data" / "evidence"
# Names that need quoting: punctuation, an embedded double quote, upper case (which would silently
# name `myapp` unquoted), a reserved keyword, and a non-ASCII name.
NAMES = ("billing-api", 'o"brien', "MyApp", "select", "отчёты")
# A plain name no fix may change: the lower-case twin of MyApp.
CONTROL = "myapp"
# Placeholders a reader fills in (a number the evidence cannot give); anything else in <…> means a
# name from the evidence was lost.
FILL_IN = {"<n>": "7", "<m>": "2", "<seconds>": "60"}
PLACEHOLDER = re.compile(r"<[a-z_]+>")
# Finding ids whose fixes carry SQL: each must be executed at least once (a finding that stops
# offering SQL, or stops being produced from this evidence, fails here and must be looked at).
SQL_FINDINGS = {
    "LEAK-001",
    "TMO-001",
    "TMO-003",
    "TMO-004",
    "POOL-003",
    "BNC-003",
    "NET-001",
    "NET-002",
    "NET-003",
}
AWKWARD = (
    *NAMES,
    CONTROL,
    "",
    "a$b",
    "_ok",
    "1abc",
    "user",
    "name",
    "between",
    "x y",
    "back\\slash",
    "it's",
    "ÉCOLE",
    "tab\there",
    "new\nline",
    "emoji🐘",
    "both'\"\\",
)


# -- the quoting functions against the real parsers ------------------------------------------------
def test_sql_quoting_is_the_servers_own(lab: LabServer) -> None:
    with lab.admin() as conn:
        for name in AWKWARD:
            row = conn.execute("SELECT quote_ident(%s), quote_literal(%s)", [name, name]).fetchone()
            assert row == (sql_identifier(name), sql_literal(name)), name
            # and the server reads them back as the same name and value
            read = conn.execute(f"SELECT {sql_literal(name)} AS {sql_identifier(name or 'x')}")
            assert read.fetchone() == (name,)
            assert read.description is not None and read.description[0].name == (name or "x")


def test_every_keyword_is_quoted_as_the_server_quotes_it(any_server: LabServer) -> None:
    """The generated keyword list (tools/gen_sql_keywords.py) against pg_get_keywords() of every
    PostgreSQL build on the machine."""
    with any_server.admin() as conn:
        words = [w for (w,) in conn.execute("SELECT word FROM pg_get_keywords()").fetchall()]
        assert len(words) > 400
        for word in words:
            (server,) = conn.execute("SELECT quote_ident(%s)", [word]).fetchone() or (None,)
            assert sql_identifier(word) == server, word


def test_dsn_and_uri_values_parse_to_the_names() -> None:
    for name in AWKWARD:
        if not name:
            continue
        conninfo = " ".join(
            [dsn_pair("host", "127.0.0.1"), dsn_pair("port", 5432), dsn_pair("user", name)]
            + [dsn_pair("dbname", name), dsn_pair("application_name", name)]
        )
        parsed = conninfo_to_dict(conninfo)
        assert (parsed["user"], parsed["dbname"], parsed["application_name"]) == (name, name, name), conninfo
        uri = (
            f"postgresql://{uri_component(name)}:{uri_component(name)}@127.0.0.1:5432/{uri_component(name)}"
            f"?application_name={uri_component(name)}"
        )
        parsed = conninfo_to_dict(uri)
        assert (parsed["user"], parsed["password"], parsed["dbname"], parsed["application_name"]) == (
            name,
            name,
            name,
            name,
        ), uri


def test_code_string_literals_read_back_in_their_language() -> None:
    for name in AWKWARD:
        assert ast.literal_eval(python_string(name)) == name
    script = (
        "process.stdout.write(JSON.stringify([" + ", ".join(javascript_string(n) for n in AWKWARD) + "]))"
    )
    node = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(node.stdout) == list(AWKWARD)


def test_pgbouncer_keys_that_cannot_be_written_say_so() -> None:
    assert pgbouncer_ini_key("lab_app") == "lab_app"
    assert pgbouncer_ini_key("billing-api") == "billing-api"  # `-` is a key character to PgBouncer
    assert pgbouncer_ini_key('o"brien') == "'o\"brien'"
    for name in ("it's", "", "new\nline"):
        with pytest.raises(UnwritableName, match="PgBouncer cannot read"):
            pgbouncer_ini_key(name)
    assert pgbouncer_connstr_value("it's mine") == "'it''s mine'"
    assert pgbouncer_auth_file_line('o"brien', "pw") == '"o""brien" "pw"'


# -- every finding's fix, with awkward names, executed on a real server ------------------------------
def _rename_column(frame: pd.DataFrame, column: str, old: str, new: str) -> None:
    values = frame[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        if old in values.cat.categories:
            frame[column] = values.cat.rename_categories({old: new})
    else:
        frame[column] = values.where(values.astype(str) != old, new)


ROLE_KEYS = {"user", "usename", "role", "rolname"}
DATABASE_KEYS = {"database", "datname"}


def _rename_json(value: Any, role: str, database: str, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _rename_json(v, role, database, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_json(v, role, database, key) for v in value]
    if key in ROLE_KEYS and value == APP_ROLE:
        return role
    if key in DATABASE_KEYS and value == LAB_DATABASE:
        return database
    return value


def renamed(folder: str, role: str, database: str) -> Evidence:
    """A recorded incident whose application role and database carry other names."""
    evidence = Evidence.load(RECORDED / folder)
    frames = {}
    for name, frame in evidence.frames.items():
        frame = frame.copy()
        for column in frame.columns:
            if column in ROLE_KEYS:
                _rename_column(frame, column, APP_ROLE, role)
            elif column in DATABASE_KEYS or (name == "pgbouncer_databases" and column == "name"):
                _rename_column(frame, column, LAB_DATABASE, database)
        frames[name] = frame
    snapshots = _rename_json(evidence.snapshots, role, database)
    return Evidence(manifest=evidence.manifest, frames=frames, snapshots=snapshots)


def _with_database_limit(evidence: Evidence) -> Evidence:
    """The role-limit refusals once more as database-limit ones (53300 'too many connections for
    database'), so that POOL-003 names the database too."""
    events = evidence.frames["server_log_events"]
    refused = events[events["event"].astype(str) == "role_conn_limit"].copy()
    refused["event"] = "database_conn_limit"
    both = pd.concat([events.astype({"event": str}), refused.astype({"event": str})], ignore_index=True)
    return Evidence(evidence.manifest, {**evidence.frames, "server_log_events": both}, evidence.snapshots)


def _with_query_timeout(evidence: Evidence) -> Evidence:
    """PgBouncer's client_idle_timeout closes read as query_timeout ones (BNC-003)."""
    log = evidence.frames["pgbouncer_log_events"].copy()
    log["reason_key"] = log["reason_key"].astype(str).replace({"client_idle_timeout": "query_timeout"})
    return Evidence(evidence.manifest, {**evidence.frames, "pgbouncer_log_events": log}, evidence.snapshots)


def _with_user_cap(evidence: Evidence) -> Evidence:
    """max_user_connections = 2 in SHOW CONFIG, which the saturated pool's users reach (BNC-012)."""
    snapshots = json.loads(json.dumps(evidence.snapshots, default=str))
    snapshots["pgbouncer_config"]["settings"]["max_user_connections"] = "2"
    return Evidence(evidence.manifest, evidence.frames, snapshots)


def _on_stack(stack: str) -> Any:
    """The application's log read as written by `stack`: its pool snippet, with URLs, is offered."""

    def change(evidence: Evidence) -> Evidence:
        snapshots = {**evidence.snapshots, "app_log_summary": {**evidence.snapshot("app_log_summary")}}
        snapshots["app_log_summary"]["primary_stack"] = stack
        return Evidence(evidence.manifest, evidence.frames, snapshots)

    return change


VARIANTS = {
    "idle_session_timeout+prisma": ("idle_session_timeout", _on_stack("prisma")),
    "nat_drop+hikaricp": ("nat_drop", _on_stack("hikaricp")),
    "role_connection_limit+database_limit": ("role_connection_limit", _with_database_limit),
    "pgbouncer_idle_timeout+query_timeout": ("pgbouncer_idle_timeout", _with_query_timeout),
    "pgbouncer_saturation+max_user_connections": ("pgbouncer_saturation", _with_user_cap),
}


def recorded_folders() -> list[str]:
    return sorted(p.name for p in RECORDED.iterdir() if (p / "manifest.json").exists())


@cache
def findings_named(name: str) -> tuple[Finding, ...]:
    """Every finding of every recorded incident (and of the variants above) with role and database
    `name`."""
    found: list[Finding] = []
    for folder in recorded_folders():
        found += diagnose_all(renamed(folder, name, name))
    for folder, change in VARIANTS.values():
        found += diagnose_all(change(renamed(folder, name, name)))
    return tuple(found)


def blocks_named(name: str, kind: str) -> dict[str, set[str]]:
    """block text (placeholders filled in) -> the finding ids that offer it."""
    blocks: dict[str, set[str]] = {}
    for finding in findings_named(name):
        for block_kind, text in fenced_blocks(finding.recommendation):
            if block_kind == kind:
                for placeholder, value in FILL_IN.items():
                    text = text.replace(placeholder, value)
                assert not PLACEHOLDER.search(text), f"{finding.id} lost a name: {text}"
                blocks.setdefault(text, set()).add(finding.id)
    return blocks


@pytest.fixture(scope="module")
def named_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A server of this module's own (ALTER SYSTEM changes it) with a login role and a database
    for each awkward name, and for the plain `myapp`."""
    server = LabServer(tmp_path_factory.mktemp("named"))
    server.up()
    for name in (*NAMES, CONTROL):
        server.create_role(name)
        with server.admin() as conn:
            conn.execute(f"CREATE DATABASE {sql_identifier(name)} OWNER {sql_identifier(name)}")
    yield server
    server.destroy()


STATE = """
SELECT 'role', r.rolname, r.rolconnlimit,
       (SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setrole = r.oid AND s.setdatabase = 0)
  FROM pg_roles r
UNION ALL
SELECT 'database', d.datname, d.datconnlimit,
       (SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0)
  FROM pg_database d
"""


def _state(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {(kind, name): (limit, config) for kind, name, limit, config in conn.execute(STATE).fetchall()}


@pytest.mark.parametrize("name", NAMES)
def test_every_sql_block_changes_the_named_object_and_nothing_else(
    named_server: LabServer, name: str
) -> None:
    blocks = {text: ids for text, ids in blocks_named(name, "sql").items() if "ALTER SYSTEM" not in text}
    assert blocks, f"no finding offered SQL for {name!r}"
    executed = 0
    with psycopg.connect(named_server.dsn(SUPERUSER, "postgres")) as conn:
        for text, ids in blocks.items():
            before = _state(conn)
            conn.execute(text)  # the block as pasted: one string, every statement in it
            after = _state(conn)
            conn.rollback()
            changed = {key for key in after if after[key] != before.get(key)}
            assert changed, f"{sorted(ids)}: {text!r} changed nothing"
            assert {object_name for _, object_name in changed} == {name}, (
                f"{sorted(ids)}: {text!r} changed {sorted(changed)}, not only {name!r}"
            )
            assert ("role", CONTROL) not in changed
            executed += 1
        assert _state(conn)[("role", name)] == (-1, None), "the rollback left a change behind"
    print(f"{name!r}: {executed} SQL block(s) executed")


def test_every_finding_with_sql_is_executed(named_server: LabServer) -> None:
    """The finding ids whose blocks the tests above execute, over every name: all of SQL_FINDINGS."""
    offered = {fid for name in NAMES for ids in blocks_named(name, "sql").values() for fid in ids}
    assert offered >= SQL_FINDINGS, f"not executed: {sorted(SQL_FINDINGS - offered)}"
    total = sum(len(blocks_named(name, "sql")) for name in NAMES)
    system = {text for name in NAMES for text in blocks_named(name, "sql") if "ALTER SYSTEM" in text}
    print(f"{total} SQL blocks over {len(NAMES)} names, {len(system)} distinct ALTER SYSTEM block(s)")


def test_alter_system_blocks_run_as_pasted_in_psql(named_server: LabServer, tmp_path: Path) -> None:
    """ALTER SYSTEM cannot run in a transaction: each block goes through psql as a user would paste
    it, and postgresql.auto.conf (pg_file_settings) then holds every setting it names."""
    system = {text for name in NAMES for text in blocks_named(name, "sql") if "ALTER SYSTEM" in text}
    assert system
    for text in system:
        script = tmp_path / "fix.sql"
        script.write_text(text + "\n")
        psql = named_server.bin_dir / "psql" if named_server.bin_dir else Path("psql")
        done = subprocess.run(
            [
                str(psql),
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                named_server.dsn(SUPERUSER, "postgres"),
                "-f",
                str(script),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        wanted = dict(re.findall(r"ALTER SYSTEM SET (\w+) = (\S+?);", text))
        with named_server.admin() as conn:
            auto = {
                n: s
                for n, s in conn.execute(
                    "SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'"
                ).fetchall()
            }
            assert {k: auto.get(k) for k in wanted} == wanted
            for setting in wanted:
                conn.execute(f"ALTER SYSTEM RESET {sql_identifier(setting)}")


def test_a_name_holding_backticks_stays_inside_its_block(lab: LabServer) -> None:
    """A role named a```b: the fence around its SQL is longer, the block is whole in the report."""
    name = "a```b"
    (leak,) = [f for f in diagnose_all(renamed("leak", name, LAB_DATABASE)) if f.id == "LEAK-001"]
    (text,) = [text for kind, text in fenced_blocks(leak.recommendation) if kind == "sql"]
    assert sql_identifier(name) in text
    assert html.escape(text) in FixRenderer().render(leak.recommendation)
    with psycopg.connect(lab.dsn(SUPERUSER, "postgres")) as conn:
        conn.execute(f"CREATE ROLE {sql_identifier(name)}")
        conn.execute(text)
        setting = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
            " WHERE r.rolname = %s",
            [name],
        ).fetchone()
        conn.rollback()
    assert setting and any(c.startswith("idle_in_transaction_session_timeout=") for c in setting[0])


def test_dsn_blocks_parse(named_server: LabServer) -> None:
    blocks = {text for name in NAMES for text in blocks_named(name, "dsn")}
    assert blocks
    for text in blocks:
        parsed = conninfo_to_dict(text)
        assert parsed.get("keepalives") == "1", text


def test_connection_urls_carry_the_names_percent_encoded() -> None:
    """Prisma's DATABASE_URL (a shell / .env line) and pgJDBC's URL name the role and database."""
    for name in NAMES:
        shell = [text for text in blocks_named(name, "shell") if "DATABASE_URL=" in text]
        assert shell, f"no DATABASE_URL offered for {name!r}"
        for text in shell:
            # as pasted in a shell: the assignment is whole (a bare `&` would cut it)
            done = subprocess.run(
                ["bash", "-c", text + '\nprintf %s "$DATABASE_URL"'],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            # Prisma's own query parameters are not libpq's: read it as the URL it is
            url = urlsplit(done.stdout)
            assert (unquote(url.username or ""), unquote(url.path[1:])) == (name, name), done.stdout
        jdbc = [
            url
            for text in blocks_named(name, "properties")
            for url in re.findall(r"jdbc:postgresql://HOST:5432/([^?\s]*)", text)
        ]
        assert jdbc, f"no JDBC URL offered for {name!r}"
        assert {unquote(db) for db in jdbc} == {name}


# -- pgbouncer.ini blocks, loaded by a real PgBouncer --------------------------------------------------
def test_pgbouncer_loads_the_user_blocks_and_admits_every_name(
    named_server: LabServer, tmp_path: Path
) -> None:
    """The [users] blocks BNC-012 offers, loaded by a real PgBouncer: each names the user it meant.
    Keys that need quotes are read from PgBouncer 1.25.0 on (an older one refuses the whole file, so
    the fix says so in a comment above them, and they are left out there). Then [databases] lines
    and auth_file lines written by the quoting functions let each name log in through PgBouncer to
    the database of the same name, with a DSN written by dsn_pair."""
    if find_pgbouncer() is None:
        pytest.fail("pgbouncer is not installed: `make install` installs it (apt-get install pgbouncer)")
    user_blocks = {
        text: name for name in NAMES for text in blocks_named(name, "ini") if text.startswith("[users]")
    }
    assert set(user_blocks.values()) == set(NAMES), "BNC-012 offered no [users] line for some name"
    password = str(json.loads(named_server.state_file.read_text())["password"])
    bouncer = PgBouncer(tmp_path / "pgbouncer", named_server).start()
    quoted_keys = tuple(int(p) for p in bouncer.version.split(".")[:2]) >= (1, 25)
    for text, name in user_blocks.items():
        assert (QUOTED_INI_KEYS_SINCE in text) == pgbouncer_ini_key_needs_quotes(name), text
    readable = {n for n in NAMES if quoted_keys or not pgbouncer_ini_key_needs_quotes(n)}
    pid = bouncer.pid()
    assert pid is not None

    def console(command: str) -> dict[str, dict[str, Any]]:
        with psycopg.connect(bouncer.console_dsn(SUPERUSER), autocommit=True, prepare_threshold=None) as conn:
            cur = psycopg.ClientCursor(conn)
            cur.execute(command)
            columns = [c.name for c in cur.description or []]
            return {row[0]: dict(zip(columns, row, strict=True)) for row in cur.fetchall()}

    def loaded(command: str, names: set[str]) -> dict[str, dict[str, Any]] | None:
        found = console(command)
        return found if names <= set(found) else None

    try:
        # The [users] blocks alone first: a user PgBouncer then knows is one its ini parser read from
        # a block, under exactly the name the block meant.
        assert not set(NAMES) & set(console("SHOW USERS"))
        with bouncer.ini.open("a") as ini:
            ini.write("\n\n" + "\n\n".join(t for t, n in user_blocks.items() if n in readable) + "\n")
        os.kill(pid, signal.SIGHUP)  # what RELOAD does
        users = wait_until(
            lambda: loaded("SHOW USERS", readable), timeout=20, what="PgBouncer to load the [users] lines"
        )
        for name in readable:  # PgBouncer 1.19+ shows the cap; 1.18 only the user
            assert str(users[name].get("max_user_connections", FILL_IN["<n>"])) == FILL_IN["<n>"]
        assert "syntax error" not in bouncer.log_file.read_text(errors="replace")
        # [databases] lines (the others reach their database through the lab's `*` line) and an
        # auth_file line per name.
        lines = ["", "[databases]"]
        for name in sorted(readable):
            lines.append(
                f"{pgbouncer_ini_key(name)} = host=127.0.0.1 port={named_server.port} "
                f"dbname={pgbouncer_connstr_value(name)}"
            )
        with bouncer.ini.open("a") as ini:
            ini.write("\n".join(lines) + "\n")
        with bouncer.auth_file.open("a") as auth:
            auth.write("".join(pgbouncer_auth_file_line(name, password) + "\n" for name in NAMES))
        os.kill(pid, signal.SIGHUP)
        databases = wait_until(
            lambda: loaded("SHOW DATABASES", readable),
            timeout=20,
            what="PgBouncer to load the [databases] lines",
        )
        assert {n: databases[n]["database"] for n in readable} == {n: n for n in readable}
        for name in NAMES:
            conninfo = " ".join(
                [dsn_pair("host", "127.0.0.1"), dsn_pair("port", bouncer.port), dsn_pair("user", name)]
                + [dsn_pair("dbname", name), dsn_pair("password", password), "sslmode=disable"]
            )
            with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:
                cur = psycopg.ClientCursor(conn)
                assert cur.execute("SELECT current_user, current_database()").fetchone() == (name, name)
        print(f"PgBouncer {bouncer.version}: [users] keys read for {sorted(readable)}")
    finally:
        bouncer.stop()

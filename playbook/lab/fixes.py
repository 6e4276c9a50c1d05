"""A finding's fix block, applied to a lab scenario for real: how the playbook proves a fix.

A recommendation's fenced blocks (diagnose/fix_text.py) are what a user pastes; `fix_from_block`
reads one the way its destination would and returns a ScenarioFix, the knobs a scenario takes
(`start_scenario(..., fix=...)`):

    sql         the statements, run on the lab server before the workloads start (ALTER ROLE /
                DATABASE / SYSTEM … SET, each undone when the scenario stops)
    dsn         libpq parameters, added to every psycopg service's connection
    python      a psycopg_pool block, executed as pasted (with `open=False`): the ConnectionPool it
                builds gives every psycopg service its sizes, limits, check and connection kwargs
    javascript  a node-postgres / @prisma/adapter-pg options object: the Prisma workload's pool
                (idleTimeoutMillis; its app has no knob for the others, which are reported unused)
    ini         pgbouncer.ini [pgbouncer] lines, over the scenario's own PgBouncer settings

A block holding a placeholder for the reader to fill in (`<n>`, `<app_role>`) cannot be applied:
NotApplicable says so in one sentence, as it does for a block of another kind or stack.
`retry_once` is the retry every stack's advice ends with (pool_snippets.RETRY_ADVICE); it comes
from prose, never from a block, so only a caller that read the prose sets it.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass, field, replace
from typing import Any

from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from playbook.errors import PlaybookError


class NotApplicable(PlaybookError):
    """The block cannot be applied to a lab scenario (a placeholder, an unknown kind or stack)."""


@dataclass(frozen=True)
class ScenarioFix:
    """What a fix changes in a scenario; every part empty means "as the scenario runs unfixed"."""

    sql: tuple[str, ...] = ()
    conninfo: dict[str, Any] = field(default_factory=dict)  # libpq parameters for psycopg services
    pool: dict[str, Any] = field(default_factory=dict)  # ConnectionPool arguments (min_size, max_idle…)
    prisma: dict[str, Any] = field(default_factory=dict)  # PrismaService options (idle_timeout_ms…)
    pgbouncer: dict[str, str | int | float] = field(default_factory=dict)
    retry_once: bool = False
    unused: tuple[str, ...] = ()  # settings of the block the lab's workload has no knob for

    def __bool__(self) -> bool:
        parts = (self.sql, self.conninfo, self.pool, self.prisma, self.pgbouncer, self.retry_once)
        return any(bool(part) for part in parts)

    def merged(self, other: ScenarioFix) -> ScenarioFix:
        """Both fixes at once (the other's values win where both set one)."""
        return replace(
            self,
            sql=self.sql + other.sql,
            conninfo={**self.conninfo, **other.conninfo},
            pool={**self.pool, **other.pool},
            prisma={**self.prisma, **other.prisma},
            pgbouncer={**self.pgbouncer, **other.pgbouncer},
            retry_once=self.retry_once or other.retry_once,
            unused=self.unused + other.unused,
        )

    def service_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """A psycopg workload's Service options with this fix's pool and connection settings."""
        options = dict(options)
        pool = dict(self.pool)
        for key in ("min_size", "max_size"):
            if key in pool:
                options[key] = pool.pop(key)
        if "timeout" in pool:
            options["pool_timeout"] = pool.pop("timeout")
        options["pool_kwargs"] = {**options.get("pool_kwargs", {}), **pool}
        options["connect_kwargs"] = {**options.get("connect_kwargs", {}), **self.conninfo}
        if self.retry_once:
            options["retry_once"] = True
        return options


_PLACEHOLDER = re.compile(r"<[a-z_]+>")
# What ConnectionPool(...) keeps of its arguments, and the attribute it keeps each in.
_POOL_ATTRIBUTES = {
    "min_size": "min_size",
    "max_size": "max_size",
    "timeout": "timeout",
    "max_idle": "max_idle",
    "max_lifetime": "max_lifetime",
    "max_waiting": "max_waiting",
    "reconnect_timeout": "reconnect_timeout",
}
# The pg.Pool options the lab's Prisma app reads, as PrismaService options.
_PRISMA_OPTIONS = {"idleTimeoutMillis": "idle_timeout_ms", "max": "pool_max"}


def fix_from_block(kind: str, text: str) -> ScenarioFix:
    """The ScenarioFix that applying this fenced block means (see the module's docstring)."""
    if placeholder := _PLACEHOLDER.search(text):
        raise NotApplicable(f"the {kind} block leaves {placeholder.group(0)} to fill in")
    if kind == "sql":
        statements = [s.strip() for s in text.split(";") if s.strip()]
        for statement in statements:
            undo_statement(statement)  # refuses what it could not undo
        return ScenarioFix(sql=tuple(statements))
    if kind == "dsn":
        try:
            return ScenarioFix(conninfo=dict(conninfo_to_dict(text.strip())))
        except Exception as exc:
            raise NotApplicable(f"the dsn block is not a libpq connection string: {exc}") from None
    if kind == "python":
        return _psycopg_pool_block(text)
    if kind == "javascript":
        return _node_postgres_block(text)
    if kind == "ini":
        return _pgbouncer_block(text)
    raise NotApplicable(f"a {kind} block has no lab workload to go into")


def _psycopg_pool_block(text: str) -> ScenarioFix:
    if "ConnectionPool(" not in text:
        raise NotApplicable("the python block builds no psycopg_pool ConnectionPool: a code pattern")
    # As pasted, but not opened: its settings are read, the lab's own pool opens with them.
    source = re.sub(r"\bopen=True\b", "open=False", text)
    scope: dict[str, Any] = {"conninfo": "dbname=unused"}
    try:
        exec(compile(source, "<fix block>", "exec"), scope)  # noqa: S102 - the playbook's own text
    except Exception as exc:
        raise NotApplicable(f"the python block does not run as pasted: {exc}") from None
    pool = scope.get("pool")
    if not isinstance(pool, ConnectionPool):
        raise NotApplicable("the python block defines no `pool`")
    settings: dict[str, Any] = {}
    for argument, attribute in _POOL_ATTRIBUTES.items():
        if re.search(rf"\b{argument}=", text):
            settings[argument] = getattr(pool, attribute)
    if pool._check is not None:  # noqa: SLF001 - psycopg_pool keeps check= there
        settings["check"] = pool._check  # noqa: SLF001
    conninfo = dict(pool.kwargs) if isinstance(pool.kwargs, dict) else {}
    return ScenarioFix(pool=settings, conninfo=conninfo)


def _node_postgres_block(text: str) -> ScenarioFix:
    options: dict[str, Any] = {}
    unused: list[str] = []
    for key, value in re.findall(r"\b([A-Za-z]+):\s*([0-9]+|true|false)\b", text):
        if key in _PRISMA_OPTIONS:
            options[_PRISMA_OPTIONS[key]] = int(value)
        else:
            unused.append(f"{key}: {value}")
    if not options:
        raise NotApplicable("the javascript block sets no pool option the lab's Prisma app reads")
    return ScenarioFix(prisma=options, unused=tuple(unused))


def _pgbouncer_block(text: str) -> ScenarioFix:
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise NotApplicable(f"the ini block is not pgbouncer.ini: {exc}") from None
    if not parser.has_section("pgbouncer"):
        raise NotApplicable("the ini block has no [pgbouncer] section")
    settings: dict[str, str | int | float] = {}
    for key, value in parser.items("pgbouncer"):
        settings[key] = int(value) if value.isdigit() else value
    return ScenarioFix(pgbouncer=settings)


_ROLE_SET = re.compile(r"^ALTER\s+(ROLE|DATABASE)\s+(\S+)\s+SET\s+(\w+)\s*(?:=|TO)", re.IGNORECASE)
_SYSTEM_SET = re.compile(r"^ALTER\s+SYSTEM\s+SET\s+(\w+)\s*(?:=|TO)", re.IGNORECASE)
_RELOAD = re.compile(r"^SELECT\s+pg_reload_conf\(\)$", re.IGNORECASE)


def undo_statement(statement: str) -> str | None:
    """The statement that undoes `statement` on a lab server (None: nothing to undo); a statement
    the lab cannot undo is NotApplicable, so that a fix never leaves a shared lab changed."""
    text = " ".join(statement.split()).rstrip(";")
    if match := _ROLE_SET.match(text):
        return f"ALTER {match.group(1).upper()} {match.group(2)} RESET {match.group(3)}"
    if match := _SYSTEM_SET.match(text):
        return f"ALTER SYSTEM RESET {match.group(1)}"
    if _RELOAD.match(text):
        return None
    raise NotApplicable(f"the lab cannot undo {text!r}, so it does not run it")

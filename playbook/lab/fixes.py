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
`retry_once` is the retry every stack's advice ends with (pool_snippets.RETRY_ADVICE), and
`service` a workload option standing for a code change (the slow call moved out of the
transaction); they come from prose or code, never from a setting, so only a caller that read
the finding's words sets them.
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
    service: dict[str, Any] = field(default_factory=dict)  # other Service options (a code fix's knob)
    unused: tuple[str, ...] = ()  # settings of the block the lab's workload has no knob for

    def __bool__(self) -> bool:
        parts = (self.sql, self.conninfo, self.pool, self.prisma, self.pgbouncer, self.service)
        return self.retry_once or any(bool(part) for part in parts)

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
            service={**self.service, **other.service},
            unused=self.unused + other.unused,
        )

    def service_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """A psycopg workload's Service options with this fix's pool and connection settings."""
        options = {**options, **self.service}
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


# -- what a run shows, read from its real evidence ---------------------------------------------------
_SERVER_KILL = re.compile(r"FATAL:\s+terminating connection")
_SERVER_RESET = re.compile(
    r"could not receive data from client|could not send data to client|"
    r"unexpected EOF on client connection|connection to client lost"
)
_SERVER_REFUSAL = re.compile(r"sorry, too many clients already|remaining connection slots are reserved")
_SERVER_CRASH = re.compile(r"was terminated by signal \d+")
# A PgBouncer client closed for any reason but its own goodbye.
_POOLER_CLOSE = re.compile(r"C-\S+: .*closing because: (?!client close request)([^(]+)")
_PRISMA_LOST = "idle pool client error"


@dataclass(frozen=True)
class Outcome:
    """How a scenario's run went, from its evidence: the applications' own counters and errors,
    the server log, PgBouncer's log, the chaos proxy's counters and the pools' lost connections."""

    seconds: float
    requests_ok: int
    app_errors: int
    errors: tuple[str, ...]  # the first few, as the application logged them
    server_kills: int  # FATAL: terminating connection …
    server_resets: int  # the server lost a client (reset, EOF, send/receive errors)
    server_refusals: int  # 53300
    server_crashes: int
    pooler_closes: int  # PgBouncer closing clients (client_idle_timeout, query_wait_timeout …)
    path_cuts: int  # the chaos proxy's idle resets and silent drops
    lost_connections: int  # pooled connections found dead (check=, returned broken, pg.Pool errors)

    @property
    def incident_signs(self) -> dict[str, int]:
        """Every sign of the incident other than an application error, by name, where non-zero."""
        signs = {
            "server kills": self.server_kills,
            "server-side losses": self.server_resets,
            "refused logins": self.server_refusals,
            "crashes": self.server_crashes,
            "pooler closes": self.pooler_closes,
            "path cuts": self.path_cuts,
            "lost pooled connections": self.lost_connections,
        }
        return {name: count for name, count in signs.items() if count}

    @property
    def cured(self) -> bool:
        """Served, no application error, and no sign of the incident anywhere."""
        return self.requests_ok > 0 and self.app_errors == 0 and not self.incident_signs

    @property
    def masked(self) -> bool:
        """Served with no application error while the incident itself went on."""
        return self.requests_ok > 0 and self.app_errors == 0 and bool(self.incident_signs)

    def describe(self) -> str:
        signs = ", ".join(f"{count} {name}" for name, count in self.incident_signs.items()) or "no incident"
        return f"{self.requests_ok} requests served, {self.app_errors} application errors, {signs}"


def outcome(running: Any) -> Outcome:
    """The Outcome of a RunningScenario (lab/scenarios.py) so far."""
    server = running.server_log_text()
    pooler = running.pgbouncer_log_text()
    stats = running.stats()
    proxy = stats.get("proxy") or {}
    services = stats["services"].values()
    lost = sum(int(s.get("connections_lost", 0)) + int(s.get("returns_bad", 0)) for s in services)
    lost += running.app_log_text().count(_PRISMA_LOST)
    errors: list[str] = []
    for service in running.services:
        errors.extend(list(service.errors)[:3])
    return Outcome(
        seconds=round(running.elapsed(), 1),
        requests_ok=sum(int(s.get("requests_ok", 0)) for s in services),
        app_errors=running.app_errors(),
        errors=tuple(errors[:3]),
        server_kills=len(_SERVER_KILL.findall(server)),
        server_resets=len(_SERVER_RESET.findall(server)),
        server_refusals=len(_SERVER_REFUSAL.findall(server)),
        server_crashes=len(_SERVER_CRASH.findall(server)),
        pooler_closes=len(_POOLER_CLOSE.findall(pooler)),
        path_cuts=sum(int(proxy.get(key, 0)) for key in ("idle_resets", "drops", "dropped_resets")),
        lost_connections=lost,
    )

"""Ready-to-paste pool settings for the client stack an application runs.

A diagnosis computes how long a pooled connection may stay idle or live before something on the
path (server, pooler, NAT, load balancer) cuts it, and which keepalive idle time keeps the flow
visibly alive. This module turns those numbers into the stack's own configuration, respecting
each stack's units and floors, plus one sentence on retrying. Pure functions: no I/O.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from playbook.diagnose.fix_text import BlockKind, block, dsn, ini, joined
from playbook.diagnose.quoting import dsn_pair, uri_component
from playbook.errors import PlaybookError
from playbook.evidence.vocab import STACKS as DETECTED_STACKS
from playbook.evidence.vocab import UNKNOWN_STACK as UNKNOWN

# Every stack the application-log reader can name, plus "unknown" (a generic libpq fix).
STACKS = (*DETECTED_STACKS, UNKNOWN)

# HikariCP raises maxLifetime below 30 s back to its 30 min default and disables keepaliveTime
# below 30 s (HikariConfig.validateNumerics); idleTimeout below 10 s becomes 10 min.
HIKARI_MIN_LIFETIME_MS = 30_000
HIKARI_MIN_KEEPALIVE_MS = 30_000
HIKARI_MIN_IDLE_MS = 10_000

RETRY_ADVICE = {
    "psycopg": (
        "On psycopg.OperationalError retry the whole unit of work once with a fresh "
        "pool.connection(): the pool has already replaced the broken connection, and with check= "
        "it tests each one before handing it out."
    ),
    "psycopg2": (
        "psycopg2 never reconnects by itself: on OperationalError or InterfaceError close the "
        "connection, open a new one and replay the whole transaction once."
    ),
    "sqlalchemy": (
        "On sqlalchemy.exc.DBAPIError with connection_invalidated=True retry the whole "
        "transaction once on a new connection; the pool has already discarded the dead one."
    ),
    "asyncpg": (
        "On asyncpg.exceptions.ConnectionDoesNotExistError or InterfaceError retry the whole "
        "transaction once in a new `async with pool.acquire()`; the pool replaces closed connections."
    ),
    "node-postgres": (
        "Keep the pool.on('error') handler (without it an idle client's 'Connection terminated "
        "unexpectedly' crashes the process) and retry a failed query once with pool.query(), "
        "which checks out a different client."
    ),
    "prisma": (
        "Retry the operation once on PrismaClientKnownRequestError code P1017 or P1001; the next "
        "query opens a new connection, and P2024 means the pool is too small, not that it should retry."
    ),
    "hikaricp": (
        "Retry the transaction once on SQLTransientConnectionException or an SQLState 08xxx error; "
        "HikariCP has already evicted the broken connection and tests connections before lending them."
    ),
    "pgbouncer": (
        "Keep each client pool's idle and lifetime limits below these server-side ones and retry "
        "once on SQLSTATE 08P01 pooler errors; query_wait_timeout means the pool is too small, "
        "not a reason to retry harder."
    ),
    "unknown": (
        "Whatever the pool, make it validate connections before lending them, recycle them before "
        "the limits above, and retry a failed transaction once on a fresh connection."
    ),
}


class Login(NamedTuple):
    """The role and database the application logs in with, when the evidence names them: the
    URLs of the snippets then carry them (percent-encoded), else USER and DB placeholders."""

    role: str | None = None
    database: str | None = None

    def uri_user(self) -> str:
        return uri_component(self.role) if self.role else "USER"

    def uri_database(self) -> str:
        return uri_component(self.database) if self.database else "DB"


def _check(name: str, value: float | None) -> None:
    if value is None:
        return
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise PlaybookError(f"{name} must be a positive number of seconds, not {value!r}")


def _secs(value: float) -> int:
    """Whole seconds, never rounding a limit up past what the diagnosis allowed."""
    return max(1, math.floor(value))


def _keepalive_params(idle_s: int) -> dict[str, int]:
    """libpq's client-side keepalives: probes start after idle_s, a dead peer is seen ~30 s later."""
    interval = max(1, min(10, idle_s))
    return {
        "keepalives": 1,
        "keepalives_idle": idle_s,
        "keepalives_interval": interval,
        "keepalives_count": 3,
    }


def _dsn_params(idle_s: int | None) -> str:
    if idle_s is None:
        return ""
    return " ".join(dsn_pair(k, v) for k, v in _keepalive_params(idle_s).items())


def stack_fix(
    stack: str,
    *,
    max_idle_s: float | None,
    max_lifetime_s: float | None,
    keepalives_idle_s: int | None,
    role: str | None = None,
    database: str | None = None,
) -> str:
    """A snippet for `stack` that keeps pooled connections inside the computed limits.

    max_idle_s: how long a connection may sit unused in the pool; max_lifetime_s: how long it
    may live at all; keepalives_idle_s: TCP keepalive idle time below the path's cut-off. Any of
    them may be None (nothing to enforce), not all. A value the stack clamps or ignores is never
    offered (see can_enforce). `role` and `database`, when the evidence names them, go into the
    connection URLs a snippet shows (Prisma's, pgJDBC's), percent-encoded. The result ends with one
    sentence on retrying.
    """
    if stack not in STACKS:
        raise PlaybookError(f"unknown client stack {stack!r}; expected one of {', '.join(STACKS)}")
    if max_idle_s is None and max_lifetime_s is None and keepalives_idle_s is None:
        raise ValueError("stack_fix needs a limit to enforce; for open transactions use transaction_fix")
    _check("max_idle_s", max_idle_s)
    _check("max_lifetime_s", max_lifetime_s)
    _check("keepalives_idle_s", keepalives_idle_s)
    keepidle = _secs(keepalives_idle_s) if keepalives_idle_s is not None else None
    snippet = _SNIPPETS[stack](max_idle_s, max_lifetime_s, keepidle, Login(role or None, database or None))
    return joined(snippet, "\n\n", RETRY_ADVICE[stack]) + "\n"


def can_enforce(stack: str, *, max_idle_s: float | None, max_lifetime_s: float | None) -> bool:
    """Whether `stack`'s own pool can keep connections inside these limits at all.

    False when the stack clamps or ignores the value (HikariCP raises a maxLifetime under 30 s to
    30 min; psycopg_pool checks max_lifetime only when a connection comes back, so a lifetime limit
    alone never ends an idle one): the fix must then go first on the layer that sets the limit.
    """
    if stack == "hikaricp":
        limits = [v for v in (max_idle_s, max_lifetime_s) if v is not None]
        return not limits or min(limits) * 1000 >= HIKARI_MIN_LIFETIME_MS
    if stack == "psycopg":
        # psycopg_pool checks max_lifetime only when a connection is returned: a lifetime limit
        # alone never reaches a connection sitting idle in the pool; max_idle (with min_size=0) does.
        return max_idle_s is not None or max_lifetime_s is None
    return True


TRANSACTION_SCOPE = {
    "psycopg": (
        "with pool.connection() as conn:  # commits on success, rolls back on error, returns it\n"
        "    with conn.transaction():\n"
        "        conn.execute(...)\n"
        "# do slow calls (HTTP, queues) outside the `with` block, never inside an open transaction"
    ),
    "psycopg2": (
        "conn = pool.getconn()\n"
        "try:\n"
        "    with conn:  # commits on success, rolls back on an exception\n"
        "        with conn.cursor() as cur:\n"
        "            cur.execute(...)\n"
        "finally:\n"
        "    pool.putconn(conn)  # the transaction is over before the connection goes back"
    ),
    "sqlalchemy": (
        "with engine.begin() as conn:  # one transaction, committed or rolled back on exit\n"
        "    conn.execute(...)\n"
        "# ORM: `with Session(engine) as session, session.begin(): ...`"
    ),
    "asyncpg": (
        "async with pool.acquire() as conn:\n"
        "    async with conn.transaction():  # committed or rolled back on exit\n"
        "        await conn.execute(...)"
    ),
    "node-postgres": (
        "const client = await pool.connect()\n"
        "try {\n"
        "  await client.query('BEGIN')\n"
        "  // ... queries only: no slow calls while the transaction is open\n"
        "  await client.query('COMMIT')\n"
        "} catch (err) {\n"
        "  await client.query('ROLLBACK')\n"
        "  throw err\n"
        "} finally {\n"
        "  client.release()\n"
        "}"
    ),
    "prisma": (
        "await prisma.$transaction(async (tx) => {\n"
        "  // ... queries only: no slow calls inside the interactive transaction\n"
        "}, { timeout: 5000 })  // Prisma rolls back and frees the connection after 5 s"
    ),
    "hikaricp": (
        "try (Connection conn = dataSource.getConnection()) {  // returned to the pool on exit\n"
        "    conn.setAutoCommit(false);\n"
        "    try { /* statements */ conn.commit(); } catch (SQLException e) { conn.rollback(); throw e; }\n"
        "}\n"
        "// and spring.datasource.hikari.leak-detection-threshold=30000 logs who holds connections"
    ),
    "pgbouncer": (
        "[pgbouncer]\n"
        "idle_transaction_timeout = 30  ; end client connections idle in a transaction, pool-side\n"
        "; the application still has to commit or roll back: fix its code path too"
    ),
    "unknown": (
        "# open a transaction only around the statements that need it, commit or roll back in a\n"
        "# finally block, and never wait on slow external calls while it is open"
    ),
}


TRANSACTION_SCOPE_KIND: dict[str, BlockKind] = {
    "psycopg": "python",
    "psycopg2": "python",
    "sqlalchemy": "python",
    "asyncpg": "python",
    "node-postgres": "javascript",
    "prisma": "javascript",
    "hikaricp": "java",
    "pgbouncer": "ini",
}


def transaction_fix(stack: str) -> str:
    """Code for `stack` that always ends its transaction before the connection goes back."""
    if stack not in STACKS:
        raise PlaybookError(f"unknown client stack {stack!r}; expected one of {', '.join(STACKS)}")
    kind = TRANSACTION_SCOPE_KIND.get(stack)
    if kind is None:
        return TRANSACTION_SCOPE[stack].replace("# ", "").replace("\n", " ") + "\n"
    return block(kind, TRANSACTION_SCOPE[stack]).strip() + "\n"


def _psycopg(idle: float | None, life: float | None, keepidle: int | None, login: Login) -> str:
    args = ["    conninfo,"]
    if keepidle is not None:
        kw = ", ".join(f'"{k}": {v}' for k, v in _keepalive_params(keepidle).items())
        args.append(f"    kwargs={{{kw}}},")
    if idle is not None:
        # psycopg_pool's ShrinkPool runs every max_idle s and closes ONE connection unused for that
        # whole period, and only while the pool holds more than min_size (pool.py _shrink_pool): the
        # min_size ones idle for good, and a pool of n idle connections needs n + 1 periods (the
        # first may still see traffic) to close them all. So min_size=0, and max_idle sized so that
        # (max_size + 1) periods fit in the limit.
        period = _shrink_period(idle, PSYCOPG_SHOWN_MAX_SIZE)
        args.append("    min_size=0,  # max_idle closes only connections above min_size")
        args.append(f"    max_size={PSYCOPG_SHOWN_MAX_SIZE},  # your pool's size (min_size=0 needs one)")
        args.append(
            f"    max_idle={period:g},  # closes ONE unused connection per period: keep "
            f"(max_size + 1) * max_idle under {_secs(idle)} s"
        )
    if life is not None:
        # _return_connection checks _expire_at: an idle connection past it stays until checked out
        args.append(
            f"    max_lifetime={_secs(life)},  # checked when a connection is returned: no help to idle ones"
        )
    args.append(
        "    check=ConnectionPool.check_connection,  # replaces a connection found cut at checkout: "
        "masks a cut, does not prevent it"
    )
    args.append("    open=True,")
    body = "\n".join(args)
    return block("python", f"from psycopg_pool import ConnectionPool\n\npool = ConnectionPool(\n{body}\n)")


PSYCOPG_SHOWN_MAX_SIZE = 4  # the max_size the psycopg_pool snippet shows (the reader puts theirs)


def _shrink_period(limit_s: float, max_size: int) -> float:
    """psycopg_pool's max_idle that closes all of max_size idle connections within limit_s: one
    closed per period, max_size + 1 periods; in tenths of a second, never rounded up."""
    return max(0.1, math.floor(limit_s / (max_size + 1) * 10) / 10)


def _psycopg2(idle: float | None, life: float | None, keepidle: int | None, login: Login) -> str:
    lines = []
    if keepidle is not None:
        lines.append(f'conn = psycopg2.connect(dsn + " {_dsn_params(keepidle)}")')
    else:
        lines.append("conn = psycopg2.connect(dsn)")
    limit = min(v for v in (idle, life, math.inf) if v is not None)
    if limit != math.inf:
        lines.append(
            "# psycopg2's own pools have no idle or lifetime limit: reopen a connection unused\n"
            f"# for {_secs(limit)} s or more, or pool through SQLAlchemy with pool_recycle={_secs(limit)}."
        )
    return block("python", "import psycopg2\n\n" + "\n".join(lines))


def _sqlalchemy(idle: float | None, life: float | None, keepidle: int | None, login: Login) -> str:
    # QueuePool never closes a connection sitting idle in it: pool_pre_ping and pool_recycle both
    # act at checkout, after the server has already ended the idle session. They mask the cut (no
    # request fails); what prevents it is the role-level SQL, or no idle connection kept.
    args = ["    url,", "    pool_pre_ping=True,  # replaces a connection found cut at checkout: masks a cut"]
    limits = [v for v in (idle, life) if v is not None]
    if limits:
        # pool_recycle is by age at checkout; a connection idle past the limit is older than it too
        args.append(
            "    # acts at checkout only: QueuePool never closes an idle connection, so the server"
            "\n    # still ends the ones idle past its limit; this masks the cut, it does not stop it"
        )
        args.append(f"    pool_recycle={_secs(min(limits))},")
    if keepidle is not None:
        kw = ", ".join(f'"{k}": {v}' for k, v in _keepalive_params(keepidle).items())
        args.append(f"    connect_args={{{kw}}},  # psycopg / psycopg2 (libpq)")
    body = "\n".join(args)
    text = f"from sqlalchemy import create_engine\n\nengine = create_engine(\n{body}\n)"
    if limits:
        text += (
            "\n# What stops the cut: the limit lifted where it is set (for a server limit, the"
            "\n# role-level SQL offered with this finding), or no idle connection kept"
            "\n# (poolclass=NullPool, or a pool_size no larger than what the load keeps busy)."
        )
    return block("python", text)


def _asyncpg(idle: float | None, life: float | None, keepidle: int | None, login: Login) -> str:
    args = ["    dsn,"]
    if idle is not None:
        # asyncpg (0.32, pool.py _deactivate_inactive_connection) never closes a connection while
        # the pool holds min_size or fewer: its default floor of 10 idles past any limit for good.
        args.append("    min_size=0,  # the inactive lifetime closes only connections above min_size")
        args.append(f"    max_inactive_connection_lifetime={_secs(idle)},")
    if life is not None:
        args.append(
            "    # asyncpg has no lifetime limit; max_queries bounds how often a connection is reused"
        )
    body = "\n".join(args)
    text = f"import asyncpg\n\npool = await asyncpg.create_pool(\n{body}\n)"
    if keepidle is not None:
        text += (
            f"\n# asyncpg does not set TCP keepalives itself: set net.ipv4.tcp_keepalive_time={keepidle}\n"
            "# on the client host, or keep max_inactive_connection_lifetime below the path's idle cut-off\n"
            "# (with min_size=0: asyncpg never closes the connections of its min_size floor)."
        )
    return block("python", text)


def _node_postgres(idle: float | None, life: float | None, keepidle: int | None, login: Login) -> str:
    opts = ["  connectionString: process.env.DATABASE_URL,"]
    if idle is not None:
        opts.append(
            f"  idleTimeoutMillis: {max(1, math.floor(idle * 1000))},  // only closes clients above `min`"
        )
    if life is not None:
        opts.append(f"  maxLifetimeSeconds: {_secs(life)},")
    if keepidle is not None:
        opts.append("  keepAlive: true,")
        opts.append(f"  keepAliveInitialDelayMillis: {keepidle * 1000},")
    body = "\n".join(opts)
    return block(
        "javascript",
        "const { Pool } = require('pg')\n\n"
        f"const pool = new Pool({{\n{body}\n}})\n"
        "pool.on('error', (err) => {\n"
        "  // an idle client lost its connection: the pool drops it; log, do not crash\n"
        "  console.error('idle PostgreSQL client error', err)\n"
        "})",
    )


def _prisma(idle: float | None, life: float | None, keepidle: int | None, login: Login) -> str:
    params = []
    if idle is not None:
        params.append(f"max_idle_connection_lifetime={_secs(idle)}")
    if life is not None:
        params.append(f"max_connection_lifetime={_secs(life)}")
    query = "&".join(params) if params else "connect_timeout=10"
    # Double quotes: pasted in a shell, a bare `&` would end the assignment; .env files read them too.
    url = block(
        "shell",
        "# Prisma's own engine pool (Prisma 6 and earlier, no driver adapter): URL parameters\n"
        f'DATABASE_URL="postgresql://{login.uri_user()}@HOST:5432/{login.uri_database()}?{query}"',
    )
    text = (
        "// With a driver adapter (the default from Prisma 7), the pg Pool's options apply:\n"
        "import { PrismaPg } from '@prisma/adapter-pg'\n"
    )
    opts = ["connectionString: process.env.DATABASE_URL"]
    if idle is not None:
        opts.append(f"idleTimeoutMillis: {max(1, math.floor(idle * 1000))}")
    if life is not None:
        opts.append(f"maxLifetimeSeconds: {_secs(life)}")
    if keepidle is not None:
        opts.append(f"keepAlive: true, keepAliveInitialDelayMillis: {keepidle * 1000}")
    text += f"const adapter = new PrismaPg({{ {', '.join(opts)} }})"
    return url + block("javascript", text)


def _hikaricp(idle: float | None, life: float | None, keepidle: int | None, login: Login) -> str:
    lines = ["# application.properties (HikariConfig maxLifetime, idleTimeout, keepaliveTime, in ms)"]
    notes: list[str] = []
    life_ms: int | None = None
    if life is not None:
        if life * 1000 < HIKARI_MIN_LIFETIME_MS:
            # HikariCP resets a smaller maxLifetime to its 30 min default: offering it would make
            # things worse. The limit that forces less than 30 s must change instead.
            notes.append(
                f"# HikariCP cannot retire connections sooner than {HIKARI_MIN_LIFETIME_MS // 1000} s "
                f"(a maxLifetime under {HIKARI_MIN_LIFETIME_MS} ms falls back to 30 min): the "
                f"{_secs(life)} s limit must be raised where it is set"
            )
        else:
            life_ms = math.floor(life * 1000)
            lines.append(f"spring.datasource.hikari.max-lifetime={life_ms}")
    if idle is not None and idle * 1000 >= HIKARI_MIN_IDLE_MS:
        lines.append(f"spring.datasource.hikari.idle-timeout={math.floor(idle * 1000)}")
        notes.append("# idleTimeout only retires connections while minimumIdle < maximumPoolSize")
    elif idle is not None:
        notes.append(f"# HikariCP will not retire idle connections sooner than {HIKARI_MIN_IDLE_MS} ms")
    # keepaliveTime pings idle connections, so an idle limit on the path never sees them idle
    pings = [v for v in (idle, keepidle) if v is not None]
    if pings:
        ping_ms = math.floor(min(pings) * 1000)
        if ping_ms < HIKARI_MIN_KEEPALIVE_MS:
            notes.append("# keepaliveTime cannot go below 30000 ms: rely on maxLifetime and TCP keepalives")
        elif life_ms is not None and ping_ms >= life_ms:
            notes.append("# keepaliveTime must stay below maxLifetime, or HikariCP disables it")
        else:
            lines.append(f"spring.datasource.hikari.keepalive-time={ping_ms}")
    if keepidle is not None:
        # pgJDBC percent-decodes the database of its URL (Driver.parseURL)
        lines.append(
            f"spring.datasource.url=jdbc:postgresql://HOST:5432/{login.uri_database()}?tcpKeepAlive=true"
        )
        notes.append(
            f"# pgJDBC's tcpKeepAlive uses the OS timers: sysctl net.ipv4.tcp_keepalive_time={keepidle}"
        )
    return block("properties", "\n".join(lines + notes))


def _pgbouncer(idle: float | None, life: float | None, keepidle: int | None, login: Login) -> str:
    lines: list[str] = []
    if idle is not None:
        lines.append(f"server_idle_timeout = {_secs(idle)}")
    if life is not None:
        lines.append(f"server_lifetime = {_secs(life)}")
    if keepidle is not None:
        interval = max(1, min(10, keepidle))
        lines += [
            "tcp_keepalive = 1",
            f"tcp_keepidle = {keepidle}",
            f"tcp_keepintvl = {interval}",
            "tcp_keepcnt = 3",
        ]
    return ini(*lines)


def _unknown(idle: float | None, life: float | None, keepidle: int | None, login: Login) -> str:
    lines = []
    if idle is not None:
        lines.append(f"close pooled connections unused for {_secs(idle)} s")
    if life is not None:
        lines.append(f"replace pooled connections older than {_secs(life)} s")
    prose = f"In the application's pool: {'; '.join(lines)}." if lines else ""
    if keepidle is not None:
        prose += " libpq-based clients: add to the connection string" + dsn(_dsn_params(keepidle))
    return prose


_SNIPPETS = {
    "psycopg": _psycopg,
    "psycopg2": _psycopg2,
    "sqlalchemy": _sqlalchemy,
    "asyncpg": _asyncpg,
    "node-postgres": _node_postgres,
    "prisma": _prisma,
    "hikaricp": _hikaricp,
    "pgbouncer": _pgbouncer,
    "unknown": _unknown,
}

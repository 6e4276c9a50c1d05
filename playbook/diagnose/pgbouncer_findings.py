"""The pooler layer: what PgBouncer did to the application's connections, from its console and log.

`diagnose(evidence) -> list[Finding]` reads only the evidence (frames and snapshots named in
playbook.evidence.pgbouncer_frames). Finding ids (BNC-…) are stable; each carries one of the five categories:

| id      | category    | what                                                                 |
|---------|-------------|----------------------------------------------------------------------|
| BNC-001 | timeout     | client_idle_timeout closed pooled connections the application held   |
| BNC-002 | leak        | idle_transaction_timeout closed connections idle in a transaction    |
| BNC-003 | timeout     | query_timeout cancelled queries and closed their connections         |
| BNC-004 | pool_config | query_wait_timeout: clients waited too long for a server connection  |
| BNC-005 | timeout     | transaction_timeout (1.25+) ended transactions with their connection |
| BNC-006 | network     | client_login_timeout dropped clients that did not finish logging in  |
| BNC-010 | pool_config | clients queued for server connections (cl_waiting, maxwait)          |
| BNC-011 | pool_config | max_client_conn reached: logins refused                              |
| BNC-012 | pool_config | max_db_connections / max_user_connections reached                    |
| BNC-013 | pool_config | pools larger than the server allows, or the server refused logins    |
| BNC-020 | pool_config | transaction/statement pooling broke session features                 |
| BNC-030 | server      | server connections crashed, were refused or failed a check/reset     |
| BNC-031 | pool_config | PgBouncer cannot log in to PostgreSQL (credentials, auth_query)      |
| BNC-032 | server      | PgBouncer restarted, paused or an operator closed connections        |
| BNC-040 | network     | clients vanished without saying goodbye                              |
| BNC-090 | pool_config | info only: PgBouncer's normal recycling of unused server connections |

Severity: critical when the application felt it (client connections closed or refused with the
reason, or the application's log shows the failures), warning when PgBouncer absorbed it or the
evidence is only a risk. Recycling of unused server connections (server_lifetime,
server_idle_timeout, obsolete, evicted, pool shrunk) is never more than info.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from playbook.diagnose.findings import Finding, Severity
from playbook.diagnose.fix_text import app_login, ini, ini_users, joined, sql, sql_name
from playbook.diagnose.pool_snippets import can_enforce, stack_fix
from playbook.evidence import Evidence
from playbook.evidence.pgbouncer_frames import (
    CONFIG_SNAPSHOT,
    DEFAULTS,
    LOG_EVENTS_FRAME,
    REASON_BY_KEY,
)
from playbook.evidence.views import (
    APP_SESSION_LOST,
    app_events,
    app_stack,
    first_last,
    role_of,
    server_events,
    top_values,
)
from playbook.vocabulary.categories import Category
from playbook.vocabulary.pgbouncer_reasons import (
    CLIENT_LIMITS,
    CLIENT_VANISHED,
    OPERATOR_CLOSES,
    OPERATOR_EVENTS,
    POOLER_SHUTDOWN_TEXT,
    POOLING_MODE_BREAKAGE,
    SERVER_LOGIN_FAILURES,
    SERVER_TROUBLE,
    EventKey,
    LogKind,
    ReasonKey,
)

CONSOLE_DB = "pgbouncer"
# The application's log kinds that say a pooled connection was closed or refused under it.
APP_FELT = APP_SESSION_LOST | {
    "pgbouncer_client_idle_timeout",
    "pgbouncer_query_wait_timeout",
    "pgbouncer_query_timeout",
    "pgbouncer_idle_transaction_timeout",
    "pgbouncer_client_login_timeout",
    "pgbouncer_max_client_conn",
    "pgbouncer_server_crashed",
    "pgbouncer_server_login_failed",
    "pgbouncer_cannot_connect",
    "pool_timeout",
}
PREPARED = re.compile(r"prepared statement \"?[^\"]*\"? (?:does not exist|already exists)", re.IGNORECASE)


# -- reading the evidence -------------------------------------------------------------------------
def config(evidence: Evidence) -> dict[str, Any]:
    """SHOW CONFIG as {key: value} (empty without the console)."""
    snapshot = evidence.snapshots.get(CONFIG_SNAPSHOT) or {}
    return dict(snapshot.get("settings") or {})


def setting(evidence: Evidence, name: str) -> tuple[float | None, str]:
    """A numeric pgbouncer.ini setting (seconds for timeouts) and where it came from.

    0 means disabled for every timeout and unlimited for every limit: returned as None.
    """
    settings = config(evidence)
    if name in settings:
        try:
            value = float(str(settings[name]).strip() or 0)
        except ValueError:
            return None, "SHOW CONFIG (unreadable)"
        return (value or None), "SHOW CONFIG"
    default = DEFAULTS.get(name)
    return (default or None), "PgBouncer's default (console not read)"


def pool_mode(evidence: Evidence) -> str | None:
    mode = config(evidence).get("pool_mode")
    if mode:
        return str(mode)
    pools = _pools(evidence)
    if not pools.empty and "pool_mode" in pools:
        modes = pools["pool_mode"].dropna().astype(str)
        if not modes.empty:
            return str(modes.mode().iloc[0])
    return None


def _log(evidence: Evidence) -> pd.DataFrame:
    return evidence.frame(LOG_EVENTS_FRAME)


def _events(
    evidence: Evidence, *keys: ReasonKey | EventKey, kinds: tuple[LogKind, ...] = ("close", "pooler_error")
) -> pd.DataFrame:
    log = _log(evidence)
    if log.empty or "reason_key" not in log:
        return pd.DataFrame(
            columns=["ts", "kind", "side", "database", "user", "reason_key", "reason", "age_s"]
        )
    rows = log[log["kind"].isin(kinds)]
    return rows[rows["reason_key"].isin(keys)] if keys else rows


def _client_side(events: pd.DataFrame) -> pd.DataFrame:
    """What reached clients: client closes and pooler errors (one failure may log both: count closes)."""
    if events.empty:
        return events
    closes = events[(events["kind"] == "close") & (events["side"] == "client")]
    return closes if not closes.empty else events[events["kind"] == "pooler_error"]


def _server_logins(events: pd.DataFrame) -> pd.DataFrame:
    """One row per failed server login. PgBouncer logs each as one `server login failed: …` WARNING,
    then closes every waiting client with the server's message (a close and a pooler error each) and
    the server connection: counting every line counted one refusal four to eight times."""
    if events.empty:
        return events
    for rows in (events[events["kind"] == "server_login_failed"], events[events["side"] == "server"]):
        if not rows.empty:
            return rows
    return events


def _pools(evidence: Evidence) -> pd.DataFrame:
    pools = evidence.frame("pgbouncer_pools")
    if pools.empty or "database" not in pools:
        return pools
    return pools[pools["database"] != CONSOLE_DB]


def _app_felt(evidence: Evidence) -> pd.DataFrame:
    return app_events(evidence, *sorted(APP_FELT))


def _seconds_text(value: float | None) -> str:
    return "disabled" if value is None else f"{value:g} s"


def _summary(events: pd.DataFrame) -> dict[str, Any]:
    ages = pd.to_numeric(events.get("age_s", pd.Series(dtype=float)), errors="coerce").dropna()
    return {
        "count": int(len(events)),
        "databases": top_values(events, "database"),
        "users": top_values(events, "user"),
        "median_age_s": float(ages.median()) if not ages.empty else None,
        **first_last(events),
    }


def _finding(
    fid: str,
    category: Category,
    severity: Severity,
    title: str,
    evidence: dict[str, Any],
    recommendation: str,
    confidence: float,
) -> Finding:
    return Finding(
        id=fid,
        category=category,
        severity=severity,
        title=title,
        recommendation=recommendation,
        confidence=confidence,
        evidence=evidence,
    )


# -- pooler timeouts the application feels ----------------------------------------------------------
def _half(value: float | None, fallback: float) -> str:
    return f"{max(1.0, round((value or fallback) * 0.5, 1)):g}"


def find_client_idle_timeout(evidence: Evidence) -> list[Finding]:
    events = _client_side(_events(evidence, "client_idle_timeout"))
    if events.empty:
        return []
    limit, source = setting(evidence, "client_idle_timeout")
    app = _app_felt(evidence)
    felt = not app.empty
    idle = _half(limit, 60)
    return [
        _finding(
            "BNC-001",
            "timeout",
            Severity.CRITICAL if felt else Severity.WARNING,
            f"PgBouncer closed {len(events)} idle client connection(s) after client_idle_timeout "
            f"({_seconds_text(limit)}): the application's pool kept them longer",
            {
                "closed": _summary(events),
                "client_idle_timeout": limit,
                "setting_source": source,
                "pool_mode": pool_mode(evidence),
                "app_errors": int(len(app)),
                "app_error_kinds": top_values(app, "kind"),
            },
            _client_idle_fix(evidence, limit, idle),
            0.9 if felt else 0.7,
        )
    ]


def _client_idle_fix(evidence: Evidence, limit: float | None, idle: str) -> str:
    """The client pool's limits below client_idle_timeout for the application's stack, unless that
    stack cannot go that low: then PgBouncer's setting is what must change, and it goes first."""
    stack = app_stack(evidence)
    idle_s = float(idle)
    life_s = max(idle_s, round((limit or 60) * 0.8, 1))
    keep_idle_clients = joined(
        "let PgBouncer keep idle clients (it costs one socket each, no server connection):",
        ini("client_idle_timeout = 0"),
    )
    pool_side = stack_fix(
        stack, max_idle_s=idle_s, max_lifetime_s=life_s, keepalives_idle_s=None, **app_login(evidence)
    )
    if not can_enforce(stack, max_idle_s=idle_s, max_lifetime_s=life_s):
        return joined(
            f"The application's pool holds connections idle longer than PgBouncer's client_idle_timeout "
            f"({_seconds_text(limit)}), and {stack} cannot retire them that fast: ",
            keep_idle_clients,
            "\n\nWhat the pool can do:\n\n",
            pool_side,
        )
    return joined(
        "The application's pool holds connections idle longer than PgBouncer's client_idle_timeout "
        f"({_seconds_text(limit)}), so the next request on one fails. Make the client pool give connections "
        "back first and check them on checkout:\n\n",
        pool_side,
        "\n\nor ",
        keep_idle_clients,
    )


def _timeout_finding(
    evidence: Evidence,
    fid: str,
    key: ReasonKey,
    setting_name: str,
    title: str,
    fix: str,
    category: Category = "timeout",
) -> list[Finding]:
    events = _events(evidence, key)
    if events.empty:
        return []
    client = _client_side(events)
    limit, source = setting(evidence, setting_name)
    app = _app_felt(evidence)
    felt = not client.empty or not app.empty
    shown = client if not client.empty else events
    return [
        _finding(
            fid,
            category,
            Severity.CRITICAL if felt else Severity.WARNING,
            title.format(n=len(shown), limit=_seconds_text(limit)),
            {
                "closed": _summary(shown),
                # closes only: a notified client close is logged twice (close, then pooler error)
                "by_side": top_values(events[events["kind"] == "close"], "side"),
                setting_name: limit,
                "setting_source": source,
                "pool_mode": pool_mode(evidence),
                "app_errors": int(len(app)),
                "app_feels": REASON_BY_KEY[key].app_feels,
            },
            fix.format(limit=_seconds_text(limit)),
            0.9 if felt else 0.6,
        )
    ]


def find_idle_transaction_timeout(evidence: Evidence) -> list[Finding]:
    return _timeout_finding(
        evidence,
        "BNC-002",
        "idle_transaction_timeout",
        "idle_transaction_timeout",
        "PgBouncer closed {n} connection(s) idle in a transaction longer than idle_transaction_timeout "
        "({limit})",
        "The timeout is doing its job: the application leaves transactions open between statements "
        "(a slow call mid-transaction, a missing commit). Find that code path (see the leaks notebook) and "
        "commit or roll back before waiting on anything else. Raise the limit ({limit} now) only for a "
        "known batch workload:" + ini("idle_transaction_timeout = <seconds>"),
        category="leak",
    )


def find_query_timeout(evidence: Evidence) -> list[Finding]:
    # The role PgBouncer's closes name, quoted for SQL; braces doubled, the fix being a format string.
    role = sql_name(role_of(_events(evidence, "query_timeout"), ""), "<app_role>")
    role = role.replace("{", "{{").replace("}", "}}")
    return _timeout_finding(
        evidence,
        "BNC-003",
        "query_timeout",
        "query_timeout",
        "PgBouncer cancelled {n} query(ies) running longer than query_timeout ({limit}) and closed their "
        "connections",
        "query_timeout ends the whole client connection. Keep it above the longest legitimate query, and "
        "bound queries on the server instead, which keeps the connection:"
        + sql(f"ALTER ROLE {role} SET statement_timeout = '30s'")
        + "then, in place of {limit} now:"
        + ini("query_timeout = 0"),
    )


def find_query_wait_timeout(evidence: Evidence) -> list[Finding]:
    events = _client_side(_events(evidence, "query_wait_timeout"))
    if events.empty:
        return []
    limit, source = setting(evidence, "query_wait_timeout")
    size, size_source = setting(evidence, "default_pool_size")
    return [
        _finding(
            "BNC-004",
            "pool_config",
            Severity.CRITICAL,
            f"{len(events)} client(s) waited longer than query_wait_timeout ({_seconds_text(limit)}) for a "
            "server connection and were disconnected: the pool is too small for the load",
            {
                "closed": _summary(events),
                "query_wait_timeout": limit,
                "setting_source": source,
                "default_pool_size": size,
                "default_pool_size_source": size_source,
                "pool_mode": pool_mode(evidence),
                **_waiting_summary(evidence),
            },
            joined(
                "Queries queue in PgBouncer because every server connection of the pool is busy. Give the "
                "pool more server connections, as far as the server allows (or `pool_size=` on the "
                "database line):",
                _pool_size_block(evidence),
                "Shorten transactions (transaction pooling frees a connection only at commit), and keep the "
                "application's own pool wait below query_wait_timeout so it fails fast where it is "
                "measured (psycopg_pool `timeout=`, SQLAlchemy `pool_timeout=`, HikariCP "
                "`connectionTimeout`).",
            ),
            0.9,
        )
    ]


def find_transaction_timeout(evidence: Evidence) -> list[Finding]:
    return _timeout_finding(
        evidence,
        "BNC-005",
        "transaction_timeout",
        "transaction_timeout",
        "PgBouncer ended {n} transaction(s) open longer than transaction_timeout ({limit}) with their "
        "connections",
        "Keep transactions short, or raise the limit ({limit} now; PgBouncer 1.25+) where long ones are "
        "expected:" + ini("transaction_timeout = <seconds>"),
    )


def find_client_login_timeout(evidence: Evidence) -> list[Finding]:
    return _timeout_finding(
        evidence,
        "BNC-006",
        "client_login_timeout",
        "client_login_timeout",
        "PgBouncer dropped {n} client(s) that did not finish logging in within client_login_timeout "
        "({limit})",
        "Clients opened a connection and did not complete the login in time: health checks or port "
        "scanners that only open the port, a slow or lossy path, or TLS/auth stalls. Point health checks "
        "at a real login (or a plain TCP check on another port), and check the path; raise "
        "`client_login_timeout` in pgbouncer.ini only for slow but healthy clients ({limit} now).",
        category="network",
    )


# -- saturation ---------------------------------------------------------------------------------------
def _waiting_summary(evidence: Evidence) -> dict[str, Any]:
    pools = _pools(evidence)
    if pools.empty or "cl_waiting" not in pools:
        return {}
    per_tick = pools.groupby("tick_ts").agg(
        cl_waiting=("cl_waiting", "sum"), maxwait_s=("maxwait_s", "max"), sv_active=("sv_active", "sum")
    )
    waiting = per_tick[per_tick["cl_waiting"].fillna(0) > 0]
    return {
        "ticks": int(len(per_tick)),
        "ticks_with_waiting_clients": int(len(waiting)),
        "peak_cl_waiting": int(per_tick["cl_waiting"].max()) if not per_tick.empty else 0,
        "peak_maxwait_s": round(float(per_tick["maxwait_s"].max()), 3) if not per_tick.empty else 0.0,
        "peak_sv_active": int(per_tick["sv_active"].max()) if not per_tick.empty else 0,
        "waiting_pools": top_values(pools[pools["cl_waiting"].fillna(0) > 0].assign(
            pool=lambda f: f["database"].astype(str) + "/" + f["user"].astype(str)), "pool"),
    }  # fmt: skip


def _pool_size_block(evidence: Evidence) -> str:
    """default_pool_size sized to the demand the console samples saw (clients served plus clients
    waiting, at the busiest sample), or placeholders when PgBouncer was not sampled."""
    pools = _pools(evidence)
    if pools.empty or not {"cl_waiting", "sv_active"} <= set(pools):
        return ini("default_pool_size = <n>", "reserve_pool_size = <m>", "reserve_pool_timeout = 1")
    per_tick = pools.groupby(["tick_ts", "database", "user"])[["sv_active", "cl_waiting"]].sum()
    demand = per_tick["sv_active"].fillna(0) + per_tick["cl_waiting"].fillna(0)
    peak = int(demand.max()) if not demand.empty else 0
    if peak <= 0:
        return ini("default_pool_size = <n>", "reserve_pool_size = <m>", "reserve_pool_timeout = 1")
    active = int(per_tick["sv_active"].fillna(0).to_numpy()[int(demand.to_numpy().argmax())])
    return ini(
        f"; the busiest sample: {active} queries running and {peak - active} waiting, per pool",
        f"default_pool_size = {peak}",
    ) + (
        "If the server cannot take that many more connections, add `reserve_pool_size` and "
        "`reserve_pool_timeout` for bursts instead, and send less at once.\n\n"
    )


def find_saturation(evidence: Evidence) -> list[Finding]:
    summary = _waiting_summary(evidence)
    if not summary or not summary["ticks_with_waiting_clients"]:
        return []
    share = summary["ticks_with_waiting_clients"] / max(1, summary["ticks"])
    peak_wait = summary["peak_maxwait_s"]
    limit, _ = setting(evidence, "query_wait_timeout")
    wait_closes = _client_side(_events(evidence, "query_wait_timeout"))
    if not wait_closes.empty or (limit and peak_wait >= 0.5 * limit):
        severity = Severity.CRITICAL
    elif share >= 0.1 or peak_wait >= 1.0:
        severity = Severity.WARNING
    else:
        return []  # a client queued for a moment now and then is what a pool is for
    size, _ = setting(evidence, "default_pool_size")
    return [
        _finding(
            "BNC-010",
            "pool_config",
            severity,
            f"clients queued for a server connection in {share:.0%} of the samples (up to "
            f"{summary['peak_cl_waiting']} waiting, the oldest for {peak_wait:g} s)",
            {
                **summary,
                "share_of_ticks": round(share, 3),
                "query_wait_timeout": limit,
                "default_pool_size": size,
            },
            "PgBouncer has no free server connection for these pools. Raise `default_pool_size` (or the "
            "database's `pool_size=`) up to what the server allows (max_connections minus reserved slots, "
            "divided among every pool and other clients), add `reserve_pool_size` for bursts, and shorten "
            "transactions; if the server cannot take more, the application must send less at once (smaller "
            "client pools, a queue).",
            0.8,
        )
    ]


def find_max_client_conn(evidence: Evidence) -> list[Finding]:
    events = _client_side(_events(evidence, *CLIENT_LIMITS))
    limit, source = setting(evidence, "max_client_conn")
    clients = evidence.frame("pgbouncer_clients")
    peak = int(clients.groupby("tick_ts").size().max()) if not clients.empty and "tick_ts" in clients else 0
    if events.empty and not (limit and peak >= limit):
        return []
    if events.empty:  # SHOW CLIENTS at the limit, no refusal seen: a risk (client.c refuses above it)
        title = f"{peak} client connections reached max_client_conn ({limit:g}): the next are refused"
    elif limit:
        title = (
            f"PgBouncer refused {len(events)} client login(s): max_client_conn ({limit:g}) or a per-database/"
            "user client limit reached"
        )
    else:
        title = "PgBouncer refused client logins: a client limit reached"
    return [
        _finding(
            "BNC-011",
            "pool_config",
            # warning without a refusal: the documented rule (a risk only), and no "refused 0" title
            Severity.CRITICAL if not events.empty else Severity.WARNING,
            title,
            {
                "refused": _summary(events),
                "reasons": top_values(events, "reason_key"),
                "max_client_conn": limit,
                "setting_source": source,
                "peak_clients_seen": peak,
            },
            "More application connections arrive than PgBouncer accepts. Client connections are cheap in "
            "PgBouncer (no server connection each): raise `max_client_conn` (and the file descriptor limit, "
            "`ulimit -n`, to about max_client_conn + pool sizes) in pgbouncer.ini, and check that the "
            "application's pools are not leaking or oversized (sum of every process's max_size).",
            0.9,
        )
    ]


def find_server_limits(evidence: Evidence) -> list[Finding]:
    """max_db_connections / max_user_connections: pools wait while a database or user is at its cap."""
    databases = evidence.frame("pgbouncer_databases")
    pools = _pools(evidence)
    capped: dict[str, Any] = {}
    if not databases.empty and {"max_connections", "current_connections", "name"} <= set(databases.columns):
        at_cap = databases[
            (databases["max_connections"].fillna(0) > 0)
            & (databases["current_connections"] >= databases["max_connections"])
        ]
        if not at_cap.empty and not pools.empty:
            waiting = pools[pools["cl_waiting"].fillna(0) > 0]
            joined = at_cap.merge(waiting, left_on=["tick_ts", "name"], right_on=["tick_ts", "database"])
            if not joined.empty:
                capped["max_db_connections"] = {
                    "databases": top_values(joined, "name"),
                    "ticks": int(joined["tick_ts"].nunique()),
                    "limit": int(at_cap["max_connections"].max()),
                }
    max_user, _ = setting(evidence, "max_user_connections")
    if max_user and not pools.empty:
        columns = [c for c in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login") if c in pools]
        per_user = pools.assign(servers=pools[columns].fillna(0).sum(axis=1)).groupby(["tick_ts", "user"])
        totals = per_user.agg(servers=("servers", "sum"), waiting=("cl_waiting", "sum")).reset_index()
        hit = totals[(totals["servers"] >= max_user) & (totals["waiting"] > 0)]
        if not hit.empty:
            capped["max_user_connections"] = {
                "users": top_values(hit, "user"),
                "ticks": int(hit["tick_ts"].nunique()),
                "limit": max_user,
            }
    evicted = _events(evidence, "evicted", kinds=("close",))
    if not capped:
        return []
    return [
        _finding(
            "BNC-012",
            "pool_config",
            Severity.WARNING,
            "clients waited while a database or user was at its server connection cap ("
            + ", ".join(capped)
            + ")",
            {**capped, "evicted_server_connections": int(len(evicted))},
            "The per-database or per-user cap on server connections is reached while clients wait. Raise "
            "`max_db_connections` / `max_user_connections` in pgbouncer.ini (or `max_db_connections=` on the "
            "database line) as far as the server allows, or lower the pool sizes of the other pools that "
            "share the cap (PgBouncer evicts their idle connections only when it can)."
            + (
                " Per user:" + ini_users(capped["max_user_connections"]["users"], "max_user_connections=<n>")
                if "max_user_connections" in capped
                else ""
            ),
            0.7,
        )
    ]


def find_pools_exceed_server(evidence: Evidence) -> list[Finding]:
    refusals = _events(
        evidence, "server_too_many_clients", kinds=("close", "pooler_error", "server_login_failed")
    )
    usable = evidence.settings.get("usable_connections")
    databases = evidence.frame("pgbouncer_databases")
    pools = _pools(evidence)
    wanted = None
    if not databases.empty and not pools.empty and "pool_size" in databases:
        last = databases[databases["tick_ts"] == databases["tick_ts"].max()]
        users = pools.groupby("database")["user"].nunique()
        sizes = last.set_index("name")["pool_size"].fillna(0) + last.set_index("name")["reserve_pool"].fillna(
            0
        )
        wanted = int(sum(float(sizes.get(db, 0)) * int(n) for db, n in users.items()))
    too_big = usable is not None and wanted is not None and wanted > int(usable)
    if refusals.empty and not too_big:
        return []
    refusals = _server_logins(refusals)
    return [
        _finding(
            "BNC-013",
            "pool_config",
            Severity.CRITICAL if not refusals.empty else Severity.WARNING,
            (
                f"PostgreSQL refused {len(refusals)} PgBouncer login(s) for lack of connection slots"
                if not refusals.empty
                else f"PgBouncer's pools may open {wanted} server connections; the server allows {usable}"
            ),
            {
                "refusals": _summary(refusals),
                "pool_connections_possible": wanted,
                "server_usable_connections": usable,
            },
            "The pools together may open more server connections than PostgreSQL has slots. Make "
            "default_pool_size x (database, user) pairs + reserve_pool_size fit below max_connections minus "
            "reserved slots, leaving room for other clients: lower `default_pool_size` or cap the total with "
            "`max_db_connections` / `max_user_connections` in pgbouncer.ini, or raise max_connections.",
            0.85 if not refusals.empty else 0.5,
        )
    ]


# -- transaction-mode incompatibilities --------------------------------------------------------------
def find_transaction_mode_breakage(evidence: Evidence) -> list[Finding]:
    mode = pool_mode(evidence)
    pooled = _events(evidence, *POOLING_MODE_BREAKAGE)
    app = app_events(evidence)
    app_prepared = app[app["text"].astype(str).str.contains(PREPARED)] if not app.empty else app
    server = server_events(evidence)
    server_prepared = (
        server[server["message"].astype(str).str.contains(PREPARED)]
        if not server.empty and "message" in server
        else server.iloc[0:0]
    )
    if pooled.empty and (
        mode not in ("transaction", "statement") or (app_prepared.empty and server_prepared.empty)
    ):
        return []
    # what reached clients: a server-side close (statement mode) is passed on to its client, and a
    # notified client close is logged twice (close, pooler error); count each failure once
    reached = _client_side(pooled)
    pooled = reached if not reached.empty else pooled
    max_prepared = config(evidence).get("max_prepared_statements")
    return [
        _finding(
            "BNC-020",
            "pool_config",
            Severity.CRITICAL,
            f"{mode or 'transaction'} pooling broke session features the application relies on "
            f"({len(pooled) + len(app_prepared) + len(server_prepared)} error(s) with prepared statements or "
            "transactions)",
            {
                "pool_mode": mode,
                "pooler_errors": top_values(pooled, "reason_key"),
                "app_errors": int(len(app_prepared)),
                "server_errors": int(len(server_prepared)),
                "max_prepared_statements": max_prepared,
                "pgbouncer_version": (evidence.snapshots.get(CONFIG_SNAPSHOT) or {}).get("version"),
                **first_last(
                    pd.concat([x for x in (pooled, app_prepared) if not x.empty])
                    if not (pooled.empty and app_prepared.empty)
                    else pooled
                ),
            },  # fmt: skip
            "In transaction pooling a client gets another server connection for every transaction, so "
            "anything kept in the session is lost or collides: prepared statements, SET, LISTEN, advisory "
            "locks, temporary tables, WITH HOLD cursors. Either turn server-side prepares off in the client "
            "(psycopg 3: `prepare_threshold=None`; asyncpg: `statement_cache_size=0`; pgJDBC: "
            "`prepareThreshold=0`; Prisma: `pgbouncer=true`), or let PgBouncer 1.21+ track protocol-level "
            "prepared statements: `max_prepared_statements = 100` in pgbouncer.ini; use SET LOCAL inside the "
            "transaction instead of SET; or give the sessions that need these a `pool_mode = session` "
            "database entry.",
            0.85,
        )
    ]


# -- the server side ----------------------------------------------------------------------------------
# PgBouncer's own shutdown closes clients with exactly this text (vocabulary.pgbouncer says when and
# why): told apart from PostgreSQL's shutdown by it, it is an operator action (BNC-032), not the server.
POOLER_SHUTDOWN = POOLER_SHUTDOWN_TEXT


def _pooler_shutdown(events: pd.DataFrame) -> pd.Series:
    return (events["reason_key"] == "server_shutting_down") & (events["reason"] == POOLER_SHUTDOWN)


def find_server_trouble(evidence: Evidence) -> list[Finding]:
    events = _events(evidence, *SERVER_TROUBLE, kinds=("close", "pooler_error", "server_login_failed"))
    if not events.empty:
        events = events[~_pooler_shutdown(events)]
    if events.empty:
        return []
    client = _client_side(events)
    felt = not client.empty
    idle_limit, _ = setting(evidence, "server_idle_timeout")
    server_idle = (evidence.settings.get("settings") or {}).get("idle_session_timeout") or {}
    server_idle_s = None
    try:
        factor = {"ms": 0.001, "s": 1.0, "min": 60.0}.get(str(server_idle.get("unit") or "ms"), 1.0)
        server_idle_s = float(str(server_idle.get("setting"))) * factor or None
    except (TypeError, ValueError):
        pass
    fix = (
        "PostgreSQL, or the path to it, ended or refused PgBouncer's server connections. Look at the server "
        "side for the same minutes (restarts, crashes, pg_terminate_backend, failovers: the triage "
        "notebook's server findings). Let PgBouncer find dead connections before a client does: "
        "`server_check_delay = 10` and `server_check_query = select 1` in pgbouncer.ini, and "
        "`tcp_keepalive = 1`, `tcp_keepidle = 60` for paths that drop idle flows."
    )
    if server_idle_s and (idle_limit is None or idle_limit >= server_idle_s):
        fix += (
            f" The server's idle_session_timeout ({server_idle_s:g} s) ends idle server connections before "
            "PgBouncer retires them: set "
            f"`server_idle_timeout = {max(1.0, server_idle_s * 0.5):g}` (below it)."
        )
    return [
        _finding(
            "BNC-030",
            "server",
            Severity.CRITICAL if felt else Severity.WARNING,
            f"{len(events)} server connection(s) ended or refused by the server side"
            + (
                f"; {len(client)} client connection(s) closed with them"
                if felt
                else " (PgBouncer absorbed it)"
            ),
            {
                "by_reason": top_values(events, "reason_key"),
                "client_side": _summary(client),
                "server_side": _summary(events[events["side"] == "server"]),
                "server_idle_timeout": idle_limit,
                "server_idle_session_timeout_s": server_idle_s,
            },
            fix,
            0.8 if felt else 0.5,
        )
    ]


def find_server_login_failures(evidence: Evidence) -> list[Finding]:
    events = _events(evidence, *SERVER_LOGIN_FAILURES, kinds=("close", "pooler_error", "server_login_failed"))
    if not events.empty:
        # Through 1.23 the server connection of every failed login closes with a bare "login failed"
        # right after the WARNING that names the cause; when that cause is another finding's (a
        # refusal for lack of slots, BNC-013), the bare close is no credentials problem.
        log = _log(evidence)
        warned = log.loc[log["kind"] == "server_login_failed", "ts"]
        bare = (events["kind"] == "close") & (events["reason"] == "login failed")
        if bare.any() and not warned.empty:
            second = pd.Timedelta("1s")
            near = events.loc[bare, "ts"].map(lambda ts: bool(((warned - ts).abs() <= second).any()))
            events = events.drop(near[near].index)
    if events.empty:
        return []
    failures = _server_logins(events)
    return [
        _finding(
            "BNC-031",
            "pool_config",
            Severity.CRITICAL,
            f"PgBouncer could not log in to PostgreSQL ({len(failures)} failure(s)): clients get the "
            "server's error",
            {"failures": _summary(failures), "reasons": top_values(events, "reason", 5)},
            "Fix PgBouncer's credentials for the server: the password in `auth_file` (or what `auth_query` "
            "returns) must match the role's password on the server, with an auth method both support "
            "(scram-sha-256 needs the plain password or the same SCRAM secret); check pg_hba.conf for "
            "PgBouncer's host.",
            0.9,
        )
    ]


def find_operator_actions(evidence: Evidence) -> list[Finding]:
    closes = _events(evidence, *OPERATOR_CLOSES)
    if not closes.empty:
        closes = closes[(closes["reason_key"] != "server_shutting_down") | _pooler_shutdown(closes)]
    events = _events(evidence, *OPERATOR_EVENTS, kinds=("event",))
    if closes.empty and events.empty:
        return []
    client = _client_side(closes)
    return [
        _finding(
            "BNC-032",
            "server",
            Severity.CRITICAL if not client.empty else Severity.WARNING,
            "PgBouncer was restarted, paused or told to drop connections "
            f"({len(events)} event(s), {len(client)} client connection(s) closed)",
            {"events": top_values(events, "reason_key"), "closed": _summary(client), **first_last(events)},
            "Every connection through PgBouncer ends when it restarts or an operator KILLs/DISABLEs a "
            "database. Use `RELOAD` for configuration changes, `PAUSE`/`RESUME` around server maintenance, "
            "and online restarts (`-R`/`so_reuseport`) for upgrades; make the application's pool check "
            "connections on checkout.",
            0.7,
        )
    ]


def find_clients_vanishing(evidence: Evidence) -> list[Finding]:
    gone = _events(evidence, *CLIENT_VANISHED, kinds=("close",))
    closes = _events(evidence, kinds=("close",))
    client_closes = closes[closes["side"] == "client"] if not closes.empty else closes
    if len(gone) < 5 or len(gone) < 0.1 * max(1, len(client_closes)):
        return []
    return [
        _finding(
            "BNC-040",
            "network",
            Severity.WARNING,
            f"{len(gone)} client connection(s) ended without a goodbye (client unexpected eof, or gone "
            "mid-query)",
            {"closed": _summary(gone), "by_reason": top_values(gone, "reason_key")},
            "Clients vanished without a Terminate message: processes killed or restarted, request deadlines "
            "that tear sockets down, or a path resetting idle flows between the application and PgBouncer. "
            "Close pools on shutdown, and give the client side TCP keepalives below the path's idle limit "
            "(libpq `keepalives=1 keepalives_idle=60`).",
            0.5,
        )
    ]


def find_recycling(evidence: Evidence) -> list[Finding]:
    """PgBouncer's normal work, said once as info so nobody mistakes its log lines for an incident."""
    log = _log(evidence)
    if log.empty or "recycling" not in log:
        return []
    recycled = log[(log["kind"] == "close") & log["recycling"].astype(bool)]
    unknown = log[(log["kind"] == "close") & (log["reason_key"] == "unknown")]
    if recycled.empty and unknown.empty:
        return []
    return [
        _finding(
            "BNC-090",
            "pool_config",
            Severity.INFO,
            f"PgBouncer retired {len(recycled)} unused server connection(s) as usual (lifetime, idle "
            "timeout, reload): not an incident",
            {
                "by_reason": top_values(recycled, "reason_key"),
                "unmapped_reasons": sorted(set(unknown["reason"].astype(str)))[:10],
                **first_last(recycled),
            },
            "Nothing to fix: server_lifetime and server_idle_timeout close server connections no client is "
            "using; clients do not notice.",
            0.9,
        )
    ]


DIAGNOSES = (
    find_client_idle_timeout,
    find_idle_transaction_timeout,
    find_query_timeout,
    find_query_wait_timeout,
    find_transaction_timeout,
    find_client_login_timeout,
    find_saturation,
    find_max_client_conn,
    find_server_limits,
    find_pools_exceed_server,
    find_transaction_mode_breakage,
    find_server_trouble,
    find_server_login_failures,
    find_operator_actions,
    find_clients_vanishing,
    find_recycling,
)


def diagnose(evidence: Evidence) -> list[Finding]:
    """Every pooler finding from PgBouncer's console frames and log events (none without them)."""
    return [finding for find in DIAGNOSES for finding in find(evidence)]

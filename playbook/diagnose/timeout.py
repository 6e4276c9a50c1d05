"""Timeouts: the server, a pooler or a proxy ends a session while the pool still holds it."""

from __future__ import annotations

from playbook.diagnose.findings import Finding, Severity
from playbook.diagnose.fix_text import app_login, joined, sql, sql_name
from playbook.diagnose.pool_snippets import can_enforce, stack_fix
from playbook.evidence import Evidence
from playbook.evidence.views import (
    IDLE_IN_TRANSACTION_STATES,
    LimitInForce,
    app_events,
    app_samples,
    app_stack,
    duration_text_seconds,
    first_last,
    limit_in_force,
    overrides_of,
    role_of,
    server_events,
    server_log_read,
    setting_s,
    top_values,
)

# How long each stack keeps an unused connection by default (seconds): what a timeout must exceed.
STACK_DEFAULT_IDLE_S = {
    "psycopg": 600.0,
    "hikaricp": 600.0,
    "asyncpg": 300.0,
    "node-postgres": 10.0,
    "pgbouncer": 600.0,
}

# A kill the server logged names its cause; one only the application saw is a little less sure.
CONFIDENCE_KILL_LOGGED = 0.95
CONFIDENCE_KILL_APP_ONLY = 0.85
CONFIDENCE_CANCELS = 0.6
CONFIDENCE_LIMIT_BELOW_POOL_IDLE = 0.6
CONFIDENCE_DEFAULT_RISK = 0.3  # inferred from a library default, not from what the pool did
# Pool limits inside a server timeout: idle at half of it, lifetime at 80 %, never under a second.
SAFE_IDLE_FRACTION = 0.5
SAFE_LIFETIME_FRACTION = 0.8
# An observed idle age this close to the timeout means the next idle stretch will cross it.
OBSERVED_IDLE_NEAR_FRACTION = 0.8


KILLS = (
    # (finding id, server event, app kind, setting, what it is). Idle-in-transaction kills are not
    # here: the application holding the transaction is the cause (leak.find_transactions_killed).
    (
        "TMO-001",
        "idle_session_timeout",
        "idle_session_timeout",
        "idle_session_timeout",
        "idle-session timeout",
    ),
    ("TMO-003", "transaction_timeout", "transaction_timeout", "transaction_timeout", "transaction timeout"),
)


def _safe_pool_limits(timeout_s: float) -> tuple[float, float]:
    """Idle and lifetime limits comfortably inside a server timeout (never below a second)."""
    idle = max(1.0, round(timeout_s * SAFE_IDLE_FRACTION, 1))
    return idle, max(idle, round(timeout_s * SAFE_LIFETIME_FRACTION, 1))


def _unknown_limit(setting: str, role: str) -> str:
    """What to do when the evidence holds no value for the limit that ended the sessions; `role` is
    the role as SQL writes it (fixes.sql_name)."""
    return joined(
        f"The evidence holds no value of {setting} for these sessions: not server-wide, not ALTER ROLE "
        "or ALTER DATABASE (a SET in the session, the connection string's options, or a catalog the "
        "playbook could not read). Read the value in force as the application's role before sizing "
        f"anything against it (`SHOW {setting};`), then keep the pool's limits well inside it (idle at "
        "half of it, lifetime at 80 %), or lift it for the role:",
        sql(f"ALTER ROLE {role} SET {setting} = 0"),
    )


def _kill_fix(evidence: Evidence, setting: str, limit: LimitInForce | None, role: str) -> str:
    """The fix for sessions a server timeout ended, computed from the limit that applied to them;
    without one, how to find it (never a number made up in its place). `role` is the role as SQL
    writes it (fixes.sql_name)."""
    stack = app_stack(evidence)
    if setting == "idle_session_timeout":
        if limit is None:
            return _unknown_limit(setting, role)
        idle, life = _safe_pool_limits(limit.seconds)
        server_side = joined(
            "stop the server from ending pooled sessions for the application's role (or set a value "
            "above the pool's own limits):",
            sql(f"ALTER ROLE {role} SET idle_session_timeout = 0"),
        )
        pool_side = stack_fix(
            stack, max_idle_s=idle, max_lifetime_s=life, keepalives_idle_s=None, **app_login(evidence)
        )
        if not can_enforce(stack, max_idle_s=idle, max_lifetime_s=life):
            # The pool cannot retire connections that fast: the server's limit is what must change.
            return joined(
                f"The server ends sessions idle longer than idle_session_timeout ({limit.text}), and "
                f"{stack}'s pool cannot keep its connections younger than that. Change the server side: ",
                server_side,
                "\n\nWhat the pool can do:\n\n",
                pool_side,
            )
        return joined(
            f"The server ends sessions idle longer than idle_session_timeout ({limit.text}) while the pool "
            "keeps them. Either keep pooled connections younger than that and check them on checkout:\n\n",
            pool_side,
            "\n\nor ",
            server_side,
        )
    if limit is None:
        return _unknown_limit(setting, role)
    # A statement_timeout inside the transaction limit cancels the slow statement alone: the
    # request fails, but the session (and the pool's connection) survives.
    statement_ms = max(1, round(limit.seconds * SAFE_IDLE_FRACTION * 1000))
    statement = f"{statement_ms // 1000}s" if statement_ms % 1000 == 0 else f"{statement_ms}ms"
    return joined(
        f"transaction_timeout ({limit.text}) ends the whole session when a transaction runs longer than "
        f"that. Keep transactions shorter than {limit.seconds:g} s; cap the statements inside it so a slow "
        "one is canceled and the session survives:",
        sql(f"ALTER ROLE {role} SET statement_timeout = '{statement}'"),
        "or raise transaction_timeout for the role that needs long transactions:",
        sql(f"ALTER ROLE {role} SET transaction_timeout = '10min'"),
    )


def find_kills(evidence: Evidence) -> list[Finding]:
    """TMO-001/003: sessions the server ended by idle_session_timeout, or by transaction_timeout
    while they were running work (a transaction_timeout kill of a session idle in its transaction
    is the application's leak: LEAK-005), from the server log's FATAL lines or, without a server
    log, from the application's errors naming them.

    The limit named and sized against is the one that applied to the killed sessions' role and
    database (limit_in_force: an ALTER ROLE/DATABASE value before the server-wide one); without
    one the finding says it is not known. Always critical: each kill is a connection the pool
    believed open.
    """
    findings = []
    for finding_id, event, kind, setting, what in KILLS:
        server = server_events(evidence, event)
        server = server[~server["last_state"].isin(IDLE_IN_TRANSACTION_STATES)]
        app = app_events(evidence, kind)
        if server.empty and (app.empty or (server_log_read(evidence) and finding_id == "TMO-003")):
            continue
        limit = limit_in_force(evidence, setting, server if not server.empty else app)
        count = max(len(server), len(app))
        findings.append(
            Finding(
                id=finding_id,
                category="timeout",
                severity=Severity.CRITICAL,
                confidence=CONFIDENCE_KILL_LOGGED if not server.empty else CONFIDENCE_KILL_APP_ONLY,
                title=f"{count} session(s) ended by the server's {what} ({setting} = "
                f"{limit.text if limit else 'value not in the evidence'})",
                evidence={
                    "server_log_events": len(server),
                    "app_log_errors": len(app),
                    "limit_s": limit.seconds if limit else None,
                    "limit_scope": limit.scope if limit else None,
                    "setting_s": setting_s(evidence, setting),
                    "overrides": overrides_of(evidence, setting),
                    "users": top_values(server, "user"),
                    "applications": top_values(server, "application"),
                    **first_last(server if not server.empty else app),
                },
                recommendation=_kill_fix(
                    evidence, setting, limit, sql_name(role_of(server, ""), "<app_role>")
                ),
            )
        )
    return findings


def find_statement_cancels(evidence: Evidence) -> list[Finding]:
    """TMO-004: statements canceled by statement_timeout or lock_timeout (server log or app log).

    A warning, never critical: the session survives, so these explain failed requests, not closed
    connections.
    """
    cancels = server_events(evidence, "statement_timeout", "lock_timeout")
    app = app_events(evidence, "statement_timeout", "lock_timeout")
    count = max(len(cancels), len(app))
    if not count:
        return []
    return [
        Finding(
            id="TMO-004",
            category="timeout",
            severity=Severity.WARNING,
            confidence=CONFIDENCE_CANCELS,
            title=f"{count} statement(s) canceled by statement_timeout or lock_timeout (sessions survive)",
            evidence={
                "server_log_events": top_values(cancels, "event"),
                "app_log_errors": len(app),
                **first_last(cancels if not cancels.empty else app),
            },
            recommendation=joined(
                "These cancel a statement, not the session: they explain failed requests, not closed "
                "connections. Find the slow statements (pg_stat_statements) or the lock holders, or raise "
                "the limit for the role that needs it:",
                sql(f"ALTER ROLE {sql_name(role_of(cancels, ''), '<role>')} SET statement_timeout = '30s'"),
            ),
        )
    ]


def find_limits_shorter_than_pool_idle(evidence: Evidence, kills: list[Finding]) -> list[Finding]:
    """TMO-005: idle_session_timeout (server-wide, or per role/database) shorter than the pool keeps
    connections idle. Skipped when the kills themselves were found (TMO-001 is then the finding).

    A warning only with evidence of harm about to happen: the sampler saw a pooled connection idle
    for OBSERVED_IDLE_NEAR_FRACTION of the timeout or more. A timeout merely below the stack's
    default idle limit (STACK_DEFAULT_IDLE_S), while nothing in the window came near it, is info:
    the application's own behaviour contradicts the risk, and the finding says what would confirm it.
    """
    if any(f.id == "TMO-001" for f in kills):
        return []  # the kills themselves are the finding
    candidates = [("server-wide", setting_s(evidence, "idle_session_timeout"))]
    candidates += [
        (f"role {o['role'] or '*'} / database {o['database'] or '*'}", duration_text_seconds(o["value"]))
        for o in overrides_of(evidence, "idle_session_timeout")
    ]
    samples = app_samples(evidence)
    idle = samples[samples["state"] == "idle"] if not samples.empty else samples
    observed_idle_s = float(idle["state_age_s"].max()) if not idle.empty else 0.0
    stack = app_stack(evidence)
    pool_idle_s = STACK_DEFAULT_IDLE_S.get(stack)
    findings = []
    for scope, timeout_s in candidates:
        if not timeout_s:
            continue
        close_to_observed = observed_idle_s >= OBSERVED_IDLE_NEAR_FRACTION * timeout_s
        below_default = pool_idle_s is not None and timeout_s < pool_idle_s
        if not (below_default or close_to_observed):
            continue
        idle_limit, life = _safe_pool_limits(timeout_s)
        if close_to_observed:
            title = (
                f"idle_session_timeout {timeout_s:g} s ({scope}) is about to end pooled connections: one "
                f"sat idle {observed_idle_s:.0f} s in this window"
            )
            confirm = ""
        else:
            title = (
                f"idle_session_timeout {timeout_s:g} s ({scope}) is below {stack}'s default idle limit "
                f"({pool_idle_s:g} s), though no connection sat idle longer than {observed_idle_s:.0f} s here"
            )
            confirm = (
                "Nothing in this window was harmed: the pool keeps its connections busy. It would bite when "
                "traffic drops (nights, weekends): confirm with a run over a quiet hour, or with FATAL 57P05 "
                "lines in the server log (--server-log, --since). To be safe regardless:\n\n"
            )
        findings.append(
            Finding(
                id="TMO-005",
                category="timeout",
                severity=Severity.WARNING if close_to_observed else Severity.INFO,
                confidence=CONFIDENCE_LIMIT_BELOW_POOL_IDLE if close_to_observed else CONFIDENCE_DEFAULT_RISK,
                title=title,
                evidence={
                    "timeout_s": timeout_s,
                    "scope": scope,
                    "observed_idle_s": round(observed_idle_s, 1),
                    "stack": stack,
                    "stack_default_idle_s": pool_idle_s,
                },
                recommendation=confirm
                + stack_fix(
                    stack,
                    max_idle_s=idle_limit,
                    max_lifetime_s=life,
                    keepalives_idle_s=None,
                    **app_login(evidence),
                ),
            )
        )
    return sorted(findings, key=lambda f: -f.severity.rank)[:1]


def diagnose(evidence: Evidence) -> list[Finding]:
    """Every timeout finding (TMO-001..005) of this evidence."""
    kills = find_kills(evidence)
    return kills + find_statement_cancels(evidence) + find_limits_shorter_than_pool_idle(evidence, kills)

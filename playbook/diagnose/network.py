"""Network: the path between the application and the server drops or resets connections."""

from __future__ import annotations

from typing import Any

import pandas as pd

from playbook.diagnose.findings import Finding, Severity
from playbook.diagnose.fix_text import app_login, dsn, joined, sql
from playbook.diagnose.path_cutoff import PathCutoff, ProbeVerdict, path_cutoff, probed
from playbook.diagnose.pool_snippets import stack_fix
from playbook.evidence import Evidence
from playbook.evidence.views import (
    APP_SESSION_LOST,
    SERVER_SIDE_ENDINGS,
    app_events,
    app_stack,
    first_last,
    pooler_client_closes,
    refusal,
    server_events,
    server_log_read,
    top_values,
)
from playbook.evidence.vocab import OWN_APPLICATION_NAME
from playbook.vocabulary.findings import RESET_EVENTS

# The shortest common silent idle cut-offs on cloud paths (REFERENCE.md): AWS NLB/NAT 350 s,
# Azure 4 min. Keepalives must fire well before them.
SHORTEST_PATH_IDLE_S = 240
SAFE_KEEPALIVE_IDLE_S = 60
CONNECT_SLOW_MS = 500.0
# A reset this close to an unexpected EOF from the same host is the same client process dying.
DYING_CLIENT_WINDOW = pd.Timedelta(seconds=1)
# Three resets or lost sessions in one window is a path that does it, not a fluke.
TROUBLE_CRITICAL_COUNT = 3
CONFIDENCE_RESETS = 0.85
CONFIDENCE_UNEXPLAINED_WITH_LOG = 0.8
CONFIDENCE_UNEXPLAINED_WITHOUT_LOG = 0.5  # no server log read: the server may have ended them
CONFIDENCE_KEEPALIVES_IN_TROUBLE = 0.6
CONFIDENCE_KEEPALIVES_CONTEXT = 0.3
CONFIDENCE_SLOW_CONNECTS = 0.6
CONFIDENCE_OWN_SESSION_LOST = 0.5
CONFIDENCE_PROBED = 0.9  # measured on purpose, from this host


def _keepalive_fix(evidence: Evidence) -> str:
    """Keepalives below the shortest common cut-off: the advice when no cut-off was measured."""
    return joined(
        "Keep idle flows visibly alive below the path's cut-off (none was measured here; the shortest "
        f"common one is {SHORTEST_PATH_IDLE_S} s, assumed). From the client, add to the DSN:",
        dsn(
            f"keepalives=1 keepalives_idle={SAFE_KEEPALIVE_IDLE_S} keepalives_interval=10 "
            "keepalives_count=3 tcp_user_timeout=30000"
        ),
        "On the server, for every client at once:",
        sql(
            f"ALTER SYSTEM SET tcp_keepalives_idle = {SAFE_KEEPALIVE_IDLE_S}",
            "ALTER SYSTEM SET tcp_keepalives_interval = 10",
            "ALTER SYSTEM SET tcp_keepalives_count = 3",
            "SELECT pg_reload_conf()",
        ),
        "And in the pool:\n\n",
        stack_fix(
            app_stack(evidence),
            max_idle_s=None,
            max_lifetime_s=None,
            keepalives_idle_s=SAFE_KEEPALIVE_IDLE_S,
            **app_login(evidence),
        ),
    )


def _keepalives_help_fix(evidence: Evidence, cutoff: PathCutoff) -> str:
    """A probe showed keepalives keep idle flows alive through the hop: keepalives below the cut."""
    below = cutoff.fix_below_s
    interval = max(1, min(10, below))
    return joined(
        "The probe showed keepalives keep an idle flow alive through this hop (it counts packets, as a "
        f"NAT, conntrack firewall or cloud load balancer does). Send them well below the cut-off: after "
        f"{below} s idle (a third of it). From the client, add to the DSN:",
        dsn(
            f"keepalives=1 keepalives_idle={below} keepalives_interval={interval} keepalives_count=3 "
            "tcp_user_timeout=30000"
        ),
        "On the server, for every client at once:",
        sql(
            f"ALTER SYSTEM SET tcp_keepalives_idle = {below}",
            f"ALTER SYSTEM SET tcp_keepalives_interval = {interval}",
            "ALTER SYSTEM SET tcp_keepalives_count = 3",
            "SELECT pg_reload_conf()",
        ),
        f"Or let the pool close connections idle {below} s, so none is idle when the path cuts. "
        "In the pool:\n\n",
        stack_fix(
            app_stack(evidence),
            max_idle_s=below,
            max_lifetime_s=None,
            keepalives_idle_s=below,
            **app_login(evidence),
        ),
    )


def _keepalives_useless_fix(evidence: Evidence, cutoff: PathCutoff) -> str:
    """A probe showed keepalives do not help: the hop counts only relayed data (an application-level
    proxy), so the pool's own idle limit below the cut-off, or the hop's own timeout raised."""
    below = cutoff.fix_below_s
    return joined(
        "The probe showed keepalives do not keep an idle flow alive through this hop: it counts only "
        "relayed data, as an application-level proxy does (HAProxy `timeout client`/`timeout server`, "
        "PgBouncer's client_idle_timeout, a cloud database proxy). Keepalives will not help here.\n\n"
        f"1. Let the pool close connections idle {below} s (a third of the cut-off) and check each one "
        "at checkout, so none is idle when the hop cuts. In the pool:\n\n",
        stack_fix(
            app_stack(evidence),
            max_idle_s=below,
            max_lifetime_s=None,
            keepalives_idle_s=None,
            **app_login(evidence),
        ),
        "\n2. Or raise the hop's own idle timeout above the pool's idle limit (HAProxy: `timeout client` "
        "and `timeout server`; PgBouncer: client_idle_timeout = 0 or above the pool's limit; a cloud "
        "proxy: its idle client timeout).",
    )


def _cutoff_fix(evidence: Evidence, cutoff: PathCutoff) -> str:
    """Fixes sized against a measured cut-off. When a probe showed whether keepalives help, the
    fix for that kind of hop; else for both kinds of hop the evidence cannot tell apart:
    a pool idle limit below it works through every hop; keepalives below it only through hops that
    track packets (NAT, conntrack, cloud load balancers), not through an application-level proxy,
    which counts only relayed data (REFERENCE.md "Proxies and keepalives")."""
    if cutoff.keepalives_help is True:
        return _keepalives_help_fix(evidence, cutoff)
    if cutoff.keepalives_help is False:
        return _keepalives_useless_fix(evidence, cutoff)
    below = cutoff.fix_below_s
    interval = max(1, min(10, below))
    return joined(
        f"Size the fix below that cut-off: {below} s (a third of it) leaves room for the pool's and the "
        "kernel's timers.\n\n"
        f"1. Whatever the hop, let the pool close connections idle {below} s (and check each one at "
        "checkout), so none is idle when the path cuts. In the pool:\n\n",
        stack_fix(
            app_stack(evidence),
            max_idle_s=below,
            max_lifetime_s=None,
            keepalives_idle_s=below,
            **app_login(evidence),
        ),
        f"\n2. The keepalives in that snippet (after {below} s idle) keep the flow open only if the hop is a "
        "NAT, conntrack firewall or cloud load balancer, which counts packets. An application-level "
        "proxy (HAProxy `timeout client`/`timeout server`, PgBouncer's client_idle_timeout, a cloud "
        "database proxy) counts only relayed data: there, raise that timeout above the pool's idle "
        "limit, or rely on step 1. On the server, for every client at once:",
        sql(
            f"ALTER SYSTEM SET tcp_keepalives_idle = {below}",
            f"ALTER SYSTEM SET tcp_keepalives_interval = {interval}",
            "ALTER SYSTEM SET tcp_keepalives_count = 3",
            "SELECT pg_reload_conf()",
        ),
    )


def _path_fix(evidence: Evidence, cutoff: PathCutoff | None) -> str:
    return _cutoff_fix(evidence, cutoff) if cutoff else _keepalive_fix(evidence)


def _cutoff_note(cutoff: PathCutoff | None) -> str:
    if cutoff is None:
        return ""
    return f"The sessions were lost at a steady idle age: the path's cut-off is {cutoff.text()}. "


def path_resets(evidence: Evidence) -> pd.DataFrame:
    """The resets the path is suspected of: the playbook's own sessions left out, and so are the
    resets of a client that died (a reset at the same moment as its unexpected EOF mid-transaction,
    from the same host: the process ended, LEAK-003 tells it)."""
    resets = server_events(evidence, *RESET_EVENTS)
    resets = resets[~resets["application"].str.startswith(OWN_APPLICATION_NAME)]
    eofs = server_events(evidence, "unexpected_eof_in_transaction")
    if resets.empty or eofs.empty:
        return resets
    dying = pd.to_datetime(eofs["ts"], utc=True)
    hosts = set(eofs["host"].astype(str))

    def with_a_dying_client(row: pd.Series) -> bool:
        near = ((dying - pd.Timestamp(row["ts"])).abs() <= DYING_CLIENT_WINDOW).any()
        return bool(near and str(row["host"]) in hosts)

    return resets[~resets.apply(with_a_dying_client, axis=1).astype(bool)]


def find_resets(evidence: Evidence) -> list[Finding]:
    """NET-001: resets, broken pipes and receive timeouts the server logged (RESET_EVENTS) on the
    application's sessions (path_resets).

    Critical from TROUBLE_CRITICAL_COUNT; the fix is keepalives below the path's idle cut-off.
    """
    resets = path_resets(evidence)
    if resets.empty:
        return []
    severity = Severity.CRITICAL if len(resets) >= TROUBLE_CRITICAL_COUNT else Severity.WARNING
    cutoff = path_cutoff(evidence)
    return [
        Finding(
            id="NET-001",
            category="network",
            severity=severity,
            confidence=CONFIDENCE_RESETS,
            title=f"{len(resets)} connection(s) reset or broken on the way to the client (server log)",
            evidence={
                "events": top_values(resets, "event"),
                "hosts": top_values(resets, "host"),
                "users": top_values(resets, "user"),
                **({"path_cutoff": cutoff.as_evidence()} if cutoff else {}),
                **first_last(resets),
            },
            recommendation=joined(
                "Something between the application and the server resets flows (a firewall, NAT, load "
                "balancer or proxy idle limit). "
                + (_cutoff_note(cutoff) or "Find the idle limit on the path and keep flows below it.")
                + "\n\n",
                _path_fix(evidence, cutoff),
            ),
        )
    ]


def find_unexplained_app_losses(evidence: Evidence) -> list[Finding]:
    """NET-002: the application logged lost sessions (APP_SESSION_LOST), the server log holds no
    server-side ending (SERVER_SIDE_ENDINGS) and PgBouncer's log no client close the application
    feels: the path dropped them. Less sure without a server log.
    """
    lost = app_events(evidence, *APP_SESSION_LOST)
    if lost.empty or not server_events(evidence, *SERVER_SIDE_ENDINGS).empty:
        return []
    if not pooler_client_closes(evidence).empty:
        return []  # PgBouncer ended them (BNC findings say why): not the path
    log_read = server_log_read(evidence)
    severity = Severity.CRITICAL if len(lost) >= TROUBLE_CRITICAL_COUNT else Severity.WARNING
    evidence_note: dict[str, Any] = {
        "app_errors": top_values(lost, "kind"),
        "stack": app_stack(evidence),
        "server_log_read": log_read,
        **first_last(lost),
    }
    cutoff = path_cutoff(evidence)
    if cutoff:
        evidence_note["path_cutoff"] = cutoff.as_evidence()
    return [
        Finding(
            id="NET-002",
            category="network",
            severity=severity,
            confidence=CONFIDENCE_UNEXPLAINED_WITH_LOG if log_read else CONFIDENCE_UNEXPLAINED_WITHOUT_LOG,
            title=(
                f"the application lost {len(lost)} session(s) that the server did not end"
                + ("" if log_read else " (no server log read: pass --server-log to confirm)")
            ),
            evidence=evidence_note,
            recommendation=joined(
                "The server log shows no termination, timeout, crash or restart for these sessions, so the "
                "path dropped them (a NAT or load balancer that forgets idle flows makes the next query hang "
                "and fail). "
                + (_cutoff_note(cutoff) or "Check the path's idle timeout and keep flows alive below it.")
                + "\n\n",
                _path_fix(evidence, cutoff),
            ),
        )
    ]


def find_default_keepalives(evidence: Evidence, network_trouble: bool) -> list[Finding]:
    """NET-003: the server's keepalives in force start later than SHORTEST_PATH_IDLE_S.

    Info on its own (a risk, not harm); a warning when the network is in trouble in this window.

    The playbook's own socket is evidence only: it sets keepalives of its own, the application
    may not, which is why the server side is what is judged here.
    """
    in_force = evidence.settings.get("keepalives_in_force") or {}
    try:
        server_idle = int(in_force.get("tcp_keepalives_idle") or 0)
    except ValueError:
        server_idle = 0
    if not in_force or (server_idle and server_idle <= SHORTEST_PATH_IDLE_S):
        return []
    return [
        Finding(
            id="NET-003",
            category="network",
            severity=Severity.WARNING if network_trouble else Severity.INFO,
            confidence=CONFIDENCE_KEEPALIVES_IN_TROUBLE if network_trouble else CONFIDENCE_KEEPALIVES_CONTEXT,
            title=(
                f"the server's TCP keepalives start after {server_idle or 'the OS default'} s: idle flows "
                "look "
                f"dead to NATs and load balancers that cut at {SHORTEST_PATH_IDLE_S}–350 s unless the "
                "clients "
                "send keepalives of their own"
            ),
            evidence={
                "server_keepalives_in_force": in_force,
                "playbook_socket": evidence.snapshots.get("keepalive_probe") or {},
            },
            recommendation=_path_fix(evidence, path_cutoff(evidence)),
        )
    ]


def find_slow_connects(evidence: Evidence) -> list[Finding]:
    """NET-004 from the connect probes: p95 at or above CONNECT_SLOW_MS, or failures (critical when
    every probe failed, or when the path kept the playbook itself out)."""
    refused = refusal(evidence, "network")
    if refused:
        return [
            Finding(
                id="NET-004",
                category="network",
                severity=Severity.CRITICAL,
                confidence=CONFIDENCE_SLOW_CONNECTS,
                title="the playbook could not reach the server from this host: the path timed out or dropped",
                evidence={"playbook_refused": refused.get("reason")},
                recommendation=(
                    "Connections from this host do not get through: check the route, security groups and "
                    "the server's listen_addresses/pg_hba, and set connect_timeout so clients fail fast. "
                    "The logs given were diagnosed on their own."
                ),
            )
        ]
    summary = (evidence.snapshots.get("latency") or {}).get("connect") or {}
    failures = int(summary.get("failures") or 0)
    p95 = summary.get("p95_ms")
    if not failures and (p95 is None or p95 < CONNECT_SLOW_MS):
        return []
    severity = (
        Severity.CRITICAL if failures and failures >= int(summary.get("samples") or 1) else Severity.WARNING
    )
    return [
        Finding(
            id="NET-004",
            category="network",
            severity=severity,
            confidence=CONFIDENCE_SLOW_CONNECTS,
            title=(
                f"connecting is slow or failing from this host: p95 {p95 or 0:.0f} ms, {failures} failure(s)"
            ),
            evidence={"connect_probe": summary},
            recommendation=(
                "Connection set-up crosses the network and authentication each time: keep a pool warm "
                "(min_size > 0), set connect_timeout so a dead path fails fast, and look at DNS, TLS and "
                "pg_hba (scram iterations) when every connect is slow."
            ),
        )
    ]


def find_own_session_lost(evidence: Evidence) -> list[Finding]:
    """NET-005: the sampler's own session was lost (manifest gaps) with no 57xxx reason and no
    server-side ending in the log: the path is unreliable for everyone."""
    gaps = evidence.gaps
    unexplained = [
        g
        for g in gaps
        if not (g.get("sqlstate") or "").startswith("57")
        and "administrator command" not in (g.get("error") or "")
    ]
    if not unexplained or not server_events(evidence, *SERVER_SIDE_ENDINGS).empty:
        return []
    return [
        Finding(
            id="NET-005",
            category="network",
            severity=Severity.WARNING,
            confidence=CONFIDENCE_OWN_SESSION_LOST,
            title=f"the playbook's own session was lost {len(unexplained)} time(s) while sampling",
            evidence={"gaps": unexplained[:10]},
            recommendation=(
                "The monitoring session itself was cut, with no server-side reason logged: the path is "
                "unreliable. Compare with the network notebook's connect and idle-survival probes."
            ),
        )
    ]


def _server_end_fix(verdict: ProbeVerdict) -> str:
    seconds = verdict.idle_cutoff_s or 0.0
    below = max(1, int(seconds // 3))
    said = f' ("{verdict.said}")' if verdict.said else ""
    return (
        f"The far end itself ended connections idle {seconds:.1f} s{said}, not the path: the server's "
        "idle_session_timeout, or a pooler's idle timeout (PgBouncer's client_idle_timeout). Let the "
        f"pool close connections idle {below} s, below it, or lift that timeout for the application "
        "(ALTER ROLE … SET idle_session_timeout = 0; client_idle_timeout = 0 in pgbouncer.ini); "
        "keepalives do not change it."
    )


def find_probed_cutoff(evidence: Evidence) -> list[Finding]:
    """NET-007: `playbook probe path` (joined with --path-probe) saw idle connections cut.

    Warning when keepalives kept flows alive through the cut (a setting away), critical when they
    did not or it is unknown (only the pool's own idle limit, or the hop's timeout, saves them).
    The fix is sized against the probed cut-off and fits the kind of hop the probe found.
    """
    verdict = probed(evidence)
    if verdict is None or verdict.idle_cutoff_s is None:
        return []
    severity = Severity.WARNING if verdict.keepalives_help else Severity.CRITICAL
    cutoff = path_cutoff(evidence)
    if verdict.server_side or cutoff is None:
        fix = _server_end_fix(verdict)
    else:
        fix = joined(f"The path's cut-off is {cutoff.text()}.\n\n", _path_fix(evidence, cutoff))
    return [
        Finding(
            id="NET-007",
            category="network",
            severity=severity,
            confidence=CONFIDENCE_PROBED,
            title=f"{verdict.text()} (playbook probe path)",
            evidence={"path": verdict.as_summary()},
            recommendation=fix,
        )
    ]


def diagnose(evidence: Evidence) -> list[Finding]:
    """Every network finding (NET-001..005, NET-007); keepalive advice is raised to a warning by
    trouble."""
    trouble = find_resets(evidence) + find_unexplained_app_losses(evidence) + find_own_session_lost(evidence)
    probe = find_probed_cutoff(evidence)
    return (
        trouble
        + probe
        + find_default_keepalives(evidence, bool(trouble or probe))
        + find_slow_connects(evidence)
    )

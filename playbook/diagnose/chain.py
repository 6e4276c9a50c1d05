"""The timeout chain, end to end: which layer gives up on an idle connection first.

A pooled connection crosses up to four layers, and each may end it when it sits idle:

    client pool (idle / lifetime)  <  pooler (client_idle_timeout; server_idle_timeout)
        <  server (idle_session_timeout)  <  network path (NAT / load balancer idle cut-off)

The chain holds when each layer lets go before the next one cuts: then the layer that owns the
connection closes it cleanly and nobody is surprised. A broken link is a layer that cuts a
connection the layer before it still believes open; the fix goes on the layer that must change
(usually the one before the cut: let go sooner; sometimes the cutting one: stop cutting).
Keepalives below the path's cut-off make idle flows look busy to the path, which mends the last
link whatever the idle times.

Every value says where it came from: "measured" (seen in this window: the path's cut-off when
sessions were lost at a steady idle age, diagnose.path_cutoff), "configured" (read from the
server's or the pooler's settings), "default" (the library's or PgBouncer's default, not
confirmed) or "assumed" (a typical value, e.g. the path's cut-off when none was measured). An
assumed cut-off is never a certain break. Pure functions of evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from playbook.diagnose import pgbouncer_findings
from playbook.diagnose.path_cutoff import PROBE_SOURCE, path_cutoff, probed
from playbook.diagnose.timeout import STACK_DEFAULT_IDLE_S
from playbook.evidence import Evidence
from playbook.evidence.pgbouncer_frames import DEFAULTS
from playbook.evidence.settings import duration_text_seconds
from playbook.evidence.views import app_samples, app_stack, overrides_of

Source = Literal["measured", "configured", "default", "assumed"]
Layer = Literal["client pool", "pooler", "server", "network path"]

# The shortest common silent cut-off on cloud paths (REFERENCE.md: AWS NLB/NAT 350 s, Azure 4 min).
ASSUMED_PATH_IDLE_S = 240.0


@dataclass(frozen=True)
class ChainValue:
    """One layer's idle limit (seconds; None when that layer never cuts) and where it came from.

    `forever`: a holder that keeps some connections idle with no limit at all (psycopg_pool's
    min_size connections): any layer that cuts idle connections breaks against it.
    """

    layer: Layer
    setting: str
    seconds: float | None
    source: Source
    note: str = ""
    forever: bool = False


@dataclass(frozen=True)
class ChainLink:
    """Whether `before` lets go of an idle connection before `after` cuts it."""

    before: ChainValue
    after: ChainValue
    holds: bool
    fix_layer: Layer | None
    fix: str

    @property
    def certain(self) -> bool:
        """Broken for sure (both values measured or configured), or only at risk (a default or an
        assumption on either side: what a quiet hour or the real path would confirm)."""
        return self.before.source in ("measured", "configured") and self.after.source in (
            "measured",
            "configured",
        )


def has_pooler(evidence: Evidence) -> bool:
    """PgBouncer is in the path when its console or its log was read, or the app log names it."""
    return (
        evidence.collected("pgbouncer_console")
        or evidence.collected("pgbouncer_log")
        or app_stack(evidence) == "pgbouncer"
    )


def _pooler_setting(evidence: Evidence, name: str) -> tuple[float | None, Source]:
    """PgBouncer's setting as the pooler diagnosis reads it; its default when SHOW CONFIG lacks it."""
    value, read_from = pgbouncer_findings.setting(evidence, name)
    if read_from == "SHOW CONFIG":
        return value, "configured"
    return (DEFAULTS.get(name) or None), "default"


def client_hold(evidence: Evidence) -> ChainValue:
    """How long the application's pool keeps a connection idle: the longest idle age seen in the
    window when connections were sampled (a floor of the truth), else the stack's default."""
    samples = app_samples(evidence)
    idle = samples[samples["state"] == "idle"] if not samples.empty else samples
    seen = float(idle["state_age_s"].max()) if not idle.empty else None
    seen_note = f"longest idle seen here: {seen:.0f} s" if seen is not None else ""
    stack = app_stack(evidence)
    if stack == "psycopg":
        # psycopg_pool's max_idle closes only connections above min_size (pool.py _shrink_pool),
        # and min_size defaults to 4: those stay idle until used, however long that is.
        return ChainValue(
            "client pool",
            "psycopg_pool min_size connections (max_idle spares them)",
            None,
            "default",
            joined_note(seen_note, "min_size=0 lets max_idle retire every idle connection"),
            forever=True,
        )
    default = STACK_DEFAULT_IDLE_S.get(stack)
    if default:
        # A pool keeps its idle connections up to its idle limit (and its minimum ones for good):
        # the window shows only how long they happened to sit idle so far.
        return ChainValue(
            "client pool", f"{stack} idle limit", max(default, seen or 0.0), "default", seen_note
        )
    if seen is not None:
        return ChainValue("client pool", "idle (seen)", round(seen, 1), "measured", "the stack is unknown")
    return ChainValue("client pool", "idle limit", None, "assumed", "unknown stack: no idle limit assumed")


def joined_note(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def server_idle(evidence: Evidence) -> ChainValue:
    """idle_session_timeout: the shortest of the server-wide value and any role/database override."""
    values: list[tuple[float, str]] = []
    server_wide = evidence.setting_s("idle_session_timeout")
    if server_wide:
        values.append((server_wide, "server-wide"))
    for override in overrides_of(evidence, "idle_session_timeout"):
        seconds = duration_text_seconds(override["value"])
        if seconds:
            values.append((seconds, f"role {override['role'] or '*'} / db {override['database'] or '*'}"))
    if not values:
        seen = evidence.setting("idle_session_timeout") is not None
        return ChainValue("server", "idle_session_timeout", None, "configured" if seen else "default", "off")
    seconds, scope = min(values)
    return ChainValue("server", "idle_session_timeout", seconds, "configured", scope)


def path_idle(evidence: Evidence) -> ChainValue:
    """The path's idle cut-off: measured when sessions were lost at a steady idle age with no
    server-side reason, or when `playbook probe path` was joined (path_cutoff; a probe that saw no
    cut measures "none up to its longest rung"), else assumed (the playbook cannot see a NAT's table); the
    keepalives in force noted, since they make idle flows look busy to a hop that counts packets."""
    in_force = evidence.settings.get("keepalives_in_force") or {}
    keepalive = str(in_force.get("tcp_keepalives_idle") or "")
    note = f"server keepalives start after {keepalive} s" if keepalive and keepalive != "0" else ""
    cutoff = path_cutoff(evidence)
    if cutoff:
        return ChainValue(
            "network path",
            f"idle cut-off ({PROBE_SOURCE}{'' if cutoff.kind == 'measured' else ', at most'})"
            if cutoff.source == PROBE_SOURCE
            else "idle cut-off (sessions lost at a steady idle age)"
            if cutoff.kind == "measured"
            else "idle cut-off (at most: sessions found lost at a steady idle age)",
            round(cutoff.seconds, 1),
            "measured",
            joined_note(cutoff.text(), note),
        )
    verdict = probed(evidence)
    if verdict is not None and verdict.idle_cutoff_s is None:
        # `playbook probe path` kept connections idle up to its longest rung: no cut up to there
        return ChainValue(
            "network path",
            "idle cut-off (playbook probe path: none)",
            None,
            "measured",
            joined_note(f"idle connections survived up to {verdict.max_idle_s:g} s", note),
        )
    return ChainValue(
        "network path", "NAT / load balancer idle cut-off", ASSUMED_PATH_IDLE_S, "assumed", note
    )


def timeout_chain(evidence: Evidence) -> list[ChainValue]:
    """The idle limits from the application to the path, in the order a connection crosses them."""
    chain = [client_hold(evidence)]
    if has_pooler(evidence):
        client_idle, source = _pooler_setting(evidence, "client_idle_timeout")
        chain.append(
            ChainValue("pooler", "client_idle_timeout", client_idle, source, "off" if not client_idle else "")
        )
        server_side, source = _pooler_setting(evidence, "server_idle_timeout")
        chain.append(ChainValue("pooler", "server_idle_timeout", server_side, source))
    chain.append(server_idle(evidence))
    chain.append(path_idle(evidence))
    return chain


def _keepalives_below(evidence: Evidence, seconds: float) -> bool:
    in_force = evidence.settings.get("keepalives_in_force") or {}
    try:
        idle = float(in_force.get("tcp_keepalives_idle") or 0)
    except ValueError:
        return False
    return 0 < idle < seconds


def chain_links(evidence: Evidence) -> list[ChainLink]:
    """Each pair of layers a connection's idle time must respect, and whether it holds.

    Client pool against the first layer that can cut it (the pooler's client_idle_timeout, or the
    server's idle_session_timeout without a pooler); the pooler's server_idle_timeout against the
    server's idle_session_timeout; the last holder against the path, mended by keepalives.
    """
    chain = timeout_chain(evidence)
    by = {(v.layer, v.setting): v for v in chain}
    hold = chain[0]
    server = next(v for v in chain if v.layer == "server")
    path = chain[-1]
    links: list[ChainLink] = []

    def link(before: ChainValue, after: ChainValue, fix_layer: Layer, fix: str) -> None:
        # A layer that never cuts, or a holder whose limit is unknown, cannot be called broken; a
        # holder that keeps connections forever breaks against any cut.
        if after.seconds is None:
            holds = True
        elif before.forever:
            holds = False
        else:
            holds = before.seconds is None or before.seconds < after.seconds
        links.append(ChainLink(before, after, holds, None if holds else fix_layer, "" if holds else fix))

    if has_pooler(evidence):
        client_idle = by[("pooler", "client_idle_timeout")]
        server_side = by[("pooler", "server_idle_timeout")]
        link(
            hold,
            client_idle,
            "client pool",
            f"let the client pool retire idle connections before PgBouncer's client_idle_timeout "
            f"({client_idle.seconds or 0:g} s), or set client_idle_timeout = 0",
        )
        link(
            server_side,
            server,
            "pooler",
            f"server_idle_timeout = {max(1, int((server.seconds or 60) * 0.5))} in pgbouncer.ini, below the "
            f"server's idle_session_timeout ({server.seconds or 0:g} s)",
        )
        last = server_side
    else:
        link(
            hold,
            server,
            "client pool",
            f"keep pooled connections idle less than idle_session_timeout ({server.seconds or 0:g} s), or "
            "turn it off for the application's role",
        )
        last = hold
    measured = path.source == "measured"
    cutoff = path_cutoff(evidence) if measured else None
    helps = cutoff.keepalives_help if cutoff else None  # a probe compared both; None: unknown
    if (
        (not measured or helps is True)
        and (last.seconds is not None or last.forever)
        and _keepalives_below(evidence, path.seconds or 0)
    ):
        links.append(ChainLink(last, path, True, None, ""))
    else:
        fix = _path_fix(last, path, helps)
        link(last, path, "pooler" if last.layer == "pooler" else "client pool", fix)
    return links


def _path_fix(last: ChainValue, path: ChainValue, keepalives_help: bool | None = None) -> str:
    """Keepalives (only through a hop that counts packets) and an idle limit (through any hop),
    sized a third of a measured cut-off; the assumed cut-off keeps the 60 s keepalive. When a probe
    showed keepalives do not help (`keepalives_help` False), no keepalive is offered: the idle
    limit, or the hop's own timeout."""
    cut = path.seconds or 0
    if path.source == "measured":
        below = max(1, math.floor(cut / 3))
        bound = " at most" if "at most" in path.setting else ""
        where = f"the path's measured cut-off ({cut:g} s{bound})"
    else:
        below = 60
        where = f"the path's cut-off (about {cut:g} s, assumed)"
    keepalive_note = (
        "keepalives count only through a NAT, conntrack or cloud load balancer, not through an "
        "application-level proxy (HAProxy, PgBouncer), whose own timeout must then be raised"
    )
    if keepalives_help is False:
        who = "PgBouncer retire server" if last.layer == "pooler" else "the pool close"
        limit = (
            f"server_idle_timeout = {below}"
            if last.layer == "pooler"
            else f"psycopg_pool: min_size=0, max_idle={below}, check=ConnectionPool.check_connection"
        )
        return (
            f"let {who} connections idle {below} s, below {where} ({limit}), or raise the hop's own idle "
            "timeout (the probe showed keepalives do not keep a flow alive through it)"
        )
    if last.layer == "pooler":
        return (
            f"let PgBouncer retire idle server connections below {where}: server_idle_timeout = {below}, "
            f"or tcp_keepalive = 1, tcp_keepidle = {below} in pgbouncer.ini ({keepalive_note})"
        )
    return (
        f"let the pool close connections idle {below} s, below {where} (psycopg_pool: min_size=0, "
        f"max_idle={below}, check=ConnectionPool.check_connection), or send TCP keepalives after "
        f"{below} s: keepalives_idle={below} in the DSN or tcp_keepalives_idle = {below} on the server "
        f"({keepalive_note})"
    )


def broken_links(evidence: Evidence) -> list[ChainLink]:
    return [link for link in chain_links(evidence) if not link.holds]

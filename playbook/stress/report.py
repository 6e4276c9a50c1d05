"""What a stress run found: failures and lost connections by layer and cause (the playbook's finding
ids), pool waits, churn, latency percentiles, and the verdict first: "holds" or "breaks at link X
(finding Y)". Written as DIR/summary.json (schema pg-session-playbook/summary/v1 with a `stress`
object) and DIR/index.html (the verdict, then a latency and failure figure).

A run breaks when a request failed, or when a layer cut a connection the pool still held (the
incident is then only masked: check=, pool_pre_ping or the pool's own removal replaced it before
a request used it). Failed requests make it critical, cuts that were masked and pool waits that
timed out a warning.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from playbook.diagnose import rank_root_causes
from playbook.diagnose.findings import Finding, Severity
from playbook.diagnose.fix_text import joined, sql, sql_name
from playbook.diagnose.pool_snippets import can_enforce, stack_fix
from playbook.diagnose.timeout import SAFE_IDLE_FRACTION, SAFE_LIFETIME_FRACTION
from playbook.report.summary import SCHEMA_ID
from playbook.stress.pools import PoolSettings
from playbook.stress.workload import IDLE_LIMITS, Recorder
from playbook.vocabulary.drivers import SQLSTATE_KINDS, WORDINGS
from playbook.vocabulary.findings import SESSION_LOST, spec

# An application-log kind (vocabulary/drivers.py) -> the finding that explains it, its layer and link.
FINDING_OF_KIND: dict[str, tuple[str, str, str]] = {
    "idle_session_timeout": ("TMO-001", "server", IDLE_LIMITS["idle_session_timeout"][1]),
    "idle_in_transaction_timeout": (
        "LEAK-005",
        "server",
        "client pool → server (idle_in_transaction_session_timeout)",
    ),
    "transaction_timeout": ("TMO-003", "server", "server (transaction_timeout)"),
    "statement_timeout": ("TMO-004", "server", "server (statement_timeout)"),
    "lock_timeout": ("TMO-004", "server", "server (lock_timeout)"),
    "admin_shutdown": ("SRV-003", "server", "server (terminated or shut down)"),
    "crash_shutdown": ("SRV-002", "server", "server (crash)"),
    "cannot_connect_now": ("SRV-001", "server", "server (starting or stopping)"),
    "too_many_clients": ("POOL-002", "server", "client pool → server (max_connections)"),
    "pool_timeout": ("POOL-005", "client pool", "client pool (size)"),
    "pool_queue_full": ("POOL-005", "client pool", "client pool (size)"),
    "pgbouncer_client_idle_timeout": ("BNC-001", "pooler", IDLE_LIMITS["client_idle_timeout"][1]),
    "pgbouncer_idle_transaction_timeout": ("BNC-002", "pooler", "pooler (idle_transaction_timeout)"),
    "pgbouncer_query_timeout": ("BNC-003", "pooler", "pooler (query_timeout)"),
    "pgbouncer_query_wait_timeout": ("BNC-004", "pooler", "pooler (query_wait_timeout)"),
    "pgbouncer_max_client_conn": ("BNC-011", "pooler", "client pool → pooler (max_client_conn)"),
    "pgbouncer_server_crashed": ("BNC-030", "pooler", "pooler → server"),
    "pgbouncer_server_login_failed": ("BNC-031", "pooler", "pooler → server (login)"),
    "pgbouncer_cannot_connect": ("BNC-031", "pooler", "pooler → server (login)"),
    "connection_reset": ("NET-001", "network path", "server → network path (resets)"),
    "broken_pipe": ("NET-001", "network path", "server → network path (resets)"),
    "ssl_eof": ("NET-001", "network path", "server → network path (resets)"),
    "network_timeout": ("NET-001", "network path", "server → network path (resets)"),
    "connect_refused": ("NET-004", "network path", "client → server (connects)"),
    "connect_timeout": ("NET-004", "network path", "client → server (connects)"),
    "connect_failed": ("NET-004", "network path", "client → server (connects)"),
}
# A connection gone with nothing naming why: lost on the way, as NET-002 says.
LOST = ("NET-002", "network path", "client pool → network path (lost with no server-side reason)")
# Errors that mean the connection itself is gone, not only the request.
CUT_KINDS = SESSION_LOST | {
    "idle_session_timeout",
    "idle_in_transaction_timeout",
    "transaction_timeout",
    "admin_shutdown",
    "crash_shutdown",
    "pgbouncer_client_idle_timeout",
    "pgbouncer_idle_transaction_timeout",
    "pgbouncer_query_timeout",
    "pgbouncer_server_crashed",
}
# Findings whose failures are warnings: the session survives, or the pool only made a request wait.
WARNING_ONLY = frozenset({"TMO-004", "POOL-005"})
PERCENTILES = (50, 95, 99)
# A backend gone from pg_stat_activity this close after the pool closed it was the pool's close.
CLOSE_SLACK_S = 0.05
_COMPILED = [(re.compile(w.pattern, re.IGNORECASE), w.kind) for w in WORDINGS]


def kind_of(sqlstate: str | None, text: str | None) -> str | None:
    """The application-log kind of a driver error: its SQLSTATE when that names one, else the
    first wording of the vocabulary it matches."""
    if sqlstate and sqlstate in SQLSTATE_KINDS:
        return SQLSTATE_KINDS[sqlstate]
    for pattern, kind in _COMPILED:
        if text and pattern.search(text):
            return kind
    return None


def losses(recorder: Recorder, limits: dict[str, float]) -> list[dict[str, Any]]:
    """Connections a layer cut while the pool held them, each with its cause (an application-log
    kind) and how it was seen: by the monitor (the backend vanished before the pool closed it, its
    idle age then compared with the server's limits) or by the pool (its 'error' event, a
    connection found dead when closed)."""
    closes: dict[int, list[dict[str, Any]]] = {}
    for close in recorder.closes:
        closes.setdefault(int(close["pid"]), []).append(close)
    found: list[dict[str, Any]] = []
    seen_pids = set()
    opened = {int(o["pid"]) for o in recorder.opens}
    for gone in recorder.vanished:
        pid = int(gone["pid"])
        if pid not in opened:
            continue  # not one of the pool's connections (the stress's own setup session)
        client = closes.get(pid, [])
        if any(c["by_pool"] and c["t"] <= gone["t"] + CLOSE_SLACK_S for c in client):
            continue  # the pool closed it itself
        seen_pids.add(pid)
        idle_at_most, state = float(gone["idle_s_at_most"]), str(gone["last_state"] or "")
        kind = None
        for name, event in (
            ("idle_session_timeout", "idle_session_timeout"),
            ("idle_in_transaction_session_timeout", "idle_in_transaction_timeout"),
        ):
            limit = limits.get(name, 0)
            in_state = state == "idle" if event == "idle_session_timeout" else state.startswith("idle in")
            if limit and in_state and idle_at_most >= limit * 0.95:
                kind = event
        if kind is None:
            kind = next((kind_of(c.get("sqlstate"), c.get("error")) for c in client if c.get("error")), None)
        found.append(
            {
                "pid": pid,
                "t": gone["t"],
                "kind": kind,
                "idle_s": round(idle_at_most, 2),
                "state": state,
                "seen_by": "server",
            }
        )
    vanished = {int(gone["pid"]) for gone in recorder.vanished}
    for pid, client in closes.items():
        if pid in vanished or any(c["by_pool"] for c in client):
            continue  # the monitor accounted for it, or the pool closed it (a second close is no loss)
        for close in client[:1]:
            if close["t"] > 0:
                found.append(
                    {
                        "pid": pid,
                        "t": close["t"],
                        "kind": kind_of(close.get("sqlstate"), close.get("error")),
                        "idle_s": None,
                        "state": None,
                        "seen_by": "pool",
                    }
                )
    return found


def _finding_of(kind: str | None) -> tuple[str, str, str]:
    return FINDING_OF_KIND.get(kind or "", LOST)


def percentiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for p in PERCENTILES:
        if not ordered:
            out[f"p{p}_ms"] = None
            continue
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        out[f"p{p}_ms"] = round(ordered[index] * 1000, 1)
    return out


def _safe_idle(limit: float) -> float:
    """diagnose.timeout's sizing of a pool's idle limit under a layer's: half of it, never under a
    second."""
    return max(1.0, round(limit * SAFE_IDLE_FRACTION, 1))


def _pool_block(
    settings: PoolSettings, idle: float, life: float | None, role: str | None, database: str | None
) -> str:
    """The pool's own fix block (the one `playbook run` writes): idle connections closed after
    `idle` s, and none older than `life` s when given."""
    return stack_fix(
        settings.pool,
        max_idle_s=idle,
        max_lifetime_s=life,
        keepalives_idle_s=None,
        role=role,
        database=database,
    )


def _recommendation(
    finding_id: str, settings: PoolSettings, limits: dict[str, float], role: str | None, database: str | None
) -> str:
    """The fix the playbook offers for this finding, from the diagnosis's own code (the same
    blocks `playbook run` writes), for this pool's stack."""
    if finding_id == "TMO-001" and limits.get("idle_session_timeout"):
        limit = limits["idle_session_timeout"]
        idle = _safe_idle(limit)
        life = max(idle, round(limit * SAFE_LIFETIME_FRACTION, 1))  # and lifetime at 80 % of it
        pool_side = _pool_block(settings, idle, life, role, database)
        server_side = joined(
            "stop the server from ending pooled sessions for the application's role (or set a value "
            "above the pool's own limits):",
            sql(f"ALTER ROLE {sql_name(role, '<app_role>')} SET idle_session_timeout = 0"),
        )
        lead = (
            f"The server ends sessions idle longer than idle_session_timeout ({limit:g} s) while the pool "
            "keeps them. "
        )
        if not can_enforce(settings.pool, max_idle_s=idle, max_lifetime_s=life):
            return joined(
                lead + "Change the server side: ", server_side, "\n\nWhat the pool can do:\n\n", pool_side
            )
        return joined(
            lead + "Either keep pooled connections younger than that and check them on checkout:\n\n",
            pool_side,
            "\n\nor ",
            server_side,
        )
    if finding_id == "BNC-001" and limits.get("client_idle_timeout"):
        limit = limits["client_idle_timeout"]
        return joined(
            f"PgBouncer's client_idle_timeout ({limit:g} s) closes client connections the pool keeps "
            "idle longer. Keep them younger than that:\n\n",
            _pool_block(settings, _safe_idle(limit), None, role, database),
        )
    if finding_id == "POOL-005":
        return (
            "Requests waited longer than the pool's timeout for a connection while every one was busy: "
            "the pool is too small for this concurrency, or its queries too slow. Raise its size within "
            "the server's free slots, or run fewer workers per pool."
        )
    return (
        f"{spec(finding_id).title[:1].upper()}{spec(finding_id).title[1:]}: `playbook run` against the "
        "same target during a stress run shows the evidence and the fix for it."
    )


# Errors that say only that the connection went, not why: when the monitor saw why its backend went,
# that cause is the failure's kind.
GONE_WITHOUT_REASON = (
    None,
    "server_closed_unexpectedly",
    "connection_lost",
    "connection_closed",
    "pool_discarded_broken",
    "validation_failed",
)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A failure row as JSON keeps it: its Counters as plain dicts."""
    return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in row.items()}


def _failure_row(rows: dict[str, dict[str, Any]], kind: str | None, example: str | None) -> dict[str, Any]:
    """The row of the finding that explains `kind` (its layer and link), added to `rows` with zero
    counts the first time that finding is seen (`example`: its first failed request's error)."""
    finding_id, layer, link = _finding_of(kind)
    return rows.setdefault(
        finding_id,
        {
            "finding": finding_id,
            "layer": layer,
            "link": link,
            "failed_requests": 0,
            "lost_connections": 0,
            "causes": Counter(),
            "example": example,
        },
    )


def _classify_failures(
    recorder: Recorder, lost: list[dict[str, Any]], rows: dict[str, dict[str, Any]]
) -> Counter[str]:
    """Each failed request's kind, stored on it as unit["kind"] (a pool timeout; else its error's
    kind, replaced by the monitor's cause when the error only says the connection went), counted
    in its finding's row. Returns the failed requests by finding id. A cut's cause is counted
    once, with its lost connection (_count_losses), not per request."""
    lost_by_pid = {item["pid"]: item for item in lost if item["kind"]}
    failures: Counter[str] = Counter()
    for unit in recorder.units:
        if unit["ok"]:
            continue
        kind = "pool_timeout" if unit["pool_timeout"] else kind_of(unit["sqlstate"], unit["error"])
        if kind in GONE_WITHOUT_REASON and unit["pid"] in lost_by_pid:
            kind = lost_by_pid[unit["pid"]]["kind"]  # the monitor saw why that backend went
        unit["kind"] = kind
        row = _failure_row(rows, kind, unit["error"])
        failures[row["finding"]] += 1
        row["failed_requests"] += 1
        if kind not in CUT_KINDS:  # a cut is counted once, with its connection, below
            row["causes"][kind or "unknown"] += 1
    return failures


def _cuts_seen_by_requests(recorder: Recorder, lost: list[dict[str, Any]]) -> None:
    """Add to `lost` the connections only a failed request saw cut (its kind in CUT_KINDS, its pid
    not lost already): through a pooler, where the server's backends are not the pool's, the only
    sign of a cut. Runs after _classify_failures (it reads unit["kind"])."""
    cut_pids = {item["pid"] for item in lost}
    for unit in recorder.units:
        if not unit["ok"] and unit.get("kind") in CUT_KINDS and unit["pid"] and unit["pid"] not in cut_pids:
            cut_pids.add(unit["pid"])
            lost.append(
                {
                    "pid": unit["pid"],
                    "t": unit["t"],
                    "kind": unit["kind"],
                    "idle_s": None,
                    "state": None,
                    "seen_by": "request",
                }
            )


def _count_losses(lost: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> None:
    """Each lost connection counted, with its cause, in the row of the finding that explains it."""
    for item in lost:
        row = _failure_row(rows, item["kind"], None)
        row["lost_connections"] += 1
        row["causes"][item["kind"] or "unknown"] += 1


def _findings_of(
    rows: dict[str, dict[str, Any]],
    failures: Counter[str],
    settings: PoolSettings,
    limits: dict[str, float],
    role: str | None,
    database: str | None,
) -> list[Finding]:
    """One finding a row, worst first: critical when a request failed (warning for WARNING_ONLY
    findings, and for cuts every request survived: masked), then by failed requests and cuts."""
    findings = []
    for finding_id, row in rows.items():
        failed, cut = row["failed_requests"], row["lost_connections"]
        severity = Severity.WARNING if (not failed or finding_id in WARNING_ONLY) else Severity.CRITICAL
        masked = "" if failed else " (masked: every request still succeeded)"
        title = (
            f"stress: {failed} request(s) failed and {cut} pooled connection(s) were cut at "
            f"{row['link']}{masked}"
        )
        findings.append(
            Finding(
                id=finding_id,
                category=spec(finding_id).category,
                severity=severity,
                title=title,
                confidence=0.95 if failed else 0.8,
                evidence=_plain(row),
                recommendation=_recommendation(finding_id, settings, limits, role, database),
            )
        )
    findings.sort(
        key=lambda f: (-f.severity.rank, -(failures[f.id] * 1000 + int(f.evidence["lost_connections"])))
    )
    return findings


def _churn(recorder: Recorder, lost: list[dict[str, Any]]) -> dict[str, Any]:
    """Connections opened, closed by the pool, lost, and the most pool sessions the server held."""
    return {
        "opened": len(recorder.opens),
        "closed_by_pool": sum(1 for c in recorder.closes if c["by_pool"]),
        "lost": len(lost),
        "peak_server_sessions": max((n for _, n in recorder.server_counts), default=None),
    }


def _pool_waits(recorder: Recorder) -> dict[str, Any]:
    """How long requests waited for a connection: percentiles, waits over 100 ms, timeouts."""
    waits = [float(u["wait_s"]) for u in recorder.units if u.get("wait_s") is not None]
    return {
        **{k.replace("_ms", "_wait_ms"): v for k, v in percentiles(waits).items()},
        "waited_over_100ms": sum(1 for w in waits if w > 0.1),
        "timed_out": sum(1 for u in recorder.units if u["pool_timeout"]),
    }


def _latency(recorder: Recorder) -> dict[str, Any]:
    """Latency percentiles of the requests that succeeded, and how many did."""
    ok_units = [u for u in recorder.units if u["ok"]]
    return {**percentiles([float(u["latency_s"]) for u in ok_units]), "ok_requests": len(ok_units)}


def _verdict(findings: list[Finding]) -> str:
    """The verdict: "holds" with no finding, else "breaks at link X (finding Y)" of the worst one."""
    top = findings[0] if findings else None
    return "holds" if top is None else f"breaks at link {top.evidence['link']} (finding {top.id})"


def analyse(
    recorder: Recorder,
    settings: PoolSettings,
    limits: dict[str, float],
    *,
    role: str | None = None,
    database: str | None = None,
) -> tuple[list[Finding], dict[str, Any]]:
    """The findings of a run (worst first) and its `stress` object: verdict, requests and failures
    by finding (most first), pool waits, churn, latency and the connections lost. Marks each failed
    unit of `recorder` with its kind (unit["kind"])."""
    lost = losses(recorder, limits)
    rows: dict[str, dict[str, Any]] = {}
    failures = _classify_failures(recorder, lost, rows)
    _cuts_seen_by_requests(recorder, lost)
    _count_losses(lost, rows)
    findings = _findings_of(rows, failures, settings, limits, role, database)
    ranked = sorted(rows.values(), key=lambda r: -(r["failed_requests"] * 1000 + r["lost_connections"]))
    stress = {
        "verdict": _verdict(findings),
        "holds": not findings,
        "requests": len(recorder.units),
        "failed_requests": sum(failures.values()),
        "failures": [_plain(row) for row in ranked],
        "pool_waits": _pool_waits(recorder),
        "churn": _churn(recorder, lost),
        "latency": _latency(recorder),
        "lost_connections": lost,
    }
    return findings, stress


def build(
    *,
    findings: list[Finding],
    stress: dict[str, Any],
    dsn: str,
    server_version: str | None,
    pooler_note: str | None,
    started_at: datetime,
    duration_s: float,
    notes: list[str],
) -> dict[str, Any]:
    """summary.json of a stress run: `status` ok when the pool holds; `notebooks` empty (none ran)."""
    worst = max((f.severity for f in findings), key=lambda s: s.rank, default=None)
    return {
        "schema": SCHEMA_ID,
        "status": "ok" if worst is None or worst is Severity.INFO else worst.value,
        "target": {
            "dsn": dsn,
            "server_version": server_version,
            "live": True,
            "not_live_reason": None,
            "pooler": pooler_note,
        },
        "zones": {},
        "evidence_warnings": notes,
        "window": {
            "start": started_at.isoformat(),
            "end": (started_at + timedelta(seconds=duration_s)).isoformat(),
            "duration_s": round(duration_s, 3),
        },
        "root_causes": rank_root_causes(findings),
        "findings": [f.to_dict() for f in findings],
        "notebooks": [],
        "stress": stress,
    }


def figure_png(recorder: Recorder, stress: dict[str, Any]) -> bytes:
    """Latency of each request over time (failures marked at the top), the gaps shaded, and below
    it the pool's sessions on the server with the connections opened and lost."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig = Figure(figsize=(9, 4.8), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    for phase in stress.get("phases", []):
        for ax in (top, bottom):
            ax.axvspan(phase["burst_end"], phase["end"], color="#eef2f7", lw=0)
    ok = [u for u in recorder.units if u["ok"]]
    bad = [u for u in recorder.units if not u["ok"]]
    top.scatter(
        [u["t"] for u in ok], [u["latency_s"] * 1000 for u in ok], s=6, color="#3b6ea5", label="request"
    )
    ceiling = max([u["latency_s"] * 1000 for u in ok] or [10.0])
    if bad:
        top.scatter(
            [u["t"] for u in bad],
            [ceiling * 1.15] * len(bad),
            marker="x",
            s=30,
            color="#c0392b",
            label=f"failed ({len(bad)})",
        )
    top.set_ylabel("latency (ms)")
    top.set_yscale("log")
    top.yaxis.set_major_formatter(ScalarFormatter())
    top.yaxis.set_minor_formatter(NullFormatter())
    top.legend(loc="upper right", fontsize=8)
    top.set_title(stress["verdict"], loc="left", fontsize=10)
    if recorder.server_counts:
        xs, ys = zip(*recorder.server_counts, strict=True)
        bottom.step(xs, ys, where="post", color="#555", label="sessions on the server")
    bottom.scatter(
        [o["t"] for o in recorder.opens],
        [0] * len(recorder.opens),
        marker="|",
        color="#27ae60",
        label=f"opened ({len(recorder.opens)})",
    )
    lost = stress["lost_connections"]
    bottom.scatter(
        [x["t"] for x in lost],
        [0.4] * len(lost),
        marker="v",
        color="#c0392b",
        label=f"cut while pooled ({len(lost)})",
    )
    bottom.set_ylabel("connections")
    bottom.set_xlabel("seconds since start (shaded: idle gaps)")
    bottom.legend(loc="upper right", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_html(out: Path, summary: dict[str, Any], png: bytes) -> Path:
    """index.html: the verdict first, the figure, then each failure with its fix."""
    stress, esc = summary["stress"], html.escape
    rows = "".join(
        f"<tr><td>{esc(r['finding'])}</td><td>{esc(r['layer'])}</td><td>{esc(r['link'])}</td>"
        f"<td>{r['failed_requests']}</td><td>{r['lost_connections']}</td>"
        f"<td>{esc(', '.join(f'{k} ×{v}' for k, v in r['causes'].items()))}</td></tr>"
        for r in stress["failures"]
    )
    header = (
        "<tr><th>finding</th><th>layer</th><th>link</th><th>failed requests</th>"
        "<th>connections cut</th><th>causes</th></tr>"
    )
    table = f"<table>{header}{rows}</table>" if rows else "<p>None.</p>"
    fixes = "".join(
        f"<h3>{esc(f['id'])}: {esc(f['title'])}</h3><pre>{esc(f['recommendation'])}</pre>"
        for f in summary["findings"]
    )
    fixes = f"<h2>Fixes</h2>{fixes}" if fixes else ""
    notes = "".join(f"<li>{esc(n)}</li>" for n in summary["evidence_warnings"])
    notes = f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""
    lat, waits, churn = stress["latency"], stress["pool_waits"], stress["churn"]
    colour = {"ok": "#1e7e34", "warning": "#b8860b", "critical": "#c0392b"}[summary["status"]]
    verdict = esc(stress["verdict"])
    ran = (
        f"{esc(stress['pool']['pool'])} pool, size {stress['pool']['size']}, {stress['workers']} workers, "
        f"{stress['requests']} requests in {summary['window']['duration_s']:g} s against "
        f"{esc(summary['target']['dsn'])}; {stress['failed_requests']} failed. "
        f"Cap: {esc(stress['cap']['sentence'])}."
    )
    figures = (
        f"Latency p50/p95/p99: {lat['p50_ms']} / {lat['p95_ms']} / {lat['p99_ms']} ms. Pool waits p95 "
        f"{waits['p95_wait_ms']} ms, {waits['timed_out']} timed out. Connections opened {churn['opened']}, "
        f"closed by the pool {churn['closed_by_pool']}, cut while pooled {churn['lost']}."
    )
    image = base64.b64encode(png).decode()
    model = stress.get("model") or {}
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>playbook stress: {verdict}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}}
pre{{background:#f6f8fa;padding:.5rem;white-space:pre-wrap}}</style></head><body>
<h1 style="color:{colour}">{verdict}</h1>
<p>{ran}</p>
<p>{figures}</p>
<p>The library's model expected it to {esc(model.get("expected", "?"))}: {esc(model.get("sentence", ""))}.</p>
<img alt="latency and connections over time" src="data:image/png;base64,{image}">
<h2>Failures by layer and cause</h2>
{table}
<h2>Limits crossed</h2><pre>{esc(_limits_text(stress))}</pre>
{notes}
{fixes}
</body></html>
"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _limits_text(stress: dict[str, Any]) -> str:
    lines = [f"{name} = {value:g} s" for name, value in sorted(stress["limits"]["server"].items())]
    lines += [f"pgbouncer {name} = {value}" for name, value in sorted(stress["limits"]["pooler"].items())]
    lines.append("gaps crossed: " + (", ".join(stress["limits"]["crossed"]) or "none"))
    return "\n".join(lines)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)

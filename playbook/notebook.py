"""Short calls the notebooks make, so that a notebook stays prose plus a few lines of code."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.display import HTML, Markdown

from playbook.diagnose import diagnose_all as _diagnose_all
from playbook.diagnose import rank_root_causes
from playbook.diagnose.findings import Finding
from playbook.errors import PlaybookError
from playbook.evidence import Evidence
from playbook.evidence.views import app_samples, detected_stack
from playbook.evidence.vocab import NOTEBOOK_FILES, NOTEBOOK_OF_CATEGORY
from playbook.request import RunRequest

# Findings, fixes and log lines are read whole at 3 a.m.: pandas must never cut a cell with "…".
pd.set_option("display.max_colwidth", None)

_diagnosed: dict[int, tuple[weakref.ref[Evidence], list[Finding]]] = {}
# Evidence this kernel collected itself (a notebook opened by hand): its pages are not beside it, so
# "Read next" names the notebook to open, not a report's page.
_collected_here: dict[int, weakref.ref[Evidence]] = {}


def _opened_by_hand(evidence: Evidence) -> bool:
    """Whether this kernel collected `evidence` itself (not a run's saved evidence)."""
    kept = _collected_here.get(id(evidence))
    return kept is not None and kept() is evidence


def diagnose_all(evidence: Evidence) -> list[Finding]:
    """playbook.diagnose.diagnose_all, once per Evidence object: a page asks for its verdict, its
    findings, the root causes and the next step, and each diagnosis costs a few tenths of a
    second. Evidence is not changed after it is loaded, so the first answer stays right; a new
    Evidence object (even at the same address) is diagnosed afresh."""
    kept = _diagnosed.get(id(evidence))
    if kept is not None and kept[0]() is evidence:
        return list(kept[1])
    found = _diagnose_all(evidence)
    key = id(evidence)
    _diagnosed[key] = (weakref.ref(evidence, lambda _gone: _diagnosed.pop(key, None)), found)
    return list(found)


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A table as a reader wants it: times to the second in UTC (the zone every page states),
    counts as integers, other numbers to two decimals."""
    frame = frame.copy()
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series):
            stamps = pd.to_datetime(series, utc=True)
            frame[column] = stamps.dt.strftime("%Y-%m-%d %H:%M:%S").where(stamps.notna(), "")
        elif pd.api.types.is_float_dtype(series):
            values = series.dropna()
            if not values.empty and (values == values.round()).all():
                frame[column] = series.round().astype("Int64")
            else:
                frame[column] = series.round(2)
    if isinstance(frame.index, pd.DatetimeIndex):
        frame.index = pd.to_datetime(frame.index, utc=True).strftime("%Y-%m-%d %H:%M:%S")
    return frame


def _iso_second(text: str | None) -> str:
    """An ISO-8601 time from the evidence, to the second in UTC."""
    if not text:
        return "?"
    stamp = pd.Timestamp(text)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def load_or_collect(*, evidence_dir: str = "", live: bool | None = None, **parameters: Any) -> Evidence:
    """Under `playbook run` the evidence is already collected (`evidence_dir`, which already
    reflects every option of the run); opened by hand, the notebook collects for `duration`
    seconds what its parameters ask (the keywords of `request_of`: dsn, duration, interval,
    server_log, app_log, pgbouncer, pgbouncer_log, log_tz, app_tz, prefix, app, since, until),
    checked as `playbook run` checks its flags.

    Collecting, the cell shows the window as it is sampled (playbook.live: one figure updated in
    place; `live` None: when a person watches, not under papermill), and an interrupt (the
    kernel's stop button) ends the window early: what was sampled is returned, and its verdict
    says the window was cut short."""
    if evidence_dir:
        if Path(evidence_dir, "watch.json").exists():  # a `playbook watch` folder: the since/until slice
            from playbook.watch.segments import load_slice

            # Only a notebook opened by hand reads a watch folder (a run passes its own evidence).
            return _by_hand(
                load_slice(evidence_dir, parameters.get("since") or None, parameters.get("until") or None)
            )
        if not Path(evidence_dir, "manifest.json").exists():
            # Never collect silently in its place: the report would not show the run's evidence.
            raise PlaybookError(f"no evidence in {Path(evidence_dir).resolve()} (evidence_dir)")
        return Evidence.load(evidence_dir)
    request = request_of(**parameters)
    # Collectors and the driver load only when this notebook collects (opened by hand): under
    # `playbook run` every kernel reads saved evidence, and half a second each adds up.
    from playbook import live as live_view
    from playbook.collect.collection import collect_evidence
    from playbook.target import resolve_target

    view = live_view.LiveView(request) if (live_view.interactive() if live is None else live) else None
    if view is not None:  # the live figure is the progress: no terminal progress bar in the cell
        request = dataclasses.replace(request, progress=False)
    try:
        target = resolve_target(request.dsn)
        evidence = collect_evidence(target, request, on_tick=view, keep_on_interrupt=True)
    except BaseException as exc:
        if view is not None:
            view.abandon(exc)
        raise
    if view is not None:
        view.finish(evidence)
    return _by_hand(evidence)


def _by_hand(evidence: Evidence) -> Evidence:
    """`evidence`, remembered as this kernel's own (no report's pages beside it)."""
    key = id(evidence)
    _collected_here[key] = weakref.ref(evidence, lambda _gone: _collected_here.pop(key, None))
    return evidence


def request_of(
    *,
    dsn: str = "",
    duration: float = 30,
    interval: float = 1.0,
    server_log: str | Sequence[str] | None = None,
    app_log: str | Sequence[str] | None = None,
    pgbouncer: str = "",
    pgbouncer_log: str | Sequence[str] | None = None,
    log_tz: str = "",
    app_tz: str = "",
    prefix: str = "",
    app: str = "",
    since: str | datetime | None = None,
    until: str | datetime | None = None,
) -> RunRequest:
    """The RunRequest of a notebook's parameters, built as the CLI and a fleet target build theirs:
    an empty string is "not given", a bad value one sentence naming the parameter. No password
    in `dsn`: a notebook keeps its parameters in the file."""
    return RunRequest.build(
        dsn=dsn,
        duration=duration,
        interval=interval,
        server_log=_as_list(server_log),
        app_log=_as_list(app_log),
        pgbouncer=pgbouncer,
        pgbouncer_log=_as_list(pgbouncer_log),
        log_tz=log_tz,
        app_tz=app_tz,
        prefix=prefix,
        app=app,
        since=since,
        until=until,
    )


def server_overview(evidence: Evidence) -> pd.DataFrame:
    """Version, uptime, limits and what the playbook could not see."""
    settings = evidence.settings
    server = settings.get("server", {})
    values = settings.get("settings", {})
    start = server.get("postmaster_start")
    snapshot = server.get("snapshot_at")
    uptime = (
        str(pd.Timedelta(datetime.fromisoformat(snapshot) - datetime.fromisoformat(start)).floor("s"))
        if start and snapshot
        else "unknown"
    )

    def setting(name: str) -> str:
        entry = values.get(name)
        if entry is None:
            return "absent on this version"
        return f"{entry['setting']}{entry.get('unit') or ''}"

    rows = [
        ("server version", server.get("server_version", "?")),
        ("postmaster started", _iso_second(start) if start else "?"),
        ("uptime at snapshot", uptime),
        ("connected as", f"{server.get('role')} (pg_monitor: {server.get('has_pg_monitor')})"),
        ("max_connections", setting("max_connections")),
        ("superuser_reserved_connections", setting("superuser_reserved_connections")),
        ("reserved_connections", setting("reserved_connections")),
        ("usable by ordinary roles", str(settings.get("usable_connections"))),
        ("sampling window", f"{evidence.manifest.get('window', {}).get('duration_s', '?')} s"),
        ("sampler gaps", str(len(evidence.gaps))),
    ]
    return pd.DataFrame(rows, columns=["what", "value"]).set_index("what")


def unavailable(evidence: Evidence) -> pd.DataFrame:
    """What this role could not see, and the GRANT that would show it."""
    missing = evidence.manifest.get("unavailable", [])
    if not missing:
        return pd.DataFrame({"result": ["nothing: this role sees everything the playbook reads"]})
    return pd.DataFrame(missing, columns=["what", "error", "grant"])


def findings(evidence: Evidence, category: str | None = None) -> list[Finding]:
    found = diagnose_all(evidence)
    return [f for f in found if category is None or f.category == category]


def summary_of(evidence: Evidence, found: list[Finding] | None = None) -> dict[str, Any]:
    """What summary.json would say of this evidence (status, root causes, findings, zones), for
    the verdict a page opens with."""
    from playbook.report.summary import build_summary

    return build_summary(evidence, diagnose_all(evidence) if found is None else found, [])


def verdict(evidence: Evidence, page: str = "triage") -> HTML:
    """What every page opens with: the status, the most likely cause and the layer that ended the
    sessions, where to read next (never this page itself), what the times are in, then this
    page's findings (every finding on triage) with their fixes as labelled blocks to paste."""
    from playbook.report.findings_html import COPY_SCRIPT, STYLE, findings_html
    from playbook.report.verdict import verdict_html

    found = diagnose_all(evidence)
    summary = summary_of(evidence, found)
    category = next((c for c, nb in NOTEBOOK_OF_CATEGORY.items() if nb == page and page != "triage"), None)
    mine = [f.to_dict() for f in found if category is None or f.category == category]
    heading = "Findings and fixes" if page == "triage" else f"Findings and fixes of this page ({category})"
    empty = "No finding on this page: nothing in this evidence points at this cause."
    # Opened by hand, no report's page is beside the notebook: "Read next" names the notebook.
    pages: dict[str, str] | None = (
        {str(k): v for k, v in NOTEBOOK_FILES.items()} if _opened_by_hand(evidence) else None
    )
    return HTML(
        f"<style>{STYLE}</style><script>{COPY_SCRIPT}</script>"
        + verdict_html(summary, this_page=page, pages=pages)
        + f"<h3>{heading}</h3>"
        + findings_html(mine, stack=detected_stack(evidence), heading="h4", empty=empty)
    )


def findings_table(found: list[Finding]) -> pd.DataFrame:
    """Findings as a table (id, severity, title, fix), never cut: for analysis in a notebook;
    the pages show the same findings rendered by `verdict`."""
    if not found:
        return pd.DataFrame({"result": ["no finding: nothing in this evidence points at a cause"]})
    return pd.DataFrame(
        [{"id": f.id, "severity": f.severity.value, "title": f.title, "fix": f.recommendation} for f in found]
    ).set_index("id")


def root_causes(evidence: Evidence) -> pd.DataFrame:
    causes = rank_root_causes(diagnose_all(evidence))
    if not causes:
        return pd.DataFrame({"result": ["no root cause: the window looks healthy"]})
    frame = pd.DataFrame(causes)
    frame["confidence"] = [f"{float(c):.0%}" for c in frame["confidence"]]
    return frame


def oldest_idle_in_transaction(evidence: Evidence, top: int = 10) -> pd.DataFrame:
    from playbook.evidence.views import idle_in_transaction_sessions

    sessions = idle_in_transaction_sessions(app_samples(evidence)).head(top)
    if sessions.empty:
        return pd.DataFrame({"result": ["none: no session was idle in transaction"]})
    return readable(sessions)


def next_step(evidence: Evidence) -> Markdown:
    """The notebook to read next, from the top-ranked cause."""
    causes = rank_root_causes(diagnose_all(evidence))
    if not causes:
        return Markdown(
            "**No root cause in this window.** If sessions still close, widen the window "
            "(`--duration`, `--since`) and pass the server and application logs."
        )
    top = causes[0]
    notebook = NOTEBOOK_OF_CATEGORY[top["category"]]  # type: ignore[index]
    if notebook == "triage":
        read_next = "the findings on this page (triage explains the server's own causes)"
    elif _opened_by_hand(evidence):  # opened by hand: no report's page beside the notebook
        read_next = f"[{NOTEBOOK_FILES[notebook]}]({NOTEBOOK_FILES[notebook]})"
    else:
        read_next = f"[{notebook}.html]({notebook}.html) (notebook `{NOTEBOOK_FILES[notebook]}`)"
    return Markdown(
        f"**Most likely: `{top['category']}`** ({top['severity']}, confidence "
        f"{float(str(top['confidence'])):.0%}): {top['summary']}\n\n"
        f"**Closed by:** {top['layer']} ({top['finding']}).\n\n"
        f"Read next: {read_next}"
    )


def log_events_table(evidence: Evidence, categories: Sequence[str] | None = None) -> pd.DataFrame:
    """Server log events that end or refuse sessions, per event: count, first and last seen, meaning."""
    from playbook.collect.log_events import meaning

    events = evidence.server_log_events
    if events.empty:
        note = "no server log read" if not evidence.manifest.get("server_logs") else "no event in the window"
        return pd.DataFrame({"result": [note]})
    events = events[events["category"].astype(str) != ""]
    if categories:
        events = events[events["category"].astype(str).isin(categories)]
    if events.empty:
        return pd.DataFrame({"result": ["none of these events in the server log for this window"]})
    table = events.groupby(["category", "event"], observed=True).agg(
        count=("ts", "size"), first_seen=("ts", "min"), last_seen=("ts", "max")
    )
    table["meaning"] = [meaning(str(event)) for _, event in table.index]
    return readable(table.sort_values("count", ascending=False))


def app_errors_table(evidence: Evidence) -> pd.DataFrame:
    """What the application logged, per kind of error, and the client stack it revealed."""
    events = evidence.app_log_events
    if events.empty:
        note = "no application log read" if not evidence.manifest.get("app_logs") else "no known error in it"
        return pd.DataFrame({"result": [note]})
    table = events.groupby(["stack", "kind"]).agg(
        count=("kind", "size"), first_seen=("ts", "min"), last_seen=("ts", "max"), example=("text", "first")
    )
    return readable(table.sort_values("count", ascending=False))


def settings_table(evidence: Evidence, names: Sequence[str]) -> pd.DataFrame:
    """Settings by name with unit and where they come from; per-role/database overrides listed too."""
    from playbook.evidence.views import overrides_of

    values = evidence.settings.get("settings", {})
    rows = []
    for name in names:
        entry = values.get(name)
        if entry is None:
            rows.append({"setting": name, "value": "absent on this version", "source": ""})
            continue
        unit = entry.get("unit") or ""
        value = "?" if entry.get("setting") is None else f"{entry['setting']}{unit}"
        rows.append({"setting": name, "value": value, "source": entry.get("source") or ""})
        for override in overrides_of(evidence, name):
            scope = f"role {override['role'] or '*'} / db {override['database'] or '*'}"
            rows.append({"setting": f"  {name}", "value": override["value"], "source": scope})
    return pd.DataFrame(rows).set_index("setting")


def connection_trends(evidence: Evidence) -> pd.DataFrame:
    from playbook.diagnose.leak import connection_trends as trends

    return readable(trends(evidence))


def pool_sizes(evidence: Evidence) -> pd.DataFrame:
    from playbook.diagnose.pool_config import little_law_sizes

    sizes = little_law_sizes(evidence)
    if not sizes:
        return pd.DataFrame({"result": ["no application connection was sampled in this window"]})
    return readable(pd.DataFrame(sizes))


def limits_table(evidence: Evidence) -> pd.DataFrame:
    """Connection limits per role and database, next to the connections seen of each."""
    samples = evidence.activity_samples
    peak_role: dict[Any, int] = {}
    peak_db: dict[Any, int] = {}
    if not samples.empty:
        peak_role = samples.groupby(["tick_ts", "usename"]).size().groupby("usename").max().to_dict()
        peak_db = samples.groupby(["tick_ts", "datname"]).size().groupby("datname").max().to_dict()
    rows = [
        {
            "limit of": f"role {r['role']}",
            "conn_limit": r["conn_limit"],
            "peak seen": int(peak_role.get(r["role"], 0)),
        }
        for r in evidence.settings.get("role_limits") or []
        if r.get("conn_limit", -1) != -1
    ]
    rows += [
        {
            "limit of": f"database {d['database']}",
            "conn_limit": d["conn_limit"],
            "peak seen": int(peak_db.get(d["database"], 0)),
        }
        for d in evidence.settings.get("database_limits") or []
        if d.get("conn_limit", -1) != -1
    ]
    if not rows:
        return pd.DataFrame({"result": ["no role or database has a CONNECTION LIMIT"]})
    return pd.DataFrame(rows).set_index("limit of")


def latency_table(evidence: Evidence) -> pd.DataFrame:
    latency = evidence.snapshots.get("latency") or {}
    rows = {name: summary for name, summary in latency.items() if summary}
    if not rows:
        return pd.DataFrame({"result": ["no probe ran"]})
    columns = ["samples", "failures", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
    return readable(pd.DataFrame(rows).T.reindex(columns=columns).astype("float64"))


def keepalive_table(evidence: Evidence) -> pd.DataFrame:
    """Keepalive timers in force on the server's side and on this client's socket."""
    server = evidence.settings.get("keepalives_in_force") or {}
    client = evidence.snapshots.get("keepalive_probe") or {}
    return pd.DataFrame(
        [
            {
                "side": "server (SHOW over TCP)",
                "keepalive": "on",
                "idle_s": server.get("tcp_keepalives_idle"),
                "interval_s": server.get("tcp_keepalives_interval"),
                "count": server.get("tcp_keepalives_count"),
            },
            {
                "side": "this client's socket",
                "keepalive": "on" if client.get("so_keepalive") else "off",
                "idle_s": client.get("tcp_keepidle_s"),
                "interval_s": client.get("tcp_keepintvl_s"),
                "count": client.get("tcp_keepcnt"),
            },
        ]
    ).set_index("side")


def gaps_table(evidence: Evidence) -> pd.DataFrame:
    if not evidence.gaps:
        return pd.DataFrame({"result": ["the playbook's own session was never lost"]})
    gaps = pd.DataFrame(evidence.gaps)
    for column in ("start", "end"):
        if column in gaps:
            gaps[column] = [
                _iso_second(v) if isinstance(v, str) and v else "end of window" for v in gaps[column]
            ]
    return gaps


def idle_survival(dsn: str, idle_s: Sequence[float]) -> pd.DataFrame | Markdown:
    """Live: does a connection left idle this long still answer? (Opened by hand only; with no
    periods given, says how to ask for them.)"""
    from playbook.probes.keepalive import idle_survival as probe

    if not idle_s:
        return Markdown(
            "*Not probed in this run.* Opened by hand, set `idle_survival_s` in the parameters cell "
            "to idle periods around the suspected cut-off (for example `[60, 300, 600]`) and run "
            "this cell again."
        )
    from playbook.target import resolve_target

    return readable(probe(resolve_target(dsn or None).dsn, idle_s=list(idle_s)))


def setting_seconds(evidence: Evidence, name: str) -> float | None:
    """A time setting in seconds (None when absent or disabled), for drawing it as a limit."""
    return evidence.setting_s(name)


def timeout_chain_table(evidence: Evidence) -> pd.DataFrame:
    """Each layer's idle limit, from the application to the path, with where the value came from."""
    from playbook.diagnose.chain import timeout_chain

    return pd.DataFrame(
        [
            {
                "layer": v.layer,
                "setting": v.setting,
                "seconds": "never" if v.seconds is None else f"{v.seconds:g}",
                "source": v.source,
                "note": v.note,
            }
            for v in timeout_chain(evidence)
        ]
    )


def chain_verdict(evidence: Evidence) -> Markdown:
    """The links of the timeout chain that break, for sure or at risk, each with the layer that
    must change and how."""
    from playbook.diagnose.chain import broken_links

    broken = broken_links(evidence)
    if not broken:
        return Markdown(
            "**The chain holds:** each layer lets go of idle connections before the next one cuts."
        )
    lines = []
    for b in broken:
        held = "never" if b.before.seconds is None else f"{b.before.seconds:g} s"
        cut = "never" if b.after.seconds is None else f"{b.after.seconds:g} s"
        status = "**Broken:**" if b.certain else "**At risk** (a default or an assumption: confirm it):"
        lines.append(
            f"- {status} the {b.after.layer} ({b.after.setting}, {cut}, {b.after.source}) cuts connections "
            f"the {b.before.layer} may still hold ({b.before.setting}: {held}, {b.before.source}). "
            f"Change the **{b.fix_layer}**: {b.fix}."
        )
    return Markdown("**The timeout chain:**\n\n" + "\n".join(lines))

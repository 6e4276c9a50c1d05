"""The verdict every page opens with: the status, the most likely cause, the layer that ended the
sessions, where to read next, and what the times on the page are in.

Built from a summary (summary.json's content, or the same built from a notebook's own evidence),
so the index, report.html and every notebook page say the same thing in the same words.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from playbook.evidence.vocab import NOTEBOOK_OF_CATEGORY
from playbook.vocabulary.translations import NO_CATALOG

TIMES_NOTE = "Times are UTC, to the second."
# How summary.json's evidence_warnings say that a source was not read or that sessions were hidden
# (report.summary writes them with these words; the verdict line reads them back).
NOT_READ = " not read: "
HIDDEN_FROM_ROLE = " hidden from this role: "


NOTEBOOK_ERROR_SHOWN = 80  # characters of a failed notebook's error on the verdict line


def failed_notebooks(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The notebooks of the run that failed (summary.json's notebooks with status "failed")."""
    return [nb for nb in summary.get("notebooks") or [] if nb.get("status") != "ok"]


def failed_notebooks_note(summary: Mapping[str, Any]) -> str | None:
    """What the verdict line adds when some notebooks failed and others ran, e.g. "1 of 5
    notebooks failed: timeouts (ConversionError: …)"; None when none failed, or all did (then
    the run could not diagnose at all and says that instead)."""
    notebooks = summary.get("notebooks") or []
    failed = failed_notebooks(summary)
    if not failed or len(failed) == len(notebooks):
        return None
    named = []
    for nb in failed:
        error = str(nb.get("error") or "no error recorded").splitlines()[0]
        if len(error) > NOTEBOOK_ERROR_SHOWN:
            error = error[: NOTEBOOK_ERROR_SHOWN - 1].rstrip() + "…"
        named.append(f"{nb.get('name')} ({error})")
    return f"{len(failed)} of {len(notebooks)} notebooks failed: {', '.join(named)}"


def verdict_line(summary: Mapping[str, Any]) -> str:
    """One line for a terminal, a chat message or a page title.

    A run some of whose notebooks failed says so after the verdict ("… — 1 of 5 notebooks
    failed: timeouts (ConversionError: …)"): the verdict stands on the evidence, which every
    notebook read, but the pages it points to are not all there.
    """
    line = _verdict(summary)
    note = failed_notebooks_note(summary) if summary["status"] != "error" else None
    return f"{line} — {note}" if note else line


def _verdict(summary: Mapping[str, Any]) -> str:
    status = summary["status"]
    causes = summary.get("root_causes") or []
    if status == "error":
        if summary.get("error"):
            return f"ERROR: not diagnosed: {summary['error']}"
        return "ERROR: no notebook could run, so nothing was diagnosed"
    if not causes:
        warnings = summary.get("evidence_warnings") or []
        unread = [w for w in warnings if NOT_READ in w]
        foreign = [w for w in warnings if NO_CATALOG in w]
        if foreign:
            return (
                f"OK: no cause of closed sessions found, but {len(foreign)} log(s) are written "
                f"{NO_CATALOG}: their events could not be read"
            )
        if unread:
            return f"OK: no cause of closed sessions found, but {len(unread)} source(s) could not be read"
        if any(HIDDEN_FROM_ROLE in w for w in warnings):
            return "OK: no cause of closed sessions found among the sessions this role may see"
        return "OK: no cause of closed sessions found in this window"
    top = causes[0]
    return f"{status.upper()}: most likely {top['category']} — {top['summary']}"


def page_of(notebook: str) -> str:
    """The published page of a notebook (network -> network.html)."""
    return f"{notebook}.html"


def zones_note(summary: Mapping[str, Any]) -> str:
    """What the times on a page are in, and which zone each log's clock was read in."""
    zones = summary.get("zones") or {}
    read = "; ".join(f"{what.replace('_', ' ')} read in {zone}" for what, zone in zones.items())
    return f"{TIMES_NOTE} {read}." if read else TIMES_NOTE


def verdict_html(
    summary: Mapping[str, Any],
    *,
    this_page: str | None = None,
    pages: Mapping[str, str] | None = None,
) -> str:
    """The verdict block. `this_page` is the notebook the block opens (None on the index and
    report.html); `pages` maps notebook names to the pages that exist (default: every notebook's
    `<name>.html`). "Read next" never points at the page it is on: a cause explained here (a
    server cause on triage) says so instead."""
    status = str(summary["status"])
    causes = summary.get("root_causes") or []
    parts = [
        f'<div class="pb-verdict {html.escape(status)}">',
        f'<div class="pb-headline">{html.escape(verdict_line(summary))}</div>',
    ]
    if causes:
        top = causes[0]
        layer, finding = top.get("layer"), top.get("finding")
        explained = NOTEBOOK_OF_CATEGORY.get(top["category"])
        if layer:
            # The finding's anchor is on this page when the page lists it (the index, report.html,
            # triage, the cause's own page); elsewhere it is on the page that explains the cause.
            here = this_page in (None, "triage", explained)
            other = (pages or {}).get(str(explained), page_of(str(explained)))
            anchor = f"#finding-{finding}" if here else f"{other}#finding-{finding}"
            link = f' (<a href="{html.escape(anchor)}">{html.escape(str(finding))}</a>)' if finding else ""
            parts.append(f"<p><b>Closed by:</b> {html.escape(str(layer))}{link}</p>")
        notebook = NOTEBOOK_OF_CATEGORY.get(top["category"])
        if notebook is not None and notebook == this_page:
            parts.append("<p><b>Read next:</b> this page; the findings and fixes follow.</p>")
        elif notebook is not None:
            page = (pages or {}).get(notebook, page_of(notebook)) if pages is not None else page_of(notebook)
            if pages is None or notebook in pages:
                parts.append(
                    f'<p><b>Read next:</b> <a href="{html.escape(page)}">{html.escape(page)}</a></p>'
                )
        if len(causes) > 1:
            others = ", ".join(f"{c['category']} ({c['severity']})" for c in causes[1:])
            parts.append(f"<p><b>Also:</b> {html.escape(others)}</p>")
    elif status == "ok":
        parts.append(
            "<p>If sessions still close, widen the window (<code>--duration</code>, <code>--since</code>)"
            " and pass the server and application logs.</p>"
        )
    target = summary.get("target") or {}
    if target.get("live") is False:
        parts.append(
            f"<p><b>No live evidence:</b> {html.escape(str(target.get('not_live_reason') or 'offline'))}."
            " Diagnosed from the logs alone.</p>"
        )
    if target.get("pooler"):
        parts.append(f"<p><b>Through a pooler:</b> {html.escape(str(target['pooler']))}.</p>")
    warnings = summary.get("evidence_warnings") or []
    if warnings:
        items = "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
        parts.append(f'<div class="pb-evidence-warnings"><b>Evidence warnings:</b><ul>{items}</ul></div>')
    parts.append(f'<p class="pb-zones">{html.escape(zones_note(summary))}</p>')
    parts.append("</div>")
    return "\n".join(parts)

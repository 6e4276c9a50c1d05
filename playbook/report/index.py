"""index.html: the verdict, the findings with their fixes, and links to every notebook's page."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from playbook.report.findings_html import COPY_SCRIPT, STYLE, findings_html
from playbook.report.verdict import verdict_html, verdict_line

__all__ = ["report_header", "verdict_line", "write_index"]

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("playbook.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _second(value: Any) -> str:
    """An ISO-8601 time to the second, as the pages show times ("2026-01-01 03:04:05")."""
    text = str(value or "")
    return text[:19].replace("T", " ") if text[:4].isdigit() else text


_env.filters["second"] = _second


def pages_of(summary: Mapping[str, Any]) -> dict[str, str]:
    """Notebook name -> its published page, for the notebooks that have one."""
    return {nb["name"]: nb["html"] for nb in summary["notebooks"] if nb.get("html")}


def report_header(summary: Mapping[str, Any], *, stack: str | None = None) -> str:
    """The top of index.html and report.html: the verdict, what happened between runs, and every
    finding with its fix (HTML)."""
    return _env.get_template("header.html.j2").render(
        summary=summary,
        verdict=Markup(verdict_html(summary, pages=pages_of(summary))),
        findings=Markup(findings_html(summary["findings"], stack=stack, pages=pages_of(summary))),
    )


def write_index(
    folder: Path, summary: dict[str, Any], manifest: Mapping[str, Any], *, stack: str | None = None
) -> Path:
    html = _env.get_template("index.html.j2").render(
        summary=summary,
        verdict=verdict_line(summary),
        header=Markup(report_header(summary, stack=stack)),
        style=Markup(STYLE),
        script=Markup(COPY_SCRIPT),
        has_report=(folder / "report.html").exists(),
        gaps=manifest.get("gaps", []),
        unavailable=manifest.get("unavailable", []),
    )
    path = folder / "index.html"
    path.write_text(html, encoding="utf-8")
    return path

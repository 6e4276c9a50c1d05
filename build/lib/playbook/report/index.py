"""index.html: the verdict, the findings with their fixes, and links to every notebook's page."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("playbook.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def verdict_line(summary: dict[str, Any]) -> str:
    status = summary["status"]
    causes = summary.get("root_causes") or []
    if status == "error":
        return "ERROR: no notebook could run, so nothing was diagnosed"
    if not causes:
        return "OK: no cause of closed sessions found in this window"
    top = causes[0]
    return f"{status.upper()}: most likely {top['category']} — {top['summary']}"


def write_index(folder: Path, summary: dict[str, Any], manifest: Mapping[str, Any]) -> Path:
    pages = {nb["name"]: nb["html"] for nb in summary["notebooks"] if nb.get("html")}
    html = _env.get_template("index.html.j2").render(
        summary=summary,
        verdict=verdict_line(summary),
        pages=pages,
        gaps=manifest.get("gaps", []),
        unavailable=manifest.get("unavailable", []),
    )
    path = folder / "index.html"
    path.write_text(html, encoding="utf-8")
    return path

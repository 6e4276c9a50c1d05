"""DIR/index.html: one row per target, sortable by any column, filterable by label and status,
linking every report. Self-contained: its script and style are inline, nothing is fetched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("playbook.fleet", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def write_index(out: Path, fleet: dict[str, Any]) -> Path:
    """Write out/index.html for a fleet.json document; returns its path."""
    keys = sorted({key for row in fleet["targets"] for key in row["labels"]})
    values = {
        key: sorted({row["labels"][key] for row in fleet["targets"] if key in row["labels"]}) for key in keys
    }
    html = _env.get_template("index.html.j2").render(fleet=fleet, label_keys=keys, label_values=values)
    path = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path

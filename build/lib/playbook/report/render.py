"""Executed notebooks to standalone HTML pages a reader opens without Python."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbconvert import HTMLExporter


def notebook_to_html(ipynb: Path, html: Path, *, show_code: bool = False) -> None:
    exporter = HTMLExporter(
        template_name="lab",
        exclude_input=not show_code,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    notebook = nbformat.read(ipynb, as_version=4)
    body, _ = exporter.from_notebook_node(notebook)
    html.write_text(body, encoding="utf-8")

"""Executed notebooks to HTML pages a reader opens without Python and without a network.

Pages use JupyterLab's look with nothing loaded from elsewhere: no require.js, MathJax, Mermaid or
widget script from a CDN, figures inline as data: URIs, the playbook's style and copy script
inlined. `combined_report` puts the verdict, the findings and every page into one file
(report.html) for a mail or a ticket.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter
from nbformat import NotebookNode

from playbook.report.findings_html import COPY_SCRIPT, STYLE

TEMPLATES = Path(str(resources.files("playbook.report") / "templates"))


def _exporter(show_code: bool) -> HTMLExporter:
    return HTMLExporter(
        template_name="lab",
        template_file="page.html.j2",
        extra_template_basedirs=[str(TEMPLATES)],
        extra_template_paths=[str(TEMPLATES)],
        exclude_input=not show_code,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )


def _readable(notebook: NotebookNode, show_code: bool = False) -> NotebookNode:
    """What a reader needs: warnings a library printed on stderr (with this machine's paths) are
    left out of the page, and with the code hidden so are code cells that show nothing (the
    parameters, the imports), so the verdict is the first thing on the page. The executed .ipynb
    keeps everything."""
    notebook = copy.deepcopy(notebook)
    kept = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                out
                for out in cell.get("outputs", [])
                if not (out.output_type == "stream" and out.name == "stderr")
            ]
            if not show_code and not cell.outputs:
                continue
        kept.append(cell)
    notebook.cells = kept
    return notebook


def _export(notebook: NotebookNode, show_code: bool, title: str) -> str:
    notebook.metadata["title"] = title
    body, _ = _exporter(show_code).from_notebook_node(
        notebook, resources={"pb_style": STYLE, "pb_script": COPY_SCRIPT}
    )
    return str(body)


def notebook_to_html(ipynb: Path, html: Path, *, show_code: bool = False) -> None:
    """One executed notebook as a self-contained page (code cells hidden unless `show_code`)."""
    notebook = nbformat.read(ipynb, as_version=4)
    html.write_text(_export(_readable(notebook, show_code), show_code, ipynb.stem), encoding="utf-8")


def _html_cell(markup: str) -> NotebookNode:
    cell = nbformat.v4.new_code_cell(source="")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": markup})]
    cell.pop("id", None)
    return cell


def combined_report(
    folder: Path,
    header: str,
    pages: Sequence[Mapping[str, Any]],
    *,
    title: str,
    show_code: bool = False,
) -> Path:
    """report.html in `folder`: `header` (the verdict and the findings, as HTML), then every
    executed notebook of `pages` (summary.json's notebook entries with an html page) under a
    heading of its own. Links between pages become links within the file."""
    merged = nbformat.v4.new_notebook()
    merged.nbformat_minor = 4  # no cell ids: the same cell may come from several notebooks
    contents = "".join(f'<li><a href="#page-{p["name"]}">{p["name"]}</a></li>' for p in pages)
    merged.cells.append(_html_cell(header + (f"<h2>Pages</h2><ul>{contents}</ul>" if pages else "")))
    for page in pages:
        notebook = _readable(nbformat.read(folder / page["ipynb"], as_version=4), show_code)
        merged.cells.append(
            _html_cell(f'<hr><h1 id="page-{page["name"]}" class="pb-page">Page: {page["name"]}</h1>')
        )
        for cell in notebook.cells:
            if "parameters" in cell.get("metadata", {}).get("tags", []) or "injected-parameters" in cell.get(
                "metadata", {}
            ).get("tags", []):
                continue
            cell = copy.deepcopy(cell)
            cell.pop("id", None)
            merged.cells.append(cell)
    text = _export(merged, show_code, title)
    names = "|".join(re.escape(str(p["name"])) for p in pages)
    if names:
        # Page links become section links; a link to a finding on a page goes to the finding in
        # the header, which lists every finding.
        text = re.sub(rf'href="({names})\.html#([^"]+)"', r'href="#\2"', text)
        text = re.sub(rf'href="({names})\.html"', r'href="#page-\1"', text)
    path = folder / "report.html"
    path.write_text(text, encoding="utf-8")
    return path

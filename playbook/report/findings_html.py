"""Findings and their fixes as HTML: the verdict, then each finding with labelled blocks to paste.

A recommendation is Markdown: prose, and fenced code blocks whose info string says where the block
goes (`sql`, `dsn`, `python`, `javascript`, `properties`, `ini`, `shell`). Each block is rendered
under a label ("SQL to run", "pgbouncer.ini", …) with a copy button and is never truncated; a
recommendation without fences is prose. A block that an earlier finding of the same page already
gave (the keepalive settings several network findings share) is said once: later findings point
back to it. The HTML needs no external script, style or font; the copy button's script is
`COPY_SCRIPT`, inlined by every page that shows fixes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from markdown_it import MarkdownIt

# Where a block goes, by the first word of its info string. Pool code is labelled with the client
# stack the application log revealed when there is one.
BLOCK_LABELS = {
    "sql": "SQL to run",
    "dsn": "DSN parameters",
    "python": "pool code ({stack})",
    "javascript": "pool code ({stack})",
    "js": "pool code ({stack})",
    "typescript": "pool code ({stack})",
    "java": "pool code ({stack})",
    "properties": "HikariCP / Spring properties",
    "ini": "pgbouncer.ini",
    "shell": "shell",
    "sh": "shell",
    "bash": "shell",
    "yaml": "configuration (YAML)",
}
STACK_OF_LANGUAGE = {
    "python": "Python",
    "javascript": "JavaScript",
    "js": "JavaScript",
    "typescript": "TypeScript",
    "java": "Java",
}

COPY_SCRIPT = """
function pbCopyFallback(text) {
  var area = document.createElement('textarea');
  area.value = text; area.setAttribute('readonly', '');
  area.style.position = 'fixed'; area.style.opacity = '0';
  document.body.appendChild(area); area.select();
  try { document.execCommand('copy'); } finally { area.remove(); }
}
function pbCopy(button) {
  var text = button.closest('.pb-block').querySelector('pre').innerText;
  var done = function () {
    button.textContent = 'copied';
    setTimeout(function () { button.textContent = 'copy'; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { pbCopyFallback(text); done(); });
  } else { pbCopyFallback(text); done(); }
}
"""

STYLE = """
.pb-verdict { font: 15px/1.45 system-ui, sans-serif; padding: .7rem 1rem; border-radius: 6px;
  margin: .5rem 0 1rem; }
.pb-verdict.ok { background: #e5f5e0; } .pb-verdict.warning { background: #fff3cd; }
.pb-verdict.critical { background: #f8d7da; } .pb-verdict.error { background: #e2e3e5; }
.pb-verdict .pb-headline { font-size: 1.15rem; font-weight: 600; }
.pb-verdict p { margin: .3rem 0; }
.pb-findings { font: 14px/1.45 system-ui, sans-serif; }
.pb-finding { border-left: 4px solid #bbb; padding: .2rem .8rem; margin: .8rem 0; }
.pb-finding.critical { border-color: #c62828; } .pb-finding.warning { border-color: #d4a017; }
.pb-finding.info { border-color: #2b8cbe; }
.pb-finding h3, .pb-finding h4 { margin: .2rem 0; font-size: 1rem; }
.pb-sev { font-weight: 600; text-transform: uppercase; font-size: .8rem; }
.pb-consequence { color: #555; font-size: .9rem; }
.pb-block { margin: .5rem 0; border: 1px solid #ddd; border-radius: 4px; }
.pb-label { background: #f0f0f0; padding: .2rem .5rem; font-weight: 600; font-size: .85rem;
  display: flex; justify-content: space-between; align-items: center; }
.pb-block pre { margin: 0; padding: .5rem; white-space: pre-wrap; overflow-wrap: anywhere;
  font: 13px/1.4 ui-monospace, monospace; background: #fafafa; }
.pb-copy { font-size: .8rem; cursor: pointer; }
.pb-same { color: #555; font-style: italic; }
.pb-evidence pre { white-space: pre-wrap; font-size: 12px; max-height: none; }
"""


def block_label(info: str, stack: str | None = None) -> str:
    """The label of a fenced block from its info string: its first word says where it goes, any
    words after it are kept as a caption ("sql on the primary" -> "SQL to run: on the primary")."""
    kind, _, caption = info.strip().partition(" ")
    kind = kind.lower()
    template = BLOCK_LABELS.get(kind)
    if template is None:
        label = kind or "code"
    else:
        label = template.format(stack=stack or STACK_OF_LANGUAGE.get(kind, kind))
    return f"{label}: {caption.strip()}" if caption.strip() else label


@dataclass
class FixRenderer:
    """Renders recommendations of one page; remembers the blocks already shown so that advice
    repeated by several findings is said once, the later ones pointing back to the first."""

    stack: str | None = None
    _seen_blocks: dict[tuple[str, str], str] = field(default_factory=dict)
    _seen_fixes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._md = MarkdownIt("commonmark", {"html": False, "linkify": False})
        rules = cast(Any, self._md.renderer).rules
        rules["fence"] = self._fence
        rules["code_block"] = self._fence

    def _fence(self, tokens: Sequence[Any], idx: int, options: Any, env: dict[str, Any]) -> str:
        token = tokens[idx]
        info = token.info if token.type == "fence" else ""
        code = token.content.rstrip("\n")
        kind = info.strip().split(" ", 1)[0].lower()
        label = block_label(info, self.stack)
        key = (kind, code.strip())
        owner = env.get("finding", "")
        first = self._seen_blocks.get(key)
        if first is not None and first != owner:
            said = f"{html.escape(label)}: the same block as for {html.escape(first)} above."
            return f'<p class="pb-same">{said}</p>\n'
        self._seen_blocks.setdefault(key, owner)
        css = html.escape(kind or "code")
        return (
            f'<div class="pb-block pb-{css}"><div class="pb-label"><span>{html.escape(label)}</span>'
            '<button type="button" class="pb-copy" onclick="pbCopy(this)">copy</button></div>'
            f"<pre><code>{html.escape(code)}</code></pre></div>\n"
        )

    def render(self, recommendation: str, finding_id: str = "") -> str:
        """One recommendation as HTML: prose paragraphs and labelled blocks, nothing cut."""
        text = recommendation.strip()
        if not text:
            return ""
        first = self._seen_fixes.get(text)
        if first is not None and first != finding_id:
            return f'<p class="pb-same">The same fix as for {html.escape(first)} above.</p>'
        self._seen_fixes.setdefault(text, finding_id)
        return str(self._md.render(text, {"finding": finding_id}))


def _evidence_json(evidence: Mapping[str, Any]) -> str:
    return json.dumps(evidence, indent=2, default=str, ensure_ascii=False)


def findings_html(
    findings: Sequence[Mapping[str, Any]],
    *,
    stack: str | None = None,
    pages: Mapping[str, str] | None = None,
    heading: str = "h3",
    empty: str = "No finding: nothing in this evidence points at a cause.",
) -> str:
    """Every finding, in the order given (worst first), with its fix rendered by FixRenderer and
    its evidence folded; `pages` maps a notebook name to the page that explains it."""
    if not findings:
        return f'<div class="pb-findings"><p>{html.escape(empty)}</p></div>'
    renderer = FixRenderer(stack=stack)
    parts = ['<div class="pb-findings">']
    for finding in findings:
        fid = str(finding.get("id", ""))
        severity = str(finding.get("severity", ""))
        notebook = str(finding.get("notebook", ""))
        page = (pages or {}).get(notebook)
        where = f' · explained in <a href="{html.escape(page)}">{html.escape(page)}</a>' if page else ""
        consequence = finding.get("consequence_of")
        parts.append(f'<div class="pb-finding {html.escape(severity)}" id="finding-{html.escape(fid)}">')
        parts.append(
            f'<{heading}><code>{html.escape(fid)}</code> <span class="pb-sev">{html.escape(severity)}</span> '
            f"{html.escape(str(finding.get('title', '')))}</{heading}>"
        )
        if consequence:
            cause = html.escape(str(consequence))
            parts.append(
                f'<p class="pb-consequence">A consequence of <a href="#finding-{cause}">{cause}</a>:'
                f" fix that first.{where}</p>"
            )
        elif where:
            parts.append(f'<p class="pb-consequence">{where[3:]}</p>')
        parts.append(renderer.render(str(finding.get("recommendation", "")), fid))
        evidence = finding.get("evidence")
        if evidence:
            parts.append(
                '<details class="pb-evidence"><summary>evidence</summary>'
                f"<pre>{html.escape(_evidence_json(evidence))}</pre></details>"
            )
        parts.append("</div>")
    parts.append("</div>")
    return "\n".join(parts)

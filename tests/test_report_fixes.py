"""Fixes rendered for people: labelled blocks by where they go, a copy button, nothing cut,
advice repeated by several findings said once; the verdict never sends a reader to its own page."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from playbook import notebook
from playbook.evidence import Evidence
from playbook.report.findings_html import FixRenderer, block_label, findings_html
from playbook.report.verdict import verdict_html

RECORDED = Path(__file__).parent / "data" / "evidence"
KEEPALIVE = "```dsn\nkeepalives=1 keepalives_idle=60\n```"
LONG = "A pool that is bounded cannot grow without end; " * 20


def finding(fid: str, recommendation: str, category: str = "network") -> dict[str, object]:
    return {
        "id": fid,
        "severity": "warning",
        "title": f"title of {fid}",
        "category": category,
        "notebook": category,
        "recommendation": recommendation,
        "evidence": {"n": 1},
    }


def test_each_fence_is_a_labelled_block_with_a_copy_button() -> None:
    text = (
        "Set the timeout below the path's cut-off.\n\n"
        "```sql\nALTER ROLE app SET idle_session_timeout = '5min';\n```\n\n"
        "```python\npool = ConnectionPool(conninfo, max_idle=240)\n```\n\n"
        "```ini\n[pgbouncer]\nserver_idle_timeout = 240\n```"
    )
    html = FixRenderer(stack="psycopg").render(text, "TMO-001")
    assert "<p>Set the timeout below the path's cut-off.</p>" in html
    assert ">SQL to run<" in html and ">pool code (psycopg)<" in html and ">pgbouncer.ini<" in html
    assert html.count('class="pb-copy"') == 3
    assert "ALTER ROLE app SET idle_session_timeout = &#x27;5min&#x27;;" in html


def test_labels_follow_the_info_string() -> None:
    assert block_label("dsn") == "DSN parameters"
    assert block_label("properties") == "HikariCP / Spring properties"
    assert block_label("javascript") == "pool code (JavaScript)"
    assert block_label("javascript", "node-postgres") == "pool code (node-postgres)"
    assert block_label("sql on the primary") == "SQL to run: on the primary"
    assert block_label("toml") == "toml"


def test_plain_prose_is_prose_and_nothing_is_cut_or_injected() -> None:
    html = findings_html([finding("NET-001", LONG + "<script>alert(1)</script>")])
    assert LONG.strip() in html.replace("\n", " ")
    assert "<script>alert" not in html and "pb-block" not in html


def test_repeated_advice_is_said_once() -> None:
    html = findings_html(
        [
            finding("NET-002", "Keep flows alive.\n\n" + KEEPALIVE),
            finding("NET-003", "Also:\n\n" + KEEPALIVE),
            finding("NET-004", "Keep flows alive.\n\n" + KEEPALIVE),
        ]
    )
    assert html.count("keepalives_idle=60") == 1
    assert "DSN parameters: the same block as for NET-002 above." in html
    assert "The same fix as for NET-002 above." in html


def test_read_next_never_points_at_its_own_page() -> None:
    summary = {
        "status": "critical",
        "findings": [],
        "zones": {},
        "root_causes": [
            {
                "category": "server",
                "severity": "critical",
                "confidence": 0.9,
                "summary": "restarted",
                "layer": "the server itself",
                "finding": "SRV-001",
            }
        ],
    }
    assert "Read next:</b> this page" in verdict_html(summary, this_page="triage")
    assert 'href="triage.html"' in verdict_html(summary, this_page="network")
    summary["root_causes"][0]["category"] = "network"
    assert '<a href="network.html">network.html</a>' in verdict_html(summary, this_page="triage")


def test_the_notebook_verdict_and_tables_read_at_3am() -> None:
    evidence = Evidence.load(RECORDED / "nat_drop")
    html = notebook.verdict(evidence, "network").data
    assert 'class="pb-verdict' in html and "pbCopy" in html
    assert pd.get_option("display.max_colwidth") is None
    events = notebook.app_errors_table(Evidence.load(RECORDED / "server_restart"))
    assert all(len(str(t)) == 19 for t in events["first_seen"])  # "YYYY-MM-DD HH:MM:SS"
    trends = notebook.connection_trends(Evidence.load(RECORDED / "leak"))
    assert pd.api.types.is_integer_dtype(trends["start"]) and pd.api.types.is_integer_dtype(trends["end"])

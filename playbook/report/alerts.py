"""Runs nobody watches tell someone: a Slack-compatible webhook post and node_exporter metrics.

`notify` posts when the status reaches --fail-on; a post that fails is a warning on stderr, never
a failed run (the report is already written). `write_prometheus` writes the textfile-collector
format atomically (a temporary file in the same folder, renamed), so node_exporter never reads
half a file.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from playbook.report.verdict import verdict_line

NOTIFY_TIMEOUT_S = 10.0
SEVERITY_RANK = {"ok": 0, "info": 0, "warning": 1, "critical": 2, "error": 3}
STATUS_VALUES = ("ok", "warning", "critical", "error")


def reaches(status: str, fail_on: str) -> bool:
    """Whether a run's status is bad enough to alert on under --fail-on (an error always is)."""
    if status == "error":
        return True
    if fail_on == "never":
        return False
    return SEVERITY_RANK[status] >= SEVERITY_RANK[fail_on]


def top_cause(summary: Mapping[str, Any]) -> str:
    causes = summary.get("root_causes") or []
    if not causes:
        if summary.get("status") == "error":
            return f"not diagnosed: {summary.get('error') or 'no notebook could run'}"
        return "none found"
    top = causes[0]
    finding = f" ({top['finding']})" if top.get("finding") else ""
    return f"{top['category']}{finding}: {top['summary']}"


def slack_message(summary: Mapping[str, Any], report: str) -> dict[str, Any]:
    """The message: `text` (what every Slack-compatible receiver shows, and the notification's
    preview), then blocks with the status, the top cause, the target and the report's path."""
    status = str(summary.get("status", "error"))
    target = str((summary.get("target") or {}).get("dsn", ""))
    text = f"pg-session-playbook {verdict_line(summary)} · {target} · report: {report}"
    fields = {"Status": status.upper(), "Top cause": top_cause(summary), "Target": target, "Report": report}
    return {
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*pg-session-playbook*: {verdict_line(summary)}"},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{value}"} for name, value in fields.items()
                ],
            },
        ],
    }


def notify(url: str, summary: Mapping[str, Any], report: str) -> bool:
    """POST the message as JSON; True when the receiver answered 2xx. Never raises: a failure is
    one warning line on stderr."""
    body = json.dumps(slack_message(summary, report)).encode()
    try:
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "pg-session-playbook"},
        )
        with urllib.request.urlopen(request, timeout=NOTIFY_TIMEOUT_S) as response:
            response.read()
            return True
    except urllib.error.HTTPError as exc:
        reason = f"the receiver answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    print(
        f"playbook: warning: --notify {redact_url(url)} failed: {reason}; the report is written",
        file=sys.stderr,
    )
    return False


def redact_url(url: str) -> str:
    """A webhook's path is its secret (hooks.slack.com/services/T…/B…/…): name the host only."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.netloc else "(the URL given)"


def write_prometheus(
    path: Path,
    summary: Mapping[str, Any],
    *,
    finished_at: float,
    duration_s: float,
    peak_connections: int | None = None,
    usable_connections: int | None = None,
) -> None:
    """node_exporter textfile-collector metrics for one run, replacing `path` atomically:

    - pg_session_playbook_status{status} 1 for the run's status, 0 for the others
    - pg_session_playbook_severity 0 ok, 1 warning, 2 critical, 3 error
    - pg_session_playbook_finding{id,category,severity} 1 per finding
    - pg_session_playbook_findings{severity} findings per severity
    - pg_session_playbook_peak_connections, pg_session_playbook_usable_connections (when known)
    - pg_session_playbook_last_run_timestamp_seconds, pg_session_playbook_last_run_duration_seconds
    """
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    status = str(summary.get("status", "error"))
    state = Gauge(
        "pg_session_playbook_status",
        "The last run's status (1 for the one it had)",
        ["status"],
        registry=registry,
    )
    for value in STATUS_VALUES:
        state.labels(status=value).set(1 if value == status else 0)
    Gauge(
        "pg_session_playbook_severity",
        "The last run's status as a number: 0 ok, 1 warning, 2 critical, 3 error",
        registry=registry,
    ).set(SEVERITY_RANK.get(status, 3))
    finding = Gauge(
        "pg_session_playbook_finding",
        "A finding of the last run (1 while it is found)",
        ["id", "category", "severity"],
        registry=registry,
    )
    per_severity = {"info": 0, "warning": 0, "critical": 0}
    for item in summary.get("findings") or []:
        finding.labels(id=item["id"], category=item["category"], severity=item["severity"]).set(1)
        per_severity[item["severity"]] = per_severity.get(item["severity"], 0) + 1
    count = Gauge(
        "pg_session_playbook_findings",
        "Findings of the last run per severity",
        ["severity"],
        registry=registry,
    )
    for severity, number in per_severity.items():
        count.labels(severity=severity).set(number)
    if peak_connections is not None:
        Gauge(
            "pg_session_playbook_peak_connections",
            "Most client connections seen at once in the window",
            registry=registry,
        ).set(peak_connections)
    if usable_connections is not None:
        Gauge(
            "pg_session_playbook_usable_connections",
            "max_connections minus the reserved slots",
            registry=registry,
        ).set(usable_connections)
    Gauge(
        "pg_session_playbook_last_run_timestamp_seconds",
        "When the last run ended (Unix time)",
        registry=registry,
    ).set(finished_at)
    Gauge(
        "pg_session_playbook_last_run_duration_seconds", "How long the last run took", registry=registry
    ).set(duration_s)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)

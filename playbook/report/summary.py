"""summary.json: the contract other tools read (schema pg-session-playbook/summary/v1)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from playbook.diagnose import rank_root_causes
from playbook.diagnose.findings import Finding, worst_severity
from playbook.errors import EXIT_CRITICAL, EXIT_ERROR, EXIT_OK, EXIT_WARNING
from playbook.evidence import Evidence
from playbook.evidence.manifest import HIDDEN_ACTIVITY
from playbook.report.verdict import HIDDEN_FROM_ROLE, NOT_READ

SCHEMA_ID = "pg-session-playbook/summary/v1"


def schema() -> dict[str, Any]:
    text = resources.files("playbook.report").joinpath("summary.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validate(summary: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError when the summary breaks the contract."""
    import jsonschema  # its format checkers take most of a second to import: only when validating

    jsonschema.validate(summary, schema(), format_checker=jsonschema.FormatChecker())


def build_summary(
    evidence: Evidence, findings: list[Finding], notebooks: list[dict[str, Any]]
) -> dict[str, Any]:
    """summary.json's content (schema pg-session-playbook/summary/v1, validated by `validate`).

    status is the worst finding's severity ("ok" when only info), or "error" when notebooks were
    asked for and none ran; root_causes ranks one entry per category with a warning or critical
    finding that is not the consequence of another.
    """
    ran = [nb for nb in notebooks if nb["status"] == "ok"]
    worst = worst_severity(findings)
    if notebooks and not ran:
        status = "error"
    elif worst is None or worst.value == "info":
        status = "ok"
    else:
        status = worst.value
    window = evidence.manifest.get("window", {})
    live = evidence.manifest.get("live") or {}
    return {
        "schema": SCHEMA_ID,
        "status": status,
        "target": {
            "dsn": evidence.manifest.get("target", ""),
            "server_version": evidence.settings.get("server", {}).get("server_version"),
            "live": bool(live.get("connected", True)),
            "not_live_reason": None if live.get("connected", True) else live.get("reason"),
            "pooler": (evidence.snapshot("pooler") or {}).get("note"),  # reached through one: what it hides
        },
        "zones": dict(evidence.manifest.get("zones") or {}),
        "evidence_warnings": evidence_warnings(evidence),
        "window": {
            "start": window.get("start"),
            "end": window.get("end"),
            "duration_s": window.get("duration_s", 0),
        },
        "root_causes": rank_root_causes(findings),
        "findings": [f.to_dict() for f in findings],
        "notebooks": notebooks,
    }


def error_summary(dsn: str, error: str) -> dict[str, Any]:
    """What a run that could not diagnose leaves for --history, --prometheus and --notify (not a
    summary.json: nothing was published): status "error", the target and the one-sentence reason."""
    return {"status": "error", "target": {"dsn": dsn}, "error": error, "root_causes": [], "findings": []}


def evidence_warnings(evidence: Evidence) -> list[str]:
    """What the diagnosis could not stand on, one sentence each: evidence that could not be read
    (a log whose prefix matched nothing, a probe that failed), sessions of other roles this role
    may not see, and what the log readers assumed (an ambiguous zone abbreviation read as UTC). A
    verdict beside these is only as good as what was read, so they are shown with it, never only
    kept in the manifest."""
    said = [f"{f['what']}{NOT_READ}{f['error']}" for f in evidence.manifest.get("failures") or []]
    said += [
        f"{u['what']}{HIDDEN_FROM_ROLE}{u['error']}; {u.get('grant') or ''} would show it".rstrip()
        for u in evidence.manifest.get("unavailable") or []
        if u.get("what") == HIDDEN_ACTIVITY
    ]
    for name in ("server_log_summary", "app_log_summary", "sampling"):  # sampling: a window cut short
        said += [str(w) for w in (evidence.snapshot(name) or {}).get("warnings") or []]
    return list(dict.fromkeys(said))


def exit_code(status: str, fail_on: str = "warning", failed_notebooks: int = 0) -> int:
    """0 ok, 1 worst finding a warning, 2 critical, 3 could not diagnose; --fail-on moves the bar.

    A run where some notebooks failed (`failed_notebooks`, and not all of them: that is status
    "error") is at least a warning: its verdict stands on the evidence, but pages are missing.
    """
    if status == "error":
        return EXIT_ERROR
    if status == "ok" and failed_notebooks:
        status = "warning"
    if fail_on == "never" or status == "ok":
        return EXIT_OK
    if status == "warning":
        return EXIT_WARNING if fail_on == "warning" else EXIT_OK
    return EXIT_CRITICAL

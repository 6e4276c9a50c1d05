"""Short calls the notebooks make, so that a notebook stays prose plus a few lines of code."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd

from playbook.collect.run import collect_evidence
from playbook.diagnose import diagnose_all, rank_root_causes
from playbook.diagnose.findings import Finding
from playbook.evidence import Evidence
from playbook.target import resolve_target


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def load_or_collect(
    *,
    dsn: str = "",
    evidence_dir: str = "",
    duration: float = 30,
    interval: float = 1.0,
    server_log: str | Sequence[str] | None = None,
    app_log: str | Sequence[str] | None = None,
) -> Evidence:
    """Under `playbook run` the evidence is already collected; opened by hand, the notebook collects."""
    if evidence_dir and Path(evidence_dir, "manifest.json").exists():
        return Evidence.load(evidence_dir)
    target = resolve_target(dsn or None)
    return collect_evidence(
        target,
        duration=duration,
        interval=interval,
        server_logs=_as_list(server_log),
        app_logs=_as_list(app_log),
    )


def server_overview(evidence: Evidence) -> pd.DataFrame:
    """Version, uptime, limits and what the playbook could not see."""
    settings = evidence.settings
    server = settings.get("server", {})
    values = settings.get("settings", {})
    start = server.get("postmaster_start")
    snapshot = server.get("snapshot_at")
    uptime = (
        str(pd.Timedelta(datetime.fromisoformat(snapshot) - datetime.fromisoformat(start)).floor("s"))
        if start and snapshot
        else "unknown"
    )

    def setting(name: str) -> str:
        entry = values.get(name)
        if entry is None:
            return "absent on this version"
        return f"{entry['setting']}{entry.get('unit') or ''}"

    rows = [
        ("server version", server.get("server_version", "?")),
        ("postmaster started", start or "?"),
        ("uptime at snapshot", uptime),
        ("connected as", f"{server.get('role')} (pg_monitor: {server.get('has_pg_monitor')})"),
        ("max_connections", setting("max_connections")),
        ("superuser_reserved_connections", setting("superuser_reserved_connections")),
        ("reserved_connections", setting("reserved_connections")),
        ("usable by ordinary roles", str(settings.get("usable_connections"))),
        ("sampling window", f"{evidence.manifest.get('window', {}).get('duration_s', '?')} s"),
        ("sampler gaps", str(len(evidence.gaps))),
    ]
    return pd.DataFrame(rows, columns=["what", "value"]).set_index("what")


def unavailable(evidence: Evidence) -> pd.DataFrame:
    """What this role could not see, and the GRANT that would show it."""
    return pd.DataFrame(evidence.manifest.get("unavailable", []), columns=["what", "error", "grant"])


def findings(evidence: Evidence, category: str | None = None) -> list[Finding]:
    found = diagnose_all(evidence)
    return [f for f in found if category is None or f.category == category]


def findings_table(found: list[Finding]) -> pd.DataFrame:
    if not found:
        return pd.DataFrame({"result": ["no finding: nothing in this evidence points at a cause"]})
    return pd.DataFrame(
        [{"id": f.id, "severity": f.severity.value, "title": f.title, "fix": f.recommendation} for f in found]
    ).set_index("id")


def root_causes(evidence: Evidence) -> pd.DataFrame:
    causes = rank_root_causes(diagnose_all(evidence))
    if not causes:
        return pd.DataFrame({"result": ["no root cause: the window looks healthy"]})
    return pd.DataFrame(causes)


def oldest_idle_in_transaction(evidence: Evidence, top: int = 10) -> pd.DataFrame:
    from playbook.diagnose.leak import idle_in_transaction_sessions

    return idle_in_transaction_sessions(evidence.frame("activity_samples")).head(top)

"""The types every diagnosis returns: a Finding carries its evidence and a fix to paste."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from playbook.vocabulary.categories import (
    CATEGORIES,
    ID_PREFIX,
    NOTEBOOK_OF_CATEGORY,
    POOLER_ID_PREFIX,
    Category,
    NotebookName,
)
from playbook.vocabulary.findings import FINDINGS

__all__ = ["CATEGORIES", "POOLER_ID_PREFIX", "Finding", "Severity", "worst_severity"]

LAYER_OF_CATEGORY: dict[Category, str] = {
    "leak": "the application (it holds its connections)",
    "timeout": "the server (one of its timeouts)",
    "network": "the network path",
    "pool_config": "the pools against the server's limits",
    "server": "the server itself (restart, crash or terminate)",
}


class Severity(str, Enum):
    """How bad: info (context, no harm seen), warning (harm in the window), critical (outage)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


@dataclass(frozen=True)
class Finding:
    """One conclusion of the diagnosis: stable id, category, severity, its evidence and the fix.

    `id` is `<prefix>-NNN`, the prefix being the category's (LEAK, TMO, NET, POOL, SRV) or BNC for
    the pooler; ids are stable so alerts can route on them, and each is defined, with its category,
    in playbook.vocabulary.findings (an id or category it does not define is a ValueError).
    `confidence` (0..1) ranks findings of the same severity. `consequence_of` names the finding id
    of the cause this one follows from (orphaned sessions after a network cut, pool waits behind a
    leak): it is then ranked below that cause and never counted as a root cause of its own.
    """

    id: str
    category: Category
    severity: Severity
    title: str
    recommendation: str
    confidence: float = 0.5
    evidence: dict[str, Any] = field(default_factory=dict)
    consequence_of: str | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}")
        prefix = self.id.split("-", 1)[0]
        if prefix not in (ID_PREFIX[self.category], POOLER_ID_PREFIX) or "-" not in self.id:
            raise ValueError(f"finding id {self.id!r} does not match category {self.category!r}")
        spec = FINDINGS.get(self.id)
        if spec is None:
            raise ValueError(f"finding id {self.id!r} is not defined in playbook.vocabulary.findings")
        if spec.category != self.category:
            raise ValueError(f"finding {self.id} is a {spec.category} finding, not {self.category!r}")

    @property
    def notebook(self) -> NotebookName:
        return NOTEBOOK_OF_CATEGORY[self.category]

    @property
    def layer(self) -> str:
        """Which layer ended or refused the sessions: PgBouncer for BNC findings, else the category's."""
        return "PgBouncer" if self.id.startswith(POOLER_ID_PREFIX + "-") else LAYER_OF_CATEGORY[self.category]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = self.severity.value
        data["notebook"] = self.notebook
        return data


def worst_severity(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), key=lambda s: s.rank, default=None)

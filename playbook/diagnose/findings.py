"""The types every diagnosis returns: a Finding carries its evidence and a fix to paste."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

CATEGORIES = ("leak", "timeout", "network", "pool_config", "server")
# Where a reader learns about each category; server causes are explained in triage.
NOTEBOOK_OF_CATEGORY = {
    "leak": "leaks",
    "timeout": "timeouts",
    "network": "network",
    "pool_config": "pool_config",
    "server": "triage",
}
ID_PREFIX = {"leak": "LEAK", "timeout": "TMO", "network": "NET", "pool_config": "POOL", "server": "SRV"}


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


@dataclass(frozen=True)
class Finding:
    id: str
    category: str
    severity: Severity
    title: str
    recommendation: str
    confidence: float = 0.5
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}")
        # BNC- (the pooler layer, PgBouncer) may carry any of the five categories.
        if not self.id.startswith((ID_PREFIX[self.category] + "-", "BNC-")):
            raise ValueError(f"finding id {self.id!r} does not match category {self.category!r}")

    @property
    def notebook(self) -> str:
        return NOTEBOOK_OF_CATEGORY[self.category]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = self.severity.value
        data["notebook"] = self.notebook
        return data


def worst_severity(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), key=lambda s: s.rank, default=None)

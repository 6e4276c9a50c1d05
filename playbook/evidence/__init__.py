"""The evidence of a run, the typed contract between collectors and everything that reads them.

Collectors write it; diagnose, plots, the notebooks and the report read it. This package owns the
frames' schemas (frames), the manifest (manifest) and settings snapshot (settings) as types, the
shared vocabularies (vocab, zones, logfiles) and the pure views several readers need (views). It
imports no collector, no driver and no report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from playbook.evidence.manifest import MANIFEST_SCHEMA, Manifest

if TYPE_CHECKING:
    from playbook.evidence.store import Evidence

__all__ = ["MANIFEST_SCHEMA", "Evidence", "Manifest"]


def __getattr__(name: str) -> Any:
    """Evidence (and with it pandas) loads on first use: the shared vocabularies here (zones,
    logfiles) are read by `playbook logs`, which never builds a frame and should not pay for
    pandas at start-up."""
    if name == "Evidence":
        from playbook.evidence.store import Evidence

        return Evidence
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

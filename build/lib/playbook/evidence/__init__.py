"""The evidence of a run, the typed contract between collectors and everything that reads them.

Collectors write it; diagnose, plots, the notebooks and the report read it. This package owns the
frames' schemas (frames), the manifest (manifest) and settings snapshot (settings) as types, the
shared vocabularies (vocab, zones, logfiles) and the pure views several readers need (views). It
imports no collector, no driver and no report.
"""

from playbook.evidence.manifest import MANIFEST_SCHEMA, Manifest
from playbook.evidence.store import Evidence

__all__ = ["MANIFEST_SCHEMA", "Evidence", "Manifest"]

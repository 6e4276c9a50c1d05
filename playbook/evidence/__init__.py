"""The evidence of a run, the typed contract between collectors and everything that reads them.

Collectors write it; diagnose, plots, the notebooks and the report read it. This package owns the
frames' schemas, the manifest and settings snapshot, the shared vocabularies (categories, stacks,
notebooks, zones, log files) and the pure views several readers need. It imports no collector,
no driver and no report.
"""

from playbook.evidence.store import MANIFEST_SCHEMA, Evidence

__all__ = ["MANIFEST_SCHEMA", "Evidence"]

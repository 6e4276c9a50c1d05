"""The path probe source: a `playbook probe path` folder given with --path-probe, joined as evidence.

The probe ran before, on its own (it takes as long as its longest rung): its rows become the
`path_probe` frame (evidence.contract.PATH_PROBE) and what it was run with the `path_probe`
snapshot, so diagnose.path_cutoff marks the path measured from it. Not live (an offline run joins
it too) and not windowed (the probe is not an event of the window).
"""

from __future__ import annotations

from playbook.collect.sources.base import Context, Contribution
from playbook.probes.path import read_probe
from playbook.request import RunRequest


class PathProbeSource:
    name = "path probe"
    live = False
    windowed = False

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        """The probe's rows and meta when the request names a folder; nothing otherwise."""
        if request.path_probe is None:
            return Contribution()
        frame, meta = read_probe(request.path_probe)
        return Contribution(
            frames={"path_probe": frame}, snapshots={"path_probe": meta}, collected=["path_probe"]
        )

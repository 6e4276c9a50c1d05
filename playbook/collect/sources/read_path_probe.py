"""The path probe source: a `playbook probe path` folder given with --path-probe, joined as evidence.

The probe ran before, on its own (it takes as long as its longest rung): its rows become the
`path_probe` frame (evidence.contract.PATH_PROBE) and what it was run with the `path_probe`
snapshot, so diagnose.path_cutoff marks the path measured from it. Not live (an offline run joins
it too) and not windowed (the probe is not an event of the window). Evidence read back from disk
(`playbook run --evidence-from DIR`) collects nothing: `join_path_probe` joins the folder to it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from playbook.collect.sources.base import Context, Contribution
from playbook.evidence.manifest import Manifest
from playbook.evidence.store import Evidence
from playbook.probes.path import read_probe
from playbook.request import RunRequest

NAME = "path_probe"  # the frame, the snapshot and the manifest's "collected" entry


class PathProbeSource:
    name = "path probe"
    live = False
    windowed = False

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        """The probe's rows and meta when the request names a folder; nothing otherwise."""
        if request.path_probe is None:
            return Contribution()
        frame, meta = read_probe(request.path_probe)
        return Contribution(frames={NAME: frame}, snapshots={NAME: meta}, collected=[NAME])


def join_path_probe(evidence: Evidence, folder: Path | None) -> Evidence:
    """`evidence` (loaded from disk) with the probe in `folder` joined as a collection joins it:
    its frame and snapshot replace any probe the evidence already held (the folder named on the
    command line is the one asked for), "collected" lists it, and the manifest's `path_probe` says
    which folder it was read from. `folder` None returns `evidence` unchanged; a folder that is not
    a probe's is one sentence (PlaybookError)."""
    if folder is None:
        return evidence
    frame, meta = read_probe(folder)
    collected = list(evidence.manifest.get("collected", []))
    manifest: Manifest = {
        **evidence.manifest,
        "collected": collected if NAME in collected else [*collected, NAME],
        "path_probe": str(folder.resolve()),
    }
    return replace(
        evidence,
        manifest=manifest,
        frames={**evidence.frames, NAME: frame},
        snapshots={**evidence.snapshots, NAME: meta},
    )

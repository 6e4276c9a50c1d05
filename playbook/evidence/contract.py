"""Every frame of the evidence contract, by name: the core frames and the pooler's, listed here.

Listed, not registered: importing a module never changes the contract, so what a run may hold
is the same whichever modules happened to be imported first.
"""

from __future__ import annotations

from playbook.evidence.frames import CORE_FRAMES, FrameSchema
from playbook.evidence.pgbouncer_frames import SCHEMAS as POOLER_FRAMES

FRAMES: dict[str, FrameSchema] = {**CORE_FRAMES, **POOLER_FRAMES}

"""Every frame of the evidence contract, by name: the core frames and the pooler's, listed here.

Listed, not registered: importing a module never changes the contract, so what a run may hold
is the same whichever modules happened to be imported first.
"""

from __future__ import annotations

from playbook.evidence.frames import CORE_FRAMES, Column, FrameSchema
from playbook.evidence.pgbouncer_frames import SCHEMAS as POOLER_FRAMES

# `playbook probe path`'s rows (probes/path.py), joined by `playbook run --path-probe DIR`: how
# long each connection was left idle, with or without keepalives, and how it ended.
PATH_ENDINGS = ("reset", "closed", "silent drop", "server end", "connect failed", "error")
PATH_PROBE = FrameSchema(
    "path_probe",
    "one connection left idle for one rung of the probe's ladder, then asked SELECT 1",
    (
        Column("rung_s", "float", "how long it was to stay idle (s)"),
        Column("keepalives", "bool", "whether it sent TCP keepalives while idle"),
        Column("keepalives_idle_s", "float", "after how long idle they started (NaN without)"),
        Column("survived", "bool", "whether SELECT 1 answered after the idle time"),
        Column("ended", "text", f"how it ended, one of {', '.join(PATH_ENDINGS)}; None when it survived"),
        Column("seen", "text", "'idle' (ended while waiting), 'query' (found by SELECT 1), 'connect'"),
        Column("ended_at_s", "float", "idle age when the end was seen (idle) or the query was sent"),
        Column("idle_actual_s", "float", "idle age when the probe finished with it"),
        Column("error", "text", "the error, one line"),
        Column("sqlstate", "text", "its SQLSTATE, if any"),
    ),
    "the path's idle cut-off, probed from this host with and without keepalives",
)

FRAMES: dict[str, FrameSchema] = {**CORE_FRAMES, **POOLER_FRAMES, PATH_PROBE.name: PATH_PROBE}

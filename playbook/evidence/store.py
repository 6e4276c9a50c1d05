"""The evidence of one run: collected once, stored in the run's folder, read by every notebook.

Frames are parquet, snapshots JSON, and manifest.json says what was collected, when, with which
privileges, and what failed. Nothing here talks to a database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

MANIFEST_SCHEMA = "pg-session-playbook/evidence/v1"
FRAMES = (
    "activity_samples",
    "activity_ticks",
    "server_log_events",
    "server_log_sessions",
    "app_log_events",
    "connect_probes",
    "round_trip_probes",
)
SNAPSHOTS = ("settings", "server_log_summary", "app_log_summary", "keepalive_probe")


@dataclass
class Evidence:
    manifest: dict[str, Any] = field(default_factory=dict)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    snapshots: dict[str, Any] = field(default_factory=dict)

    def frame(self, name: str) -> pd.DataFrame:
        """The named frame, or an empty one when it was not collected."""
        return self.frames.get(name, pd.DataFrame())

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.snapshots.get("settings") or {})

    @property
    def gaps(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("gaps", []))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in self.frames.items():
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        for name, snapshot in self.snapshots.items():
            (folder / f"{name}.json").write_text(json.dumps(snapshot, indent=2, default=str))
        manifest = {"schema": MANIFEST_SCHEMA, **self.manifest}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))

    @classmethod
    def load(cls, folder: Path | str) -> Evidence:
        folder = Path(folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        frames = {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}
        snapshots = {
            p.stem: json.loads(p.read_text())
            for p in sorted(folder.glob("*.json"))
            if p.name != "manifest.json"
        }
        return cls(manifest=manifest, frames=frames, snapshots=snapshots)

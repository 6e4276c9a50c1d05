"""The evidence of one run: collected once, stored in the run's folder, read by every notebook.

Frames are parquet files named by their schema (playbook.evidence.frames), snapshots are JSON
(the settings snapshot, log summaries, probe results) and manifest.json says what was collected,
when, with which privileges, and what failed. Nothing here talks to a database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pandas as pd

from playbook.errors import PlaybookError
from playbook.evidence.contract import FRAMES
from playbook.evidence.frames import (
    ACTIVITY_SAMPLES,
    ACTIVITY_TICKS,
    APP_LOG_EVENTS,
    SERVER_LOG_EVENTS,
    FrameSchema,
)
from playbook.evidence.manifest import MANIFEST_SCHEMA, Gap, Manifest
from playbook.evidence.settings import SettingEntry, SettingsSnapshot, setting_seconds

SETTINGS_SNAPSHOT = "settings"


@dataclass
class Evidence:
    """One run's evidence. Build it in a collector, `save` it, `load` it anywhere.

    Readers use the typed accessors (`frame(SCHEMA)`, `settings`, `setting_s`, `gaps`, `window`)
    rather than reaching into the dicts: a frame that was not collected reads as an empty frame
    with its schema's columns, and a missing snapshot as an empty one.
    """

    manifest: Manifest = field(default_factory=lambda: cast(Manifest, {}))
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    snapshots: dict[str, Any] = field(default_factory=dict)

    def frame(self, schema: FrameSchema | str) -> pd.DataFrame:
        """The frame, or an empty one with the schema's columns when it was not collected."""
        name = schema if isinstance(schema, str) else schema.name
        found = self.frames.get(name)
        if found is not None:
            return found
        known = schema if isinstance(schema, FrameSchema) else FRAMES.get(name)
        return known.empty() if known else pd.DataFrame()

    def snapshot(self, name: str) -> dict[str, Any]:
        """A JSON snapshot (e.g. "server_log_summary"), empty when it was not collected."""
        return dict(self.snapshots.get(name) or {})

    def collected(self, what: str) -> bool:
        """Whether a collector ran ("server_log", "app_log", "activity", …), even if it found nothing."""
        return what in self.manifest.get("collected", [])

    @property
    def settings(self) -> SettingsSnapshot:
        return cast(SettingsSnapshot, dict(self.snapshots.get(SETTINGS_SNAPSHOT) or {}))

    def setting(self, name: str) -> SettingEntry | None:
        return (self.settings.get("settings") or {}).get(name)

    def setting_s(self, name: str) -> float | None:
        """A time setting in seconds; None when absent, not visible, or disabled (0)."""
        return setting_seconds(self.setting(name))

    @property
    def gaps(self) -> list[Gap]:
        return list(self.manifest.get("gaps", []))

    @property
    def window(self) -> tuple[datetime, datetime] | None:
        window = self.manifest.get("window")
        if not window:
            return None
        return datetime.fromisoformat(window["start"]), datetime.fromisoformat(window["end"])

    @property
    def activity_samples(self) -> pd.DataFrame:
        return self.frame(ACTIVITY_SAMPLES)

    @property
    def activity_ticks(self) -> pd.DataFrame:
        return self.frame(ACTIVITY_TICKS)

    @property
    def server_log_events(self) -> pd.DataFrame:
        return self.frame(SERVER_LOG_EVENTS)

    @property
    def app_log_events(self) -> pd.DataFrame:
        return self.frame(APP_LOG_EVENTS)

    def save(self, folder: Path) -> None:
        """Write every frame, snapshot and the manifest; a frame missing a schema column is a bug."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in self.frames.items():
            schema = FRAMES.get(name)
            if schema and schema.missing(frame):
                raise ValueError(f"frame {name} lacks the columns {schema.missing(frame)} of its schema")
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        for name, snapshot in self.snapshots.items():
            (folder / f"{name}.json").write_text(json.dumps(snapshot, indent=2, default=str))
        manifest = {**self.manifest, "schema": MANIFEST_SCHEMA}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))

    @classmethod
    def load(cls, folder: Path | str) -> Evidence:
        """Read a folder `save` wrote; one sentence when it is not evidence or of another format."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except FileNotFoundError:
            raise PlaybookError(f"{folder} holds no evidence (no manifest.json)") from None
        except (OSError, ValueError) as exc:
            raise PlaybookError(f"{folder}/manifest.json cannot be read: {exc}") from None
        found = manifest.get("schema") if isinstance(manifest, dict) else None
        if found != MANIFEST_SCHEMA:
            raise PlaybookError(
                f"{folder} holds evidence of format {found!r}, and this playbook reads {MANIFEST_SCHEMA!r}: "
                "collect it again with this version"
            )
        frames = {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}
        snapshots = {
            p.stem: json.loads(p.read_text())
            for p in sorted(folder.glob("*.json"))
            if p.name != "manifest.json"
        }
        return cls(manifest=cast(Manifest, manifest), frames=frames, snapshots=snapshots)

"""A `playbook watch` folder on disk: its segments, their retention, and the slice a run reads.

Layout of a watch folder:

    DIR/watch.json                  what is watched: target (redacted), interval, the logs named
    DIR/segments/<start>--<end>/    one segment: the evidence of the ticks between two instants
        manifest.json               the segment's window, gaps, and where each log stood (offsets)
        activity_samples.parquet    the frames the run's sampler produces, for those ticks
        activity_ticks.parquet
        settings.json               the server's settings, as last read
    DIR/segments/.partial-*         a segment being written (never read; removed on next start)

A segment is written into a hidden folder and renamed into place (`os.replace`, after fsync):
it is whole or absent, whatever kills the writer. The logs are not copied: each segment records,
per log, the file's (device, inode, size) when the segment opened and when it closed. The slice
reads those byte ranges later, finding a file that was rotated by rename under its new name in the
same folder by its inode; a log that was compressed or removed since is a failure note of the
slice, not an error. Reading the logs' bytes only when a slice is asked for keeps the watcher's
cost to one `stat` per log per segment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, cast

import pandas as pd

from playbook import __version__
from playbook.errors import PlaybookError
from playbook.evidence import Evidence, Manifest
from playbook.evidence.frames import ACTIVITY_SAMPLES, ACTIVITY_TICKS, FrameSchema
from playbook.evidence.manifest import MANIFEST_SCHEMA, Failure, Gap
from playbook.evidence.pgbouncer_frames import CONFIG_SNAPSHOT, CONSOLE_SNAPSHOT
from playbook.request import RunRequest, moment, named

WATCH_META = "watch.json"
WATCH_SCHEMA = "pg-session-playbook/watch/v1"
SEGMENTS = "segments"
PARTIAL = ".partial-"
STAMP = "%Y%m%dT%H%M%S.%fZ"
LOG_KINDS = ("server_logs", "app_logs", "pgbouncer_logs")
PARQUET_COMPRESSION: Literal["zstd"] = "zstd"  # about half of snappy's bytes on these frames, for little CPU

_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# -- retention ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keep:
    """--keep: segments younger than `age_s`, or the newest segments within `bytes` on disk."""

    age_s: float | None = None
    bytes: int | None = None

    def describe(self) -> str:
        if self.bytes is not None:
            return f"{self.bytes / (1 << 20):g}MB"
        return f"{(self.age_s or 0) / 3600:g}h"


def parse_keep(text: str) -> Keep:
    """'24h', '90m', '7d' (an age) or '500MB', '2GB' (a size); one sentence for anything else."""
    value = text.strip()
    size = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?B)", value, re.IGNORECASE)
    if size:
        return Keep(bytes=int(float(size.group(1)) * _SIZE_UNITS[size.group(2).upper()]))
    age = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", value)
    if age and float(age.group(1)) > 0:
        return Keep(age_s=float(age.group(1)) * _AGE_UNITS[age.group(2)])
    raise PlaybookError(f"--keep {text!r} is neither an age like 24h or 7d nor a size like 500MB or 2GB")


# -- segments ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    path: Path
    start: datetime
    end: datetime

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


def segment_name(start: datetime, end: datetime) -> str:
    return f"{start.astimezone(timezone.utc):{STAMP}}--{end.astimezone(timezone.utc):{STAMP}}"


def segments(watch_dir: Path) -> list[Segment]:
    """The whole segments of a watch folder, oldest first (partial ones are never listed)."""
    found = []
    folder = watch_dir / SEGMENTS
    if not folder.is_dir():
        return []
    for path in folder.iterdir():
        start, sep, end = path.name.partition("--")
        if path.name.startswith(".") or not sep or not path.is_dir():
            continue
        try:
            found.append(
                Segment(
                    path,
                    datetime.strptime(start, STAMP).replace(tzinfo=timezone.utc),
                    datetime.strptime(end, STAMP).replace(tzinfo=timezone.utc),
                )
            )
        except ValueError:
            continue  # not a segment's name: someone else's folder, left alone
    return sorted(found, key=lambda s: (s.start, s.end))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_segment(
    watch_dir: Path,
    start: datetime,
    end: datetime,
    frames: dict[str, pd.DataFrame],
    snapshots: dict[str, Any],
    manifest: dict[str, Any],
) -> Path:
    """Write one segment whole or not at all: into a hidden folder, every file fsynced, then
    renamed into place and the parent fsynced."""
    folder = watch_dir / SEGMENTS
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{PARTIAL}{uuid.uuid4().hex[:12]}"
    partial.mkdir()
    try:
        for name, frame in frames.items():
            frame.to_parquet(partial / f"{name}.parquet", index=False, compression=PARQUET_COMPRESSION)
        for name, snapshot in snapshots.items():
            (partial / f"{name}.json").write_text(json.dumps(snapshot, default=str))
        (partial / "manifest.json").write_text(
            json.dumps({**manifest, "schema": MANIFEST_SCHEMA}, indent=1, default=str)
        )
        for path in partial.iterdir():
            _fsync(path)
        _fsync(partial)
        final = folder / segment_name(start, end)
        os.replace(partial, final)
        _fsync(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def remove_partials(watch_dir: Path) -> int:
    """Remove what a killed writer left half-written; how many."""
    folder = watch_dir / SEGMENTS
    left = [p for p in folder.glob(f"{PARTIAL}*")] if folder.is_dir() else []
    for path in left:
        shutil.rmtree(path, ignore_errors=True)
    return len(left)


def apply_keep(watch_dir: Path, keep: Keep, now: datetime | None = None) -> list[Path]:
    """Remove the oldest segments beyond --keep (never the newest one); the paths removed."""
    found = segments(watch_dir)
    doomed: list[Segment] = []
    if keep.age_s is not None:
        horizon = (now or datetime.now(timezone.utc)) - timedelta(seconds=keep.age_s)
        doomed = [s for s in found[:-1] if s.end < horizon]
    elif keep.bytes is not None:
        sizes = [s.bytes for s in found]
        total = sum(sizes)
        for segment, size in zip(found[:-1], sizes[:-1], strict=True):
            if total <= keep.bytes:
                break
            doomed.append(segment)
            total -= size
    for segment in doomed:
        # Renamed aside first: a reader listing segments never meets a half-removed one.
        aside = segment.path.with_name(f"{PARTIAL}gone-{uuid.uuid4().hex[:8]}")
        os.replace(segment.path, aside)
        shutil.rmtree(aside, ignore_errors=True)
    return [s.path for s in doomed]


# -- where the logs stood ---------------------------------------------------------------------------


def log_position(path: Path) -> dict[str, int] | None:
    """(device, inode, size) of a log now; None when it does not exist (yet)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return {"dev": st.st_dev, "ino": st.st_ino, "offset": st.st_size}


def _find_inode(path: Path, dev: int, ino: int) -> Path | None:
    """The file that is (dev, ino) now: the log itself, or the name it was rotated to beside it."""
    candidates = [path]
    with contextlib.suppress(OSError):
        candidates += sorted(p for p in path.parent.iterdir() if p != path)
    for candidate in candidates:
        try:
            st = candidate.stat()
        except OSError:
            continue
        if st.st_dev == dev and st.st_ino == ino and candidate.is_file():
            return candidate
    return None


@dataclass
class _Piece:
    dev: int
    ino: int
    start: int
    end: int | None  # None: to the end of the file (the log was rotated away meanwhile)


def _pieces(spans: Sequence[dict[str, Any]]) -> list[_Piece]:
    """The byte ranges of one log that consecutive segments' (start, end) positions cover, merged
    where they follow each other on the same file."""
    pieces: list[_Piece] = []
    for span in spans:
        start, end = span.get("start"), span.get("end")
        parts: list[_Piece] = []
        if end is None:
            if start is not None:  # the log vanished during the segment: what it held then
                parts.append(_Piece(start["dev"], start["ino"], start["offset"], None))
        elif start is None or (start["dev"], start["ino"]) != (end["dev"], end["ino"]):
            if start is not None:  # rotated during the segment: the old file's tail, the new head
                parts.append(_Piece(start["dev"], start["ino"], start["offset"], None))
            parts.append(_Piece(end["dev"], end["ino"], 0, end["offset"]))
        elif end["offset"] >= start["offset"]:
            parts.append(_Piece(start["dev"], start["ino"], start["offset"], end["offset"]))
        else:  # truncated in place (copytruncate): what the file holds since
            parts.append(_Piece(end["dev"], end["ino"], 0, end["offset"]))
        for part in parts:
            last = pieces[-1] if pieces else None
            if last and (last.dev, last.ino) == (part.dev, part.ino) and last.end == part.start:
                last.end = part.end
            else:
                pieces.append(part)
    return pieces


def copy_log_slice(path: Path, spans: Sequence[dict[str, Any]], into: Path) -> list[str]:
    """Write into `into` the bytes of log `path` the spans cover, in order; what could not be found
    (rotated and compressed, or removed) as sentences."""
    missing: list[str] = []
    with into.open("wb") as out:
        for piece in _pieces(spans):
            found = _find_inode(path, piece.dev, piece.ino)
            if found is None:
                missing.append(
                    f"{path}: the part written while it was inode {piece.ino} is no longer beside it "
                    "(rotated and compressed, or removed); read that file with playbook logs"
                )
                continue
            with found.open("rb") as log:
                log.seek(piece.start)
                remaining = None if piece.end is None else max(0, piece.end - piece.start)
                while remaining is None or remaining > 0:
                    chunk = log.read(1 << 20 if remaining is None else min(1 << 20, remaining))
                    if not chunk:
                        break
                    out.write(chunk)
                    if remaining is not None:
                        remaining -= len(chunk)
    return missing


# -- the slice ------------------------------------------------------------------------------------


def is_watch_dir(path: Path | str) -> bool:
    return Path(path, WATCH_META).is_file()


def read_meta(watch_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((watch_dir / WATCH_META).read_text())
    except FileNotFoundError:
        raise PlaybookError(f"{watch_dir} is not a playbook watch folder (no {WATCH_META})") from None
    except (OSError, ValueError) as exc:
        raise PlaybookError(f"{watch_dir}/{WATCH_META} cannot be read: {exc}") from None
    if not isinstance(meta, dict) or meta.get("schema") != WATCH_SCHEMA:
        found = meta.get("schema") if isinstance(meta, dict) else None
        raise PlaybookError(
            f"{watch_dir} was written by a watch of format {found!r}; this one reads {WATCH_SCHEMA!r}"
        )
    return meta


def load_slice(
    watch_dir: Path | str,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    *,
    log_tz: str | None = None,
    app_tz: str | None = None,
    prefix: str | None = None,
) -> Evidence:
    """One Evidence of the watch folder's segments within [since, until] (times as --since reads
    them: '2h', an ISO-8601 time, or a datetime; None: from the first segment, to the last). Its
    window is the slice (clipped to what the segments cover), the samples and ticks those within
    it, the gaps those that overlap it, and the logs named at watch time read for the same window
    (with the server's settings as last read). Bad folder or empty slice: one PlaybookError
    sentence."""
    folder = Path(watch_dir)
    meta = read_meta(folder)
    since_at, until_at = named("since", moment, since), named("until", moment, until)
    if since_at and until_at and until_at <= since_at:
        raise PlaybookError("until must be later than since")
    chosen = _choose_segments(folder, since_at, until_at)
    start = max(since_at, chosen[0].start) if since_at else chosen[0].start
    end = min(until_at, chosen[-1].end) if until_at else chosen[-1].end
    sliced = _Slice([Evidence.load(s.path) for s in chosen], start, end)
    _add_activity(sliced)
    _add_pgbouncer(sliced)
    logs = _watched_logs(sliced.parts)
    if any(logs.values()):
        request = RunRequest.build(log_tz=log_tz or "", app_tz=app_tz or "", prefix=prefix or "")
        _add_logs(sliced, logs, replace(request, since=start, until=end))
    manifest = _slice_manifest(sliced, meta, folder, logs)
    return Evidence(manifest=cast(Manifest, manifest), frames=sliced.frames, snapshots=sliced.snapshots)


def evidence_from(request: RunRequest) -> Evidence:
    """`playbook run --evidence-from DIR`: a watch folder's slice [--since, --until], else the
    evidence folder a run saved (a fleet's page reads those)."""
    assert request.evidence_from is not None
    if is_watch_dir(request.evidence_from):
        return load_slice(
            request.evidence_from,
            request.since,
            request.until,
            log_tz=request.log_tz,
            app_tz=request.app_tz,
            prefix=request.log_prefix,
        )
    if not request.evidence_from.is_dir():
        raise PlaybookError(f"--evidence-from {request.evidence_from} is not a folder")
    return Evidence.load(request.evidence_from)


def _choose_segments(folder: Path, since_at: datetime | None, until_at: datetime | None) -> list[Segment]:
    """The whole segments of `folder` that overlap [since_at, until_at] (None: unbounded), oldest
    first; none: a PlaybookError sentence saying what the folder does hold."""
    found = segments(folder)
    chosen = [
        s
        for s in found
        if (since_at is None or s.end >= since_at) and (until_at is None or s.start <= until_at)
    ]
    if not chosen:
        held = (
            f"it holds {found[0].start:%Y-%m-%d %H:%M:%S} to {found[-1].end:%Y-%m-%d %H:%M:%S} UTC"
            if found
            else "it holds no segment yet"
        )
        asked = f"{since_at:%Y-%m-%d %H:%M:%S}" if since_at else "its start"
        to = f"{until_at:%Y-%m-%d %H:%M:%S}" if until_at else "now"
        raise PlaybookError(f"no segment of {folder} covers {asked} to {to} UTC: {held}")
    return chosen


@dataclass
class _Slice:
    """A slice being assembled: the chosen segments' evidence (`parts`, oldest first), the window
    [start, end] it is clipped to, and what it holds so far, in the order the Evidence lists it."""

    parts: list[Evidence]
    start: datetime
    end: datetime
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    snapshots: dict[str, Any] = field(default_factory=dict)
    collected: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    zones: dict[str, str] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        """The server's settings as last read by the segments ({} when none read them)."""
        return cast(dict[str, Any], self.snapshots.get("settings") or {})


def _add_activity(sliced: _Slice) -> None:
    """The samples and ticks within the window, the settings as last read, and the segments' own
    failures."""
    parts, start, end = sliced.parts, sliced.start, sliced.end
    samples = _concat([p.frame(ACTIVITY_SAMPLES) for p in parts], ACTIVITY_SAMPLES, start, end)
    ticks = _concat([p.frame(ACTIVITY_TICKS) for p in parts], ACTIVITY_TICKS, start, end)
    settings = next((p.snapshots["settings"] for p in reversed(parts) if p.snapshots.get("settings")), None)
    sliced.frames.update({"activity_samples": samples, "activity_ticks": ticks})
    if settings:
        sliced.snapshots["settings"] = settings
    sliced.collected += (["settings"] if settings else []) + ["activity"]
    sliced.failures += [f for p in parts for f in p.manifest.get("failures", [])]


def _add_pgbouncer(sliced: _Slice) -> None:
    """PgBouncer's console, when it was watched too: its frames (every frame not yet sliced)
    clipped to the window alike, its snapshots merged (counts summed, gaps within the window), the
    config as last read."""
    parts, start, end = sliced.parts, sliced.start, sliced.end
    for name in sorted({n for p in parts for n in p.frames} - set(sliced.frames)):
        sliced.frames[name] = _concat([p.frames[name] for p in parts if name in p.frames], None, start, end)
    consoles = [p.snapshots[CONSOLE_SNAPSHOT] for p in parts if p.snapshots.get(CONSOLE_SNAPSHOT)]
    if consoles:
        sliced.snapshots[CONSOLE_SNAPSHOT] = {
            **consoles[-1],
            "ticks": sum(int(c.get("ticks") or 0) for c in consoles),
            "ticks_ok": sum(int(c.get("ticks_ok") or 0) for c in consoles),
            "gaps": _gaps([g for c in consoles for g in c.get("gaps") or []], start, end),
            "unsupported": {k: v for c in consoles for k, v in (c.get("unsupported") or {}).items()},
            "notes": sorted({n for c in consoles for n in c.get("notes") or []}),
        }
        sliced.collected.append("pgbouncer_console")
    config = next(
        (p.snapshots[CONFIG_SNAPSHOT] for p in reversed(parts) if p.snapshots.get(CONFIG_SNAPSHOT)), None
    )
    if config:
        sliced.snapshots[CONFIG_SNAPSHOT] = config


def _spans(part: Evidence) -> list[dict[str, Any]]:
    """Where each watched log stood when the segment opened and closed (its manifest's watch_logs)."""
    return cast(list[dict[str, Any]], cast(dict[str, Any], part.manifest).get("watch_logs", []))


def _watched_logs(parts: list[Evidence]) -> dict[str, list[str]]:
    """The logs the chosen segments recorded, per kind of LOG_KINDS, in the order first recorded
    (a watch restarted with other logs names others)."""
    logs: dict[str, list[str]] = {kind: [] for kind in LOG_KINDS}
    for part in parts:
        for span in _spans(part):
            if span.get("kind") in logs and span.get("path") not in logs[span["kind"]]:
                logs[span["kind"]].append(span["path"])
    return logs


def _add_logs(sliced: _Slice, logs: dict[str, list[str]], request: RunRequest) -> None:
    """The watched logs read for the window (`request`): their frames, snapshots (but the
    settings, already in), collectors, failures and time zones added to the slice."""
    log_part = _read_logs(sliced.parts, logs, sliced.settings, request)
    sliced.frames.update(log_part.frames)
    sliced.snapshots.update({k: v for k, v in log_part.snapshots.items() if k != "settings"})
    sliced.collected += [c for c in log_part.manifest.get("collected", []) if c != "settings"]
    sliced.failures += log_part.manifest.get("failures", [])
    sliced.zones.update(log_part.manifest.get("zones", {}))


def _slice_manifest(
    sliced: _Slice, meta: dict[str, Any], folder: Path, logs: dict[str, list[str]]
) -> dict[str, Any]:
    """The slice's manifest, as a run's would read: its window, the target and interval the watch
    recorded, the gaps overlapping the window, the logs read, and where the slice came from
    (`live`: the watch folder and how many segments)."""
    parts, start, end = sliced.parts, sliced.start, sliced.end
    server = sliced.settings.get("server", {})
    return {
        "playbook_version": __version__,
        "target": parts[-1].manifest.get("target") or meta.get("target"),
        "window": {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "duration_s": round((end - start).total_seconds(), 3),
        },
        "interval_s": meta.get("interval_s"),
        "app": None,
        "logs_since": start.isoformat(),
        "logs_until": end.isoformat(),
        "live": {"connected": True, "watch": str(folder.resolve()), "segments": len(parts)},
        "collected": sliced.collected,
        "privileges": {
            k: server.get(k)
            for k in ("role", "is_superuser", "has_pg_monitor", "has_read_all_stats", "has_read_all_settings")
        },
        "unavailable": _unique([u for p in parts for u in p.manifest.get("unavailable", [])]),
        "gaps": _gaps([g for p in parts for g in p.gaps], start, end),
        "failures": sliced.failures,
        **{kind: [str(p) for p in logs[kind]] for kind in LOG_KINDS},
        "zones": sliced.zones,
    }


def _concat(
    frames: list[pd.DataFrame], schema: FrameSchema | None, start: datetime, end: datetime
) -> pd.DataFrame:
    """The segments' rows of one frame whose tick (`tick_ts`, else `ts`) is within [start, end]."""
    rows = [f for f in frames if not f.empty]
    if not rows:
        return schema.empty() if schema is not None else (frames[0] if frames else pd.DataFrame())
    whole = pd.concat(rows, ignore_index=True)
    column = "tick_ts" if "tick_ts" in whole.columns else "ts"
    if column not in whole.columns:
        return whole
    stamps = pd.to_datetime(whole[column], utc=True)
    keep = (stamps >= pd.Timestamp(start)) & (stamps <= pd.Timestamp(end))
    return whole[keep].reset_index(drop=True)


def _gaps(gaps: list[Gap], start: datetime, end: datetime) -> list[Gap]:
    """The gaps overlapping the slice, one per start: a gap listed open by a segment and closed by
    a later one is the closed one."""
    by_start: dict[str, Gap] = {}
    for gap in gaps:
        seen = by_start.get(gap["start"])
        if seen is None or (seen.get("end") is None and gap.get("end") is not None):
            by_start[gap["start"]] = gap
    kept = []
    for gap in by_start.values():
        opened = datetime.fromisoformat(gap["start"])
        closed = gap.get("end")
        if opened <= end and (closed is None or datetime.fromisoformat(closed) >= start):
            kept.append(gap)
    return sorted(kept, key=lambda g: g["start"])


def _unique(items: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


class _SavedSettings:
    """The settings the watch read, given to the log readers as a live run's would be."""

    name = "settings"
    live = False
    windowed = False

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def contribute(self, request: RunRequest, context: Any) -> Any:
        from playbook.collect.sources import Contribution

        return Contribution(snapshots={"settings": self.settings} if self.settings else {})


def _copy_watched_logs(
    parts: list[Evidence], logs: dict[str, list[str]], into: Path
) -> tuple[dict[str, list[Path]], dict[str, str], list[str]]:
    """Each watched log's byte ranges the chosen segments cover, copied into a folder of its own
    under `into`: the copies per kind, the log each copy stands for (copy path: name as the user
    gave it), and what could not be found, as sentences."""
    copies: dict[str, list[Path]] = {kind: [] for kind in LOG_KINDS}
    originals: dict[str, str] = {}
    missing: list[str] = []
    for kind in LOG_KINDS:
        for index, name in enumerate(logs[kind]):
            spans = [
                span
                for p in parts
                for span in _spans(p)
                if span.get("kind") == kind and span.get("path") == name
            ]
            copy = Path(into, f"{kind}-{index}", Path(name).name)
            copy.parent.mkdir()
            missing += copy_log_slice(Path(name), spans, copy)
            copies[kind].append(copy)
            originals[str(copy)] = name
    return copies, originals, missing


def _read_logs(
    parts: list[Evidence], logs: dict[str, list[str]], settings: dict[str, Any], request: RunRequest
) -> Evidence:
    """The logs named at watch time, their bytes the chosen segments cover copied aside and read
    by the run's own log sources for the slice's window."""
    from playbook.collect.collection import collect_evidence
    from playbook.collect.sources.read_app_log import AppLogSource
    from playbook.collect.sources.read_pgbouncer_log import PgBouncerLogSource
    from playbook.collect.sources.read_server_log import ServerLogSource

    with tempfile.TemporaryDirectory(prefix="pg-session-playbook-watch-logs-") as tmp:
        copies, originals, missing = _copy_watched_logs(parts, logs, Path(tmp))
        request = replace(
            request,
            server_logs=tuple(copies["server_logs"]),
            app_logs=tuple(copies["app_logs"]),
            pgbouncer_logs=tuple(copies["pgbouncer_logs"]),
            progress=False,
        )
        sources = (_SavedSettings(settings), ServerLogSource(), PgBouncerLogSource(), AppLogSource())
        try:
            evidence = collect_evidence(None, request, sources=sources)
        except PlaybookError as exc:
            evidence = Evidence(
                manifest=cast(Manifest, {"failures": [{"what": "watched logs", "error": str(exc)}]})
            )
        # The copies were temporary: name the logs the user gave wherever the readers named a copy.
        text = json.dumps({"m": evidence.manifest, "s": evidence.snapshots}, default=str)
        for copy, name in originals.items():
            text = text.replace(json.dumps(copy)[1:-1], json.dumps(name)[1:-1])
        restored = json.loads(text)
        for frame in evidence.frames.values():
            if "file" in frame.columns:
                frame["file"] = frame["file"].astype(str).map(lambda f: originals.get(f, f))
    manifest = restored["m"]
    manifest["failures"] = list(manifest.get("failures", [])) + [
        {"what": "watched logs", "error": sentence} for sentence in missing
    ]
    return Evidence(manifest=cast(Manifest, manifest), frames=evidence.frames, snapshots=restored["s"])

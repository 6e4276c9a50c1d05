"""Which files, in which order, in which format: what the reader knows before the first block.

Each file is opened once for a sample (256 KB): it must be text, its format is detected by
majority of its first lines, its first timestamp orders a rotated set, and for stderr the
log_line_prefix is guessed among the common ones when not given. Compression is told by the
bytes (playbook.evidence.logfiles), so a renamed rotated file still reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from playbook.collect.serverlog.language import LogLanguage, detect_language, unknown_level_words
from playbook.collect.serverlog.prefix import compile_prefix, detect_prefix
from playbook.errors import PlaybookError
from playbook.evidence.logfiles import LogFile
from playbook.vocabulary.translations import NO_CATALOG

SAMPLE_SIZE = 256 << 10  # what format and prefix detection look at
FORMATS = ("auto", "stderr", "csvlog", "jsonlog")
WHAT = "server log"

_CSV_START_RE = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? [A-Za-z0-9+:\-]+,")


@dataclass
class PlannedFile:
    path: Path
    fmt: str
    first_ts: str  # the first wall-clock time printed, for ordering a rotated set
    size: int
    compression: str
    language: LogLanguage = LogLanguage()


def open_log(path: Path) -> LogFile:
    return LogFile(path, WHAT)


# control bytes a text log does not hold (tab, newline, vertical tab, form feed and CR it may)
_CONTROL = bytes((*range(1, 9), *range(14, 32), 127))
_NOT_CONTROL = bytes(c for c in range(256) if c not in _CONTROL)


def check_text(path: Path, sample: bytes) -> None:
    """Refuse binary data in one sentence (a PostgreSQL log is text, whatever its encoding)."""
    if not sample:
        return
    if b"\x00" in sample:
        raise PlaybookError(f"{WHAT} {path} is binary data, not a PostgreSQL log")
    controls = len(sample.translate(None, _NOT_CONTROL))  # one pass, not one per control byte
    if controls > len(sample) * 0.05:
        raise PlaybookError(f"{WHAT} {path} is binary data, not a PostgreSQL log")


def detect_format(path: Path, sample: bytes) -> str:
    """stderr, csvlog or jsonlog from the first lines of a file, by majority: a stderr file can
    start with a stray csvlog record (PostgreSQL writes one there when log_destination changes)."""
    votes = {"stderr": 0, "csvlog": 0, "jsonlog": 0}
    for line in sample.splitlines()[:50]:
        if not line.strip() or line.startswith(b"\t"):
            continue
        if line.startswith(b"{"):
            try:
                record = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue  # a torn last line of the sample
            if isinstance(record, dict) and ("error_severity" in record or "timestamp" in record):
                votes["jsonlog"] += 1
        elif _CSV_START_RE.match(line):
            votes["csvlog"] += 1
        else:
            votes["stderr"] += 1
    if not any(votes.values()):
        if not sample.strip():
            return "stderr"
        raise PlaybookError(f"could not recognise {path} as a PostgreSQL stderr, csvlog or jsonlog file")
    return max(votes, key=lambda name: votes[name])


def first_timestamp(sample: bytes) -> str:
    match = re.search(rb"(?:^|\n|\"timestamp\":\")(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)", sample)
    if match:
        return match.group(1).decode()
    match = re.search(rb"(?:^|\n)(\d{9,10}(?:\.\d+)?) ", sample)
    if match:
        return datetime.fromtimestamp(float(match.group(1)), timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return ""


def plan_files(
    paths: list[Path], fmt: str, prefix: str | None, language: str | None = None
) -> tuple[list[PlannedFile], str, str | None, list[str]]:
    """The files in time order, their one format, the stderr prefix (given or guessed) and
    warnings about their words. Each file's language and encoding are recognised from its sample
    (`language`, the server's lc_messages when known, is taken as given), and the sample is read
    as English UTF-8 (serverlog.language) before the prefix is guessed and checked. A file whose
    level words no catalog knows is read all the same, with a warning that says so.

    Raises PlaybookError for a missing, unreadable or binary file, mixed formats, or a stderr
    log whose prefix cannot be recognised or matches none of its lines.
    """
    if fmt not in FORMATS:
        raise PlaybookError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not paths:
        raise PlaybookError("no server log given")
    planned: list[tuple[str, int, PlannedFile]] = []
    formats: set[str] = set()
    stderr_samples: list[tuple[Path, bytes]] = []
    warnings: list[str] = []
    for n, path in enumerate(paths):
        with open_log(path) as source:
            sample = source.read(SAMPLE_SIZE)
            size, compression = source.size, source.compression
        check_text(path, sample)
        file_fmt = detect_format(path, sample) if fmt == "auto" else fmt
        written = detect_language(sample, file_fmt, language)
        if not written.plain:
            sample = written.to_english(sample, file_fmt)
        unknown = unknown_level_words(sample, file_fmt)
        if unknown:
            warnings.append(
                f"{WHAT} {path}: level words {NO_CATALOG} "
                f"({', '.join(unknown[:6])}): its events and sessions cannot be read; set the "
                "server's lc_messages to 'C' (or a language PostgreSQL ships) for the next incident"
            )
        if fmt in ("csvlog", "jsonlog") and sample.strip():
            # A forced structured format that the file is not would read every line as nothing:
            # "no line explains a lost session", exit 0, on a log never parsed.
            looks = detect_format(path, sample)
            if looks != fmt:
                raise PlaybookError(
                    f"--format {fmt} but {path} looks like a {looks} log; drop --format (auto detects it)"
                )
        formats.add(file_fmt)
        stamp = first_timestamp(sample)
        planned.append((stamp, n, PlannedFile(path, file_fmt, stamp, size, compression, written)))
        if file_fmt == "stderr" and sample.strip():
            for word in unknown:  # so that the prefix is still recognised, and the read goes on
                sample = sample.replace(f"{word}:  ".encode(), b"LOG:  ")
            stderr_samples.append((path, sample))
            if prefix is None:
                prefix = detect_prefix(sample)
                if prefix is None:
                    raise PlaybookError(
                        f"could not recognise the log_line_prefix of {path}; "
                        "pass the server's one with --prefix"
                    )
    if len(formats) > 1:
        raise PlaybookError(
            f"the logs mix formats ({', '.join(sorted(formats))}); read each format on its own"
        )
    detected = formats.pop() if formats else "stderr"
    if detected == "stderr":
        regex = compile_prefix(prefix or "").regex
        for path, sample in stderr_samples:
            # Whole lines only: the sample may end inside one.
            whole = sample[: sample.rfind(b"\n") + 1] or sample
            if not regex.search(b"\n" + whole):
                raise PlaybookError(
                    f"the log_line_prefix {prefix!r} matches no line of {path}; "
                    "pass the server's log_line_prefix with --prefix"
                )
    planned.sort(key=lambda p: (p[0] == "", p[0], p[1]))
    return [p[2] for p in planned], detected, prefix if detected == "stderr" else None, warnings

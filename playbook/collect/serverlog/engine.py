"""Which implementation reads server logs: chosen once, here, at import.

Two engines read the same bytes into the same rows (tests/test_log_engine.py compares them on
every recorded log and on generated mixes):
- "compiled": the C loops of _scan.c (stderr entries, fixed-place heads, names, session
  lines, prefix programs, line counts, translations, code remapping) and _records.c (csvlog
  and jsonlog records). setup.py builds them (make install).
- "reference": plain Python, numpy and pyarrow (Python's csv module, pyarrow's JSON reader):
  what a machine without a compiler runs, and what the compiled loops are checked against.

The compiled engine is chosen when both extensions import, else the reference (an install
without a C compiler: setup.py then builds none and says so), and each read's summary says so
once (its "warnings"), as does stderr the first time a large log is read (`say_if_slow`).
PLAYBOOK_LOG_ENGINE=reference or =compiled forces one (compiled forced but not built:
PlaybookError). The C loops spell the reader's rules (serverlog.rules) a second time and
publish them as `_scan.RULES`: a rule that differs is an error naming it, raised at import,
never a quiet fall back to the reference.

Every place that differs between the engines reads `ENGINE` (`engine.ENGINE.scan` is None for
the reference); tests switch it with `using("reference")`, the same switch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from playbook.collect.serverlog.rules import RULES
from playbook.errors import PlaybookError

ENV = "PLAYBOOK_LOG_ENGINE"
NAMES = ("compiled", "reference")


@dataclass(frozen=True)
class LogEngine:
    """The implementation the readers use: `scan` and `records` are the compiled modules
    (_scan, _records), both None for the reference."""

    name: str
    scan: ModuleType | None = None
    records: ModuleType | None = None
    note: str | None = None  # why this engine when it was not asked for (the reader says it once)

    @property
    def compiled(self) -> bool:
        return self.scan is not None


REFERENCE = LogEngine("reference")
NOT_BUILT = (
    "the compiled log reader is not built (make install, or a C compiler and a reinstall): the logs "
    "were read with the plain reference, the same results several times slower"
)

# Said on stderr once per process, the first time a read of this many bytes or more starts with
# the reference because the compiled reader is not built (not when the reference is asked for).
# The speeds are bench/log_throughput.py's on the team's 100 MB stderr mix (README, Measured):
# the reference's whole-process MB/s, and the compiled reader's order of magnitude.
LARGE_LOG_BYTES = 50 * 1024 * 1024
REFERENCE_MB_S = 25
COMPILED_MB_S = 100
SLOW_READ = (
    f"reading logs at about {REFERENCE_MB_S} MB/s without the compiled reader; install a C compiler "
    f"and reinstall for about {COMPILED_MB_S} MB/s"
)
_said_slow = False


def rule_mismatch(theirs: Mapping[str, Any], ours: Mapping[str, Any] = RULES) -> str | None:
    """The name of the first rule the compiled loops spell differently (None: they agree)."""
    for name in sorted(set(theirs) | set(ours)):
        if theirs.get(name) != ours.get(name):
            return name
    return None


def compiled_engine(scan: ModuleType, records: ModuleType) -> LogEngine:
    """The compiled engine over these modules, once their rules are checked (PlaybookError
    naming the rule that differs)."""
    differing = rule_mismatch(getattr(scan, "RULES", {}))
    if differing is not None:
        raise PlaybookError(
            f"the compiled log reader (_scan.c) spells the rule {differing!r} differently from "
            "playbook/collect/serverlog/rules.py: rebuild it (make install) or set "
            f"{ENV}=reference"
        )
    return LogEngine("compiled", scan, records)


def _import_compiled() -> tuple[ModuleType, ModuleType] | None:
    try:
        from playbook.collect.serverlog import _records, _scan
    except ImportError:  # a checkout used without installing it
        return None
    return _scan, _records


def select(requested: str | None = None) -> LogEngine:
    """The engine `requested` names ("compiled", "reference"; None or "": the compiled one when
    it is built, else the reference). Bad names and a compiled engine forced but missing or
    spelling other rules raise PlaybookError with one sentence."""
    if requested and requested not in NAMES:
        raise PlaybookError(f"{ENV} must be one of {', '.join(NAMES)}, not {requested!r}")
    if requested == "reference":
        return REFERENCE
    modules = _import_compiled()
    if modules is None:
        if requested == "compiled":
            raise PlaybookError(f"{ENV}=compiled but the compiled log reader is not built (run make install)")
        return LogEngine("reference", note=NOT_BUILT)
    return compiled_engine(*modules)


ENGINE: LogEngine = select(os.environ.get(ENV, "").strip() or None)


def say_if_slow(total_bytes: int) -> bool:
    """Say SLOW_READ on stderr when a read of `total_bytes` starts with the reference because the
    compiled reader is not built and the read is large (LARGE_LOG_BYTES); once per process.
    True when it was said now."""
    global _said_slow
    if _said_slow or ENGINE.note != NOT_BUILT or total_bytes < LARGE_LOG_BYTES:
        return False
    _said_slow = True
    print(f"playbook: {SLOW_READ}", file=sys.stderr, flush=True)
    return True


@contextmanager
def using(name: str) -> Iterator[LogEngine]:
    """Read with the engine `name` inside the block (tests' differential checks), then with
    the one chosen at import again."""
    global ENGINE
    before = ENGINE
    ENGINE = select(name)
    try:
        yield ENGINE
    finally:
        ENGINE = before

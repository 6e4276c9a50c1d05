"""The compiled loops (playbook/collect/serverlog/_scan.c) against the numpy code they replace:
the same rows, row for row, on the recorded logs in tests/data/logs and the bench's pooled mix,
whole and cut at arbitrary bytes (a torn block must be read the same way too)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from playbook.collect.serverlog import stderr
from playbook.collect.serverlog.rows import Rows
from playbook.collect.serverlog.stderr import StderrSpec, parse_block
from playbook.collect.serverlog.structured import parse_csv_block, parse_json_block
from playbook.collect.serverlog.times import Clock

LOGS = Path(__file__).parent / "data" / "logs"
BENCH = Path(__file__).parents[1] / "bench"
PREFIXES = {
    "cet_prefix.log": "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ",
    "pooled.log": "%m [%p] %q%u@%d ",
}
DEFAULT_PREFIX = "%m [%p] %q%u@%d "


def test_the_compiled_loops_are_built_and_follow_the_rules() -> None:
    """An install builds them (setup.py), and their rules are the ones stderr.py spells."""
    assert stderr.COMPILED is not None


def _table(rows: Rows) -> dict[str, list[object]]:
    """Every column of `rows` as plain values per row (codes resolved: dictionaries may differ)."""
    out: dict[str, list[object]] = {
        "kind": rows.kind.tolist(),
        "ts": rows.ts.astype(np.int64).tolist(),
        "pid": rows.pid.tolist(),
        "session_s": [None if np.isnan(s) else s for s in rows.session_s.tolist()],
        "counts": [rows.lines, rows.entries, rows.bytes_read],
    }
    for name, coded in rows.coded.items():
        out[name] = [coded.values[c] for c in coded.codes.tolist()]
    return out


def _both(parse: object, buf: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    assert callable(parse)
    compiled = _table(parse(buf))
    with monkeypatch.context() as patch:
        patch.setattr(stderr, "COMPILED", None)
        reference = _table(parse(buf))
    return compiled, reference


def _pieces(data: bytes) -> list[bytes]:
    """The whole file, and pieces cut at bytes that fall anywhere (mid-line, mid-word)."""
    cuts = sorted({0, len(data), *(len(data) * k // 7 + k for k in range(1, 7))})
    return [data, *(data[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if a < b)]


def _stderr_logs(tmp_path: Path) -> list[tuple[Path, str]]:
    sys.path.insert(0, str(BENCH))
    try:
        import log_throughput
    finally:
        sys.path.pop(0)
    pooled = tmp_path / "pooled.log"
    log_throughput.generate(pooled, 0.3)
    files = [*sorted(LOGS.glob("*.log")), LOGS / "garbage.bin", pooled]
    return [(f, PREFIXES.get(f.name, DEFAULT_PREFIX)) for f in files]


def test_stderr_rows_are_the_same_compiled_or_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checked = 0
    for path, prefix in _stderr_logs(tmp_path):
        # the fast head ('%m [%p') and the regexes alone (a prefix the fast head does not take)
        for spec in (StderrSpec(prefix), StderrSpec("%p %m ")):
            for piece in _pieces(path.read_bytes()):
                compiled, reference = _both(
                    lambda buf, spec=spec: parse_block(buf, spec, Clock(None, "test")), piece, monkeypatch
                )
                assert compiled == reference, (path.name, spec.prefix, len(piece))
                checked += len(compiled["kind"])
    assert checked > 1000  # the pooled mix alone keeps thousands of rows


@pytest.mark.parametrize(
    ("name", "parse"), [("pg18_incident.csv", parse_csv_block), ("pg18_incident.json", parse_json_block)]
)
def test_structured_times_are_the_same_compiled_or_not(
    name: str, parse: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert callable(parse)
    data = (LOGS / name).read_bytes()
    compiled, reference = _both(lambda buf: parse(buf, Clock(None, "test")), data, monkeypatch)
    assert compiled == reference
    assert compiled["kind"]


def test_the_compiled_remap_gives_the_reference_codes() -> None:
    """Vocab.remap (compiled) and Vocab.remap_reference grow the same dictionary and give the
    same codes, block after block: values new, known, repeated within a block (two raw names
    cleaned to one), left unused by every row (after a take), and an empty block."""
    from playbook.collect.serverlog.rows import Coded
    from playbook.collect.serverlog.state import Vocab

    rng = np.random.default_rng(7)
    compiled, reference = Vocab(), Vocab()
    names = [f"10.0.{i // 256}.{i % 256}" for i in range(3000)]
    for block in range(12):
        values = [str(v) for v in rng.choice(names, size=int(rng.integers(1, 400)), replace=False)]
        values[0] = ""  # the known empty name
        if len(values) > 3:
            values[2] = values[1]  # two raw names cleaned to the same text
        size = 0 if block == 5 else int(rng.integers(1, 5000))
        used = rng.integers(0, max(len(values) - 1, 1), size=size).astype(np.int32)  # the last unused
        coded = Coded(used, values)
        got, want = compiled.remap(coded), reference.remap_reference(coded)
        assert got.dtype == want.dtype == np.int32
        assert got.tolist() == want.tolist()
        assert compiled.values == reference.values
        assert compiled.index == reference.index

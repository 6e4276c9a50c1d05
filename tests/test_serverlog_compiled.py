"""The compiled engine (playbook/collect/serverlog/_scan.c, _records.c) against the reference,
selected through the one switch (serverlog.engine.using):
the same rows, row for row, on the recorded logs in tests/data/logs and the bench's pooled mix,
whole and cut at arbitrary bytes (a torn block must be read the same way too)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from playbook.collect.serverlog import engine
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
    """An install builds them (setup.py), and the engine chose them: their rules are the ones
    serverlog.rules spells (a difference would have failed the import)."""
    assert engine.ENGINE.name == "compiled"
    assert engine.ENGINE.scan is not None and engine.ENGINE.records is not None


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
    with engine.using("reference"):
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
    ("name", "parse"),
    [
        ("pg18_incident.csv", parse_csv_block),
        ("pg13_incident.csv", parse_csv_block),
        ("pg12_shape_incident.csv", parse_csv_block),
        ("pg18_incident.json", parse_json_block),
    ],
)
def test_structured_rows_are_the_same_compiled_or_not(
    name: str, parse: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_records.c against Python's csv module and pyarrow's JSON reader, on recorded logs of
    three csvlog shapes (26, 24 and 23 fields) and a jsonlog."""
    assert callable(parse)
    data = (LOGS / name).read_bytes()
    compiled, reference = _both(lambda buf: parse(buf, Clock(None, "test")), data, monkeypatch)
    assert compiled == reference
    assert compiled["kind"] and compiled["counts"][1] > 0


_CSV_HEAD = (
    '2025-03-01 10:00:0{s}.000 UTC,"{user}","shop",{pid},"10.0.0.1:5000",65e1.b,1,"idle",'
    "2025-03-01 10:00 UTC,3/4,0,"
)
_CSV_TAIL = ',,,,,,,,,"{app}"'


def _csv_record(s: int, pid: int, level: str, state: str, message: str, user: str = "app", app: str = "api",
                extra: str = ',"client backend",,0') -> str:  # fmt: skip
    quoted = '"' + message.replace('"', '""') + '"'
    head = _CSV_HEAD.format(s=s, user=user.replace('"', '""'), pid=pid)
    return head + f"{level},{state},{quoted}" + _CSV_TAIL.format(app=app) + extra


def test_csvlog_edge_cases_read_the_same_compiled_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quoted commas, newlines and quotes, CRLF ends, empty lines, 23 to 27 fields, a short line
    that is no record, harmless LOG lines, a level not read, names with quotes."""
    cancel = 'canceling statement due to statement timeout\nand, "quoted"'
    disconnection = "disconnection: session time: 0:00:01.5 user=app database=shop host=10.0.0.1 port=5000"
    records = [
        _csv_record(0, 11, "FATAL", "57P01", "terminating connection due to administrator command"),
        _csv_record(1, 12, "ERROR", "57014", cancel, extra=""),  # 23 fields
        _csv_record(
            2, 13, "LOG", "00000", "duration: 1.0 ms  statement: SELECT 1", extra=',"client backend"'
        ),
        _csv_record(3, 14, "LOG", "00000", "starting PostgreSQL 13.23", extra=',"postmaster",,0,"future"'),
        _csv_record(4, 15, "DEBUG1", "00000", "not a level that is read"),
        _csv_record(
            5, 16, "FATAL", "53300", 'too many connections for role "limited"', user='a "quoted" role'
        ),
        "2025-03-01,short,line",
        "",
        _csv_record(6, 17, "LOG", "00000", disconnection),
        _csv_record(7, 18, "LOG", "00000", '"duration" quoted head, kept for Python to judge'),
    ]
    text = "\n".join(records) + "\n"
    for buf in (text.encode(), text.replace("\n", "\r\n").encode()):
        compiled, reference = _both(lambda b: parse_csv_block(b, Clock(None, "test")), buf, monkeypatch)
        assert compiled == reference
        assert compiled["counts"][1] == 8  # every line of 23 fields or more, the empty and short ones not
        assert compiled["event"] == [
            "admin_terminate", "statement_timeout", "server_start", "role_conn_limit", "disconnection"
        ]  # fmt: skip


def test_jsonlog_edge_cases_read_the_same_compiled_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Escapes (quotes, newlines, \\u with a surrogate pair), a nested object, null, a number
    pid, a key given twice, keys in another order, a torn line and a foreign line."""
    import json

    def record(s: int, pid: int, level: str, state: str, message: str, **more: object) -> str:
        fields = {"timestamp": f"2025-03-01 10:00:0{s}.000 UTC", "user": "app", "dbname": "shop", "pid": pid,
                  "remote_host": "10.0.0.1", "application_name": "api", "error_severity": level,
                  "state_code": state, "message": message, **more}  # fmt: skip
        return json.dumps(fields, ensure_ascii=s % 2 == 1)  # odd s: escapes, a surrogate pair among them

    lines = [
        record(0, 11, "FATAL", "57P01", "terminating connection due to administrator command"),
        record(
            1, 12, "ERROR", "57014", 'canceling statement "x"\nline two \U0001f600 caf\u00e9', detail=None
        ),
        record(
            2, 13, "LOG", "00000", "duration: 1.0 ms  statement: SELECT '\\'", extra={"a": [1, {"b": "}"}]}
        ),
        record(4, 15, "FATAL", "53300", 'too many connections for role "r\u00f4le"', user="r\u00f4le"),
        '{"error_severity": "FATAL", "message": "terminating connection due to administrator command", '
        '"pid": 21, "timestamp": "2025-03-01 10:00:05.000 UTC", "pid": 22}',
        '{"timestamp": "2025-03-01 10:00:06.000 UTC", "error_severity": "FATAL", "message": "torn',
        "not json at all",
        "",
    ]
    buf = ("\n".join(lines) + "\n").encode()
    compiled, reference = _both(lambda b: parse_json_block(b, Clock(None, "test")), buf, monkeypatch)
    assert compiled == reference
    assert compiled["counts"][1] == 5
    assert compiled["pid"] == [11, 12, 15, 22]
    assert compiled["message"][1] == 'canceling statement "x"\nline two \U0001f600 café'


def test_jsonlog_lines_json_refuses_are_refused_compiled_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """What json.loads and pyarrow refuse is no record for _records.c either (a raw tab in a
    string, a bare word, a number with a leading zero), and what they read unescaped it reads
    unescaped (a key, a level); a lone surrogate escape reads as U+FFFD on both paths."""
    head = '{"timestamp": "2025-03-01 10:00:00.000 UTC", "error_severity": "FATAL", "message": '
    lines = [
        head + '"terminating connection due to administrator command", "pid": 11}',
        head + '"terminating\tconnection", "pid": 12}',  # a raw tab in a string: refused
        head + '"terminating connection due to administrator command", "pid": abc}',
        head + '"terminating connection due to administrator command", "pid": 011}',
        head + '"terminating connection due to administrator command", "us\\u0065r": "app", "pid": 13}',
        '{"timestamp": "2025-03-01 10:00:00.000 UTC", "error_severity": "F\\u0041TAL", '
        '"message": "terminating connection due to administrator command", "pid": 14}',
        head + '"terminating connection due to administrator command", "user": "x\\ud800y", "pid": 15}',
    ]
    buf = ("\n".join(lines) + "\n").encode()
    assert b"\t" in buf and b"\\u0065" in buf  # the raw tab and the escapes are really there
    compiled, reference = _both(lambda b: parse_json_block(b, Clock(None, "test")), buf, monkeypatch)
    assert compiled == reference
    assert compiled["pid"] == [11, 13, 14, 15]
    assert compiled["user"] == ["", "app", "", "x\ufffdy"]


def test_csvlog_values_read_as_pythons_csv_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes after a closing quote belong to the value, a lone CR ends a record as CRLF and LF
    do, a field longer than the csv module's default limit (128 KB) is read, and a pid too long
    to be one is 0 instead of ending the read."""
    detail = "x" * 140_000
    records = [
        _csv_record(0, 11, "FATAL", "57P01", "terminating connection due to administrator command"),
        _csv_record(1, 12, "FATAL", "57P01", "terminating connection due to administrator command").replace(
            '"app"', '"app"x', 1
        ),
        _csv_record(
            2, 99999999999999999999, "FATAL", "57P01", "terminating connection due to administrator command"
        ),
        _csv_record(3, 14, "ERROR", "57014", "canceling statement due to statement timeout").replace(
            ",,,,,,,,,", f',"{detail}",,,,,,,,', 1
        ),
    ]
    buf = ("\n".join(records[:2]) + "\r" + "\r\n".join(records[2:]) + "\r").encode()
    compiled, reference = _both(lambda b: parse_csv_block(b, Clock(None, "test")), buf, monkeypatch)
    assert compiled == reference
    assert compiled["counts"][1] == 4
    assert compiled["user"][:2] == ["app", "appx"]
    assert compiled["pid"] == [11, 12, 0, 14]
    assert compiled["detail"][3] == detail


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


def _prefix_line(prefix: str, rng: np.random.Generator) -> bytes:
    """One entry of `prefix` with odd names: separators of other fields, '@', spaces, brackets,
    non-ASCII, empty, missing levels and torn heads now and then."""
    odd = ["app", "", "a@b", "a b", "x,y", "[unknown]", "café", "r]o", "d:b", "-", "1.2", "ünï code"]
    values = {
        "%m": "2025-03-01 10:00:00.123 CET",
        "%t": "2025-03-01 10:00:00 UTC",
        "%p": str(rng.integers(1, 99999)),
        "%l": str(rng.integers(0, 99)),
    }
    line = prefix
    for esc in ("%u", "%d", "%a", "%h", "%r"):
        line = line.replace(esc, str(rng.choice(odd)))
    line = line.replace("%q", "")
    for esc, value in values.items():
        line = line.replace(esc, value)
    level = str(rng.choice(["LOG:  ", "FATAL:  ", "ERROR:  ", "LOG: ", "DEBUG1:  ", "log:  "]))
    text = line + level + "terminating connection due to administrator command"
    if rng.random() < 0.05:
        text = text[: int(rng.integers(0, len(text)))]  # a torn entry
    return text.encode()


def test_field_programs_read_what_the_regexes_read() -> None:
    """prefix_fields (_scan.c) against the RE2 passes it stands in for, entry by entry, on
    every common prefix a program can read: the same entries matched, the same fields."""
    from playbook.collect.serverlog.prefix import COMMON_PREFIXES, fast_prefix, field_program
    from playbook.collect.serverlog.stderr import _named

    compiled = engine.ENGINE.scan
    assert compiled is not None
    rng = np.random.default_rng(11)
    tried = 0
    for prefix in COMMON_PREFIXES:
        program = field_program(prefix, frozenset({"ts", "pid"}))
        if program is None:
            continue
        passes = fast_prefix(prefix, frozenset({"ts", "pid"})).passes
        lines = [_prefix_line(prefix, rng) for _ in range(400)]
        buf = b"\n".join(lines) + b"\n"
        ends = np.cumsum([len(line) + 1 for line in lines]) - 1
        starts = ends - np.array([len(line) for line in lines])
        raw_ok, pairs = compiled.prefix_fields(buf, starts, ends, program.ops, len(program.names))
        ok = np.frombuffer(raw_ok, dtype=np.uint8).astype(bool)
        entries = pa.array(lines, pa.binary())
        want_ok = np.ones(len(lines), dtype=bool)
        want: dict[str, list[object]] = {}
        for pattern, group in passes:
            found = pc.extract_regex(entries, _named(pattern))
            want_ok &= np.asarray(found.is_valid())
            for j, name in enumerate(group):
                want[name] = found.field(j).to_pylist()
        assert ok.tolist() == want_ok.tolist(), prefix
        for name, (offsets, data) in zip(program.names, pairs, strict=True):
            bounds = np.frombuffer(offsets, dtype=np.int32)
            got = [bytes(data[bounds[i] : bounds[i + 1]]) for i in range(len(lines))]
            assert [g for g, o in zip(got, ok, strict=True) if o] == [
                w for w, o in zip(want[name], want_ok, strict=True) if o
            ], (prefix, name)
        assert 0 < ok.sum() < len(lines)  # both kinds of entry were tried
        tried += 1
    assert tried >= 8
    # RE2 reads bytes: after a multibyte literal the regexes, not a program, read the names
    assert field_program("%m [%p] %u\u2192%d ", frozenset({"ts", "pid"})) is None


def test_csvlog_blocks_end_at_the_same_place_compiled_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """_records.c's csv_cut and the quote counting of serverlog._cut: after the last newline
    outside a quoted field, on pieces of recorded csvlogs cut anywhere (inside quoted newlines
    too) and on the edge cases (no newline, only quoted ones, an empty block)."""
    from playbook.collect.serverlog import _cut

    data = b"".join((LOGS / name).read_bytes() for name in ("pg18_incident.csv", "pg13_incident.csv"))
    rng = np.random.default_rng(5)
    starts, sizes = rng.integers(0, len(data), 300), rng.integers(0, 3000, 300)
    pieces = [data[a : a + int(n)] for a, n in zip(starts, sizes, strict=True)]
    pieces += [b"", b"no newline", b'"a\nb"', b'x,"a\nb"\n', b'"\n"\n"\n', b"\n", *_pieces(data)]
    compiled = [_cut("csvlog", piece) for piece in pieces]
    with engine.using("reference"):
        reference = [_cut("csvlog", piece) for piece in pieces]
    assert compiled == reference
    assert len(set(compiled)) > 50


def test_a_prefix_with_a_backslash_is_read_by_the_regexes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A literal backslash before a field ('\\%u', escaped as two for RE2) used to leave the
    field's group unnamed, and pyarrow refused the whole read."""
    spec = StderrSpec("%m [%p] \\%u@%d ")
    buf = (
        b"2025-03-01 10:00:00.000 UTC [11] \\app@shop FATAL:  terminating connection due to "
        b"administrator command\n"
        b"2025-03-01 10:00:01.000 UTC [12345678901] \\app@shop FATAL:  terminating connection due to "
        b"administrator command\n"  # a pid too long for the compiled head: the regexes read it
    )
    compiled, reference = _both(lambda b: parse_block(b, spec, Clock(None, "test")), buf, monkeypatch)
    assert compiled == reference
    assert compiled["user"] == ["app", "app"] and compiled["pid"] == [11, 12345678901]

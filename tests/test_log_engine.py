"""One log engine, chosen once (playbook/collect/serverlog/engine.py): the compiled engine and
the reference read every recorded server log and generated mixes (stderr, csvlog, jsonlog,
translated) into the same events, sessions and summaries; the switch is one environment
variable, and compiled loops that spell other rules fail the import with a sentence naming
the rule."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from playbook.collect.serverlog import engine, read_server_logs
from playbook.collect.serverlog.rules import HARMLESS_LOG, RULES
from playbook.errors import PlaybookError

LOGS = Path(__file__).parent / "data" / "logs"
BENCH = Path(__file__).parents[1] / "bench"
REPO = Path(__file__).parents[1]


def _read(paths: list[Path], **options: Any) -> dict[str, Any]:
    """What a read gives, as plain values: the summary, both frames, or the one-sentence error."""
    try:
        evidence = read_server_logs(paths, **options)
    except PlaybookError as exc:
        return {"error": str(exc)}
    return {
        "summary": evidence.summary,
        "events": evidence.events,
        "sessions": evidence.sessions,
        "counts": (evidence.bytes_read, evidence.lines, evidence.format, evidence.prefix),
    }


def _same_with_both_engines(paths: list[Path], **options: Any) -> dict[str, Any]:
    """Read with the compiled engine and with the reference; fail on any difference."""
    assert engine.ENGINE.name == "compiled", "the compiled engine is not built (make install)"
    compiled = _read(paths, **options)
    with engine.using("reference") as reference_engine:
        assert reference_engine.scan is None and reference_engine.records is None
        reference = _read(paths, **options)
    assert engine.ENGINE.name == "compiled"  # the switch is back to the engine chosen at import
    assert compiled.keys() == reference.keys(), (paths, compiled.get("error"), reference.get("error"))
    if "error" in compiled:
        assert compiled == reference
        return compiled
    assert compiled["summary"] == reference["summary"], paths
    assert compiled["counts"] == reference["counts"], paths
    for frame in ("events", "sessions"):
        pd.testing.assert_frame_equal(compiled[frame], reference[frame], obj=f"{frame} of {paths}")
    return compiled


RECORDED = sorted(p.name for p in LOGS.iterdir() if p.suffix in {".log", ".csv", ".json", ".bin"})


@pytest.mark.parametrize("name", RECORDED)
def test_every_recorded_log_reads_the_same_with_either_engine(name: str) -> None:
    got = _same_with_both_engines([LOGS / name])
    if name != "garbage.bin":
        assert "error" not in got, got.get("error")
        assert got["counts"][1] > 0  # lines read


def test_a_rotated_set_and_a_window_read_the_same_with_either_engine() -> None:
    paths = [LOGS / "pg18_incident.log", LOGS / "rotated.log"]
    _same_with_both_engines(paths)
    whole = _same_with_both_engines([LOGS / "pg18_incident.log"])
    times = whole["events"]["ts"].dropna().sort_values()
    middle = times.iloc[len(times) // 2].tz_convert(None).to_pydatetime()
    _same_with_both_engines([LOGS / "pg18_incident.log"], since=middle)
    _same_with_both_engines([LOGS / "pg18_incident.log"], until=middle)


@pytest.fixture(scope="module")
def log_throughput() -> types.ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        import log_throughput as module
    finally:
        sys.path.pop(0)
    return module


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory, log_throughput: types.ModuleType) -> dict[str, Path]:
    """The bench's pooled mix (1 MB) in stderr, csvlog and jsonlog, and as Russian, Chinese and
    German servers write it."""
    folder = tmp_path_factory.mktemp("engine-mix")
    stderr_log = folder / "mix.log"
    log_throughput.generate(stderr_log, 1.0)
    out = {"stderr": stderr_log, "csvlog": folder / "mix.csv", "jsonlog": folder / "mix.json"}
    log_throughput.to_csvlog(stderr_log, out["csvlog"])
    log_throughput.to_jsonlog(stderr_log, out["jsonlog"])
    for code in ("ru", "zh_CN", "de"):
        out[code] = folder / f"mix-{code}.log"
        log_throughput.to_language(stderr_log, out[code], code)
    return out


@pytest.mark.parametrize("form", ["stderr", "csvlog", "jsonlog", "ru", "zh_CN", "de"])
def test_the_generated_mix_reads_the_same_with_either_engine(mix: dict[str, Path], form: str) -> None:
    got = _same_with_both_engines([mix[form]])
    assert got["summary"]["sessions"]["count"] > 1000
    assert len(got["events"]) > 1000


def test_parallel_blocks_read_the_same_with_either_engine(mix: dict[str, Path]) -> None:
    """--jobs: worker processes read with the engine of the process that forked them."""
    _same_with_both_engines([mix["stderr"]], jobs=2)


# -- the switch ---------------------------------------------------------------------------------


def _python(code: str, env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != engine.ENV}
    if env_value is not None:
        env[engine.ENV] = env_value
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )


_WHICH = "from playbook.collect.serverlog import engine; print(engine.ENGINE.name)"
# compiled loops that spell other rules: a stand-in _scan in place of the built one
_OTHER_RULES = (
    "import sys, types; fake = types.ModuleType('playbook.collect.serverlog._scan'); "
    "fake.RULES = {'levels': (b'LOG',)}; sys.modules[fake.__name__] = fake; " + _WHICH
)
_NOT_BUILT = "import sys; sys.modules['playbook.collect.serverlog._scan'] = None; " + _WHICH


def test_the_environment_variable_chooses_the_engine_once() -> None:
    assert _python(_WHICH, None).stdout.split() == ["compiled"]
    assert _python(_WHICH, "reference").stdout.split() == ["reference"]
    assert _python(_WHICH, "compiled").stdout.split() == ["compiled"]
    bad = _python(_WHICH, "fastest")
    assert bad.returncode != 0 and "PLAYBOOK_LOG_ENGINE must be one of compiled, reference" in bad.stderr


def test_compiled_loops_with_other_rules_fail_the_import_naming_the_rule() -> None:
    other = _python(_OTHER_RULES, None)
    assert other.returncode != 0
    assert "spells the rule 'harmless_except' differently" in other.stderr
    # forcing the reference is the way round it (no silent fall back, but a stated one)
    assert _python(_OTHER_RULES, "reference").stdout.split() == ["reference"]


def test_a_missing_build_reads_with_the_reference_unless_compiled_is_forced() -> None:
    """Without the build the reference reads, and the summary says so once."""
    assert _python(_NOT_BUILT, None).stdout.split() == ["reference"]
    read = (
        "from playbook.collect.serverlog import read_server_logs; "
        f"print(read_server_logs([{str(LOGS / 'pg18_incident.log')!r}], frames=False).summary['warnings'])"
    )
    said = _python(_NOT_BUILT.replace(_WHICH, read), None)
    assert said.stdout.count("the compiled log reader is not built (make install") == 1, said.stderr
    forced = _python(_NOT_BUILT, "compiled")
    assert forced.returncode != 0 and "the compiled log reader is not built" in forced.stderr


# The extension absent as on a machine without a compiler: neither module can be found at all
# (a finder ahead of every other raises what a missing file raises).
_ABSENT = (
    "import sys, importlib.abc\n"
    "class Absent(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name in ('playbook.collect.serverlog._scan', 'playbook.collect.serverlog._records'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Absent())\n"
)


def test_every_recorded_log_reads_the_same_with_the_extension_absent(tmp_path: Path) -> None:
    """A process that cannot import _scan nor _records (an install without a compiler) falls back
    to the reference by itself and reads every recorded log into what the compiled engine reads;
    its summaries differ only by the one warning that says so."""
    out = tmp_path / "absent.pkl"
    code = _ABSENT + (
        "import pickle, sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_log_engine import LOGS, RECORDED, _read\n"
        "from playbook.collect.serverlog import engine\n"
        "assert engine.ENGINE.name == 'reference' and engine.ENGINE.note == engine.NOT_BUILT\n"
        f"Path({str(out)!r}).write_bytes(pickle.dumps({{n: _read([LOGS / n]) for n in RECORDED}}))\n"
    )
    result = _python(code, None)
    assert result.returncode == 0, result.stderr
    absent = pd.read_pickle(out)
    assert sorted(absent) == RECORDED
    for name in RECORDED:
        compiled = _read([LOGS / name])
        if "error" in compiled:
            assert absent[name] == compiled, name
            continue
        warnings = absent[name]["summary"]["warnings"]
        assert warnings.count(engine.NOT_BUILT) == 1, (name, warnings)
        warnings.remove(engine.NOT_BUILT)
        assert absent[name]["summary"] == compiled["summary"], name
        assert absent[name]["counts"] == compiled["counts"], name
        for frame in ("events", "sessions"):
            pd.testing.assert_frame_equal(absent[name][frame], compiled[frame], obj=f"{frame} of {name}")


def test_a_large_log_without_the_extension_says_its_speed_once(tmp_path: Path) -> None:
    """On stderr, the first read of a large log (engine.LARGE_LOG_BYTES, lowered here to the
    recorded log's size) without the compiled reader; a second read says nothing more, and a
    reference asked for by name says nothing (its user knows)."""
    reads = (
        "from playbook.collect.serverlog import engine, read_server_logs\n"
        f"log = {str(LOGS / 'pg18_incident.log')!r}\n"
        "engine.LARGE_LOG_BYTES = 1000\n"
        "for _ in range(2): read_server_logs([log], frames=False)\n"
        "engine.LARGE_LOG_BYTES = 10 ** 12\n"
        "print(engine.say_if_slow(10 ** 11))\n"
    )
    said = _python(_ABSENT + reads, None)
    assert said.returncode == 0, said.stderr
    assert said.stderr.splitlines() == [f"playbook: {engine.SLOW_READ}"]
    assert said.stdout.split() == ["False"]  # below the threshold: nothing
    assert "reading logs at about 25 MB/s without the compiled reader; install a C compiler" in said.stderr
    for env_value, prelude in (("reference", _ABSENT), (None, "")):  # asked for; compiled
        quiet = _python(prelude + reads, env_value)
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_the_rule_that_differs_is_named() -> None:
    assert engine.rule_mismatch(dict(RULES)) is None
    changed = dict(RULES, harmless_log=HARMLESS_LOG[:-1])
    assert engine.rule_mismatch(changed) == "harmless_log"
    fake = types.ModuleType("_scan")
    fake.RULES = changed  # type: ignore[attr-defined]
    with pytest.raises(PlaybookError, match="'harmless_log'"):
        engine.compiled_engine(fake, fake)


def _mangled(rng: Any, text: bytes, alphabet: bytes) -> bytes:
    """`text` with up to two bytes replaced, inserted or deleted (from `alphabet`)."""
    out = bytearray(text)
    for _ in range(rng.randint(0, 2)):
        at = rng.randrange(len(out))
        roll = rng.random()
        if roll < 0.5:
            out[at] = rng.choice(alphabet)
        elif roll < 0.75:
            out.insert(at, rng.choice(alphabet))
        else:
            del out[at]
    return bytes(out)


def _resolved(result: tuple[Any, ...]) -> list[tuple[int, bytes, int] | None]:
    """(ms, zone name, pid) of the rows read (ok), None for the others."""
    ok, ms, codes, names, pid = result
    return [
        (int(m), names[c], int(p)) if good else None
        for good, m, c, p in zip(ok.tolist(), ms.tolist(), codes.tolist(), pid.tolist(), strict=True)
    ]


def test_fixed_place_heads_read_the_same_with_either_engine() -> None:
    """stamps.read_fixed_heads: the C loop against the one-regex reference on heads mangled
    byte by byte (digits, separators, zone names of 0 to 9 bytes, NULs, long pids, Feb 31,
    year 0), in the stderr form and the csvlog/jsonlog stamp form."""
    import random

    import numpy as np

    from playbook.collect.serverlog.stamps import FixedHead, read_fixed_heads

    rng = random.Random(3)
    good = [
        b"2025-03-01 10:00:00.123 CET [4242] app@shop LOG:  x",
        b"2024-02-31 23:59:59.999 UTC [1] LOG:  x",
        b"0000-01-01 00:00:00.000 AB\0 [123456789] LOG:  x",
        b"2025-12-31 01:02:03.004 Europe/B [77] LOG:  x",
    ]
    alphabet = b"0123456789 -:.[]A\0\xff"
    lines = [_mangled(rng, rng.choice(good), alphabet) for _ in range(3000)]
    buf = b"\n".join(lines) + b"\n"
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = np.cumsum([len(line) + 1 for line in lines]) - 1
    starts = ends - np.array([len(line) for line in lines])
    limits = np.array([s + max(line.find(b":  "), 0) for s, line in zip(starts, lines, strict=True)])
    stamp_ends = np.array(
        [s + min(len(line), 24 + rng.randint(0, 9)) for s, line in zip(starts, lines, strict=True)]
    )
    for head in (FixedHead(True, b" ["), FixedHead(False, b" [")):
        for zone_ends in (None, stamp_ends):
            compiled = _resolved(read_fixed_heads(arr, starts, limits, head, zone_ends))
            with engine.using("reference"):
                reference = _resolved(read_fixed_heads(arr, starts, limits, head, zone_ends))
            assert compiled == reference, (head, zone_ends is None)
            if head.millis:
                assert 300 < sum(r is not None for r in compiled) < len(lines)


def test_session_lines_read_the_same_with_either_engine() -> None:
    """serverlog.messages: the C token splitter against the plain token-by-token reference on
    session lines mangled byte by byte (extra or missing spaces, odd clocks, names with
    spaces, continuation lines), the lenient regexes reading the odd ones in both."""
    import random

    import numpy as np

    from playbook.collect.serverlog.messages import Messages

    rng = random.Random(5)
    shapes = {
        "disconnected": b"disconnection: session time: 1:02:03.456 user=app database=shop host=10.0.0.1 "
        b"port=5000",
        "received": b"connection received: host=10.0.0.1 port=5000",
    }
    alphabet = b" :.=0123456789\n\tab"
    for method, good in shapes.items():
        texts = [_mangled(rng, good, alphabet) for _ in range(2000)]
        buf = b"\n".join(texts) + b"\n"
        ends = np.cumsum([len(t) + 1 for t in texts]) - 1
        starts = ends - np.array([len(t) for t in texts])
        rows = np.arange(len(texts))

        compiled = _session_fields(Messages(buf, starts, ends), method, rows)
        with engine.using("reference"):
            reference = _session_fields(Messages(buf, starts, ends), method, rows)
        assert compiled == reference, method


def _session_fields(messages: Any, method: str, rows: Any) -> list[object]:
    """What Messages.received or .disconnected read, as plain values per row."""
    got = getattr(messages, method)(rows)
    if method == "received":
        return [got.values[c] for c in got.codes.tolist()]
    (h, m, s), names = got
    columns: list[object] = [[round(float(v), 6) if v == v else None for v in c.tolist()] for c in (h, m, s)]
    columns += [[n.values[c] for c in n.codes.tolist()] for n in names]
    return columns

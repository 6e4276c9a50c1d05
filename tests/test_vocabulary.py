"""One vocabulary: every finding id, PgBouncer reason and category used anywhere is one it defines.

The scans read the package's own text (source, notebooks, templates) and README.md, so a new id or
reason key typed anywhere without its vocabulary entry fails here. No server is needed.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from playbook.collect import applog, log_events
from playbook.collect.pgbouncer_log import LINE
from playbook.diagnose import consequences
from playbook.vocabulary import categories, pgbouncer_reasons
from playbook.vocabulary.findings import FINDINGS, ID_PATTERN, RETIRED, SPECS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "playbook"
README = (ROOT / "README.md").read_text(encoding="utf-8")
TEXT_SUFFIXES = {".py", ".ipynb", ".json", ".html", ".j2", ".md", ".txt", ".css", ".js"}
# Folders that are not the playbook's own text (a lab app's installed npm packages).
SKIPPED = {"__pycache__", "node_modules"}
# "TMO-001/003" in README's table names two ids.
ID_WITH_SIBLINGS = re.compile(ID_PATTERN.removesuffix(r"\b") + r"(?:/\d{3})*\b")


def _package_texts() -> dict[Path, str]:
    return {
        path: path.read_text(encoding="utf-8")
        for path in sorted(PACKAGE.rglob("*"))
        if path.suffix in TEXT_SUFFIXES and not SKIPPED & set(path.parts) and path.is_file()
    }


def _ids_in(text: str) -> set[str]:
    found = set()
    for match in ID_WITH_SIBLINGS.finditer(text):
        prefix, _, numbers = match.group(0).partition("-")
        found |= {f"{prefix}-{n}" for n in numbers.split("/")}
    return found


def _python_modules() -> dict[Path, ast.Module]:
    return {
        path: ast.parse(text, filename=str(path))
        for path, text in _package_texts().items()
        if path.suffix == ".py"
    }


# -- (a) finding ids ------------------------------------------------------------------------------------


def test_every_finding_id_in_the_package_is_defined() -> None:
    used: dict[str, list[str]] = {}
    for path, text in _package_texts().items():
        for fid in _ids_in(text):
            used.setdefault(fid, []).append(str(path.relative_to(ROOT)))
    assert used, "the scan found no finding id at all: the pattern is broken"
    defining = [str((PACKAGE / "vocabulary" / "findings.py").relative_to(ROOT))]
    undefined = {
        fid: where
        for fid, where in used.items()
        if fid not in FINDINGS and not (fid in RETIRED and where == defining)  # RETIRED names it
    }
    assert not undefined, f"finding ids used but not defined in playbook/vocabulary/findings.py: {undefined}"


def test_every_finding_id_in_the_readme_is_defined_or_retired_and_every_finding_is_documented() -> None:
    in_readme = _ids_in(README)
    assert not in_readme - set(FINDINGS) - set(RETIRED), "README names ids the vocabulary does not define"
    assert not set(FINDINGS) - in_readme, "findings the README's tables do not document"
    for old, new in RETIRED.items():
        assert old not in FINDINGS and new in FINDINGS
        assert re.search(rf"{old} is retired.*?{new}", README, re.DOTALL), (
            f"README does not say where {old} went"
        )


def test_every_spec_has_a_category_its_id_matches_and_its_module_emits_it() -> None:
    assert len(FINDINGS) == len(SPECS), "a finding id is defined twice"
    for spec in SPECS:
        assert spec.category in categories.CATEGORIES, spec.id
        prefix = spec.id.split("-", 1)[0]
        assert prefix in (categories.ID_PREFIX[spec.category], categories.POOLER_ID_PREFIX), spec.id
        assert re.fullmatch(ID_PATTERN, spec.id), spec.id
        assert spec.title, spec.id
        module = PACKAGE / "diagnose" / f"{spec.module}.py"
        assert f'"{spec.id}"' in module.read_text(encoding="utf-8"), (
            f"{spec.id} is not emitted by {module.name}"
        )


def test_the_readme_tables_give_each_pooler_finding_its_category() -> None:
    rows = re.findall(r"^\| (BNC-\d{3}) \| (\w+) \|", README, re.MULTILINE)
    assert rows, "README's PgBouncer findings table was not found"
    for fid, category in rows:
        assert FINDINGS[fid].category == category, fid


def test_every_finding_the_diagnosis_builds_uses_a_defined_id() -> None:
    # The ids as the code writes them: Finding(id="…"), and the first argument of pooler._finding.
    for path, tree in _python_modules().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            args = [kw.value for kw in node.keywords if kw.arg == "id"]
            if name in ("_finding", "_timeout_finding"):
                args += node.args[:2]
            elif name != "Finding":
                continue
            for arg in args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and "-" in arg.value:
                    assert arg.value in FINDINGS, f"{path.name}:{node.lineno} builds {arg.value!r}"


# -- what each finding explains is a word the readers define ------------------------------------------


def test_what_each_finding_explains_is_defined_by_the_readers() -> None:
    app_kinds = set(applog.KIND_IDS)
    server_kinds = {
        k.id for k in (*log_events.SESSION_EVENTS, *log_events.EVENTS, *log_events.GENERIC_EVENTS)
    }
    for spec in SPECS:
        assert spec.app_kinds <= app_kinds, (spec.id, spec.app_kinds - app_kinds)
        assert set(spec.server_events) <= server_kinds, (spec.id, set(spec.server_events) - server_kinds)
        assert set(spec.reasons) <= set(pgbouncer_reasons.REASON_KEYS), spec.id
        assert set(spec.pooler_events) <= {e.key for e in pgbouncer_reasons.EVENTS}, spec.id
        assert not spec.reasons or spec.pooler, f"{spec.id} reads PgBouncer reasons but is not a BNC finding"
    # Reasons with a category that no pooler finding reads yet: they reach the report only through
    # the application's errors (NET-006). Listed so that a new one is a decision, not an accident.
    read = {key for spec in SPECS for key in spec.reasons}
    incidents = {r.key for r in pgbouncer_reasons.REASONS if r.category is not None}
    assert incidents - read == {
        "cancel_wait_timeout",
        "client_auth_failed",
        "client_protocol_error",
        "no_such_database",
        "pooler_internal",
        "unsupported_startup_parameter",
    }


# -- (b) PgBouncer's reasons ---------------------------------------------------------------------------


def _str_constants(node: ast.AST) -> list[str]:
    """The string constants of an argument: "x", ("x", "y"), *("x", …) spelled out."""
    if isinstance(node, ast.Starred):
        node = node.value
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for element in node.elts for s in _str_constants(element)]
    return []


def _column_compared(node: ast.Compare) -> str | None:
    """'reason_key' for `x["reason_key"] == …` (and `.isin(…)` is a Call, handled apart)."""
    left = node.left
    if isinstance(left, ast.Subscript) and isinstance(left.slice, ast.Constant):
        return str(left.slice.value)
    return None


# Modules whose `kind` and `reason_key` columns are the pooler log's (elsewhere `kind` is an app kind).
POOLER_MODULES = ("diagnose/pgbouncer_findings.py", "collect/pgbouncer_log.py", "evidence/views.py")


def test_every_pgbouncer_reason_key_used_in_the_package_is_defined() -> None:
    keys = set(pgbouncer_reasons.REASON_KEYS) | set(pgbouncer_reasons.EVENT_KEYS)
    kinds = set(pgbouncer_reasons.LOG_KINDS)
    checked = 0
    for path, tree in _python_modules().items():
        pooler_module = any(str(path).endswith(m) for m in POOLER_MODULES)
        for node in ast.walk(tree):
            used: list[tuple[str, set[str]]] = []
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name == "_events":  # the pooler's reader of close reasons and events
                    used += [(s, keys) for arg in node.args[1:] for s in _str_constants(arg)]
                    used += [
                        (s, kinds)
                        for kw in node.keywords
                        if kw.arg == "kinds"
                        for s in _str_constants(kw.value)
                    ]
                if name == "isin" and isinstance(node.func, ast.Attribute) and pooler_module:
                    target = node.func.value
                    column = target.slice if isinstance(target, ast.Subscript) else None
                    if isinstance(column, ast.Constant) and column.value in ("reason_key", "kind"):
                        allowed = keys if column.value == "reason_key" else kinds
                        used += [(s, allowed) for arg in node.args for s in _str_constants(arg)]
            elif isinstance(node, ast.Compare) and pooler_module:
                column = _column_compared(node)
                if column in ("reason_key", "kind"):
                    allowed = keys if column == "reason_key" else kinds
                    used += [(s, allowed) for c in node.comparators for s in _str_constants(c)]
            elif isinstance(node, ast.Dict) and pooler_module:
                for k, v in zip(node.keys, node.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value in ("reason_key", "kind") and v is not None:
                        allowed = keys if k.value == "reason_key" else kinds
                        used += [(s, allowed) for s in _str_constants(v)]
            elif isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "REASON_BY_KEY":
                used += [(s, keys) for s in _str_constants(node.slice)]
            for text, allowed in used:
                checked += 1
                assert text in allowed, f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}: {text!r}"
    assert checked >= 20, f"only {checked} reason keys were found: the scan is broken"


def test_every_reason_text_the_package_quotes_is_one_pgbouncer_prints() -> None:
    # "closing because: X" in signatures and docs, and the texts the diagnosis compares reasons with
    quoted = []
    for path, text in _package_texts().items():
        quoted += [(path, m) for m in re.findall(r"closing because: ([a-z_ ]+[a-z_?])", text)]
    assert quoted
    for path, text in quoted:
        assert pgbouncer_reasons.classify_reason(text) is not pgbouncer_reasons.UNKNOWN_REASON, (path, text)
    formats = {p.format for p in pgbouncer_reasons.printed_formats()}
    assert pgbouncer_reasons.POOLER_SHUTDOWN_TEXT in formats


def test_every_reason_in_the_source_maps_to_a_family_and_the_key_list_is_the_families() -> None:
    printed = pgbouncer_reasons.printed_formats()
    assert len(printed) >= 170
    for entry in printed:
        reason = pgbouncer_reasons.classify_reason(pgbouncer_reasons.format_matches(entry.format))
        assert reason is not pgbouncer_reasons.UNKNOWN_REASON, entry
    assert set(pgbouncer_reasons.REASON_KEYS) == {r.key for r in pgbouncer_reasons.REASONS} | {"unknown"}
    assert {e.key for e in pgbouncer_reasons.EVENTS} <= set(pgbouncer_reasons.EVENT_KEYS)
    for reason in pgbouncer_reasons.REASONS:
        assert reason.category is None or reason.category in categories.CATEGORIES


def test_the_shipped_catalog_agrees_with_the_tests_own_extraction() -> None:
    # Two extractions of the same source (tests/data by hand-written scan, the catalog by
    # tools/pgbouncer_reasons.py) must name the same formats and the same releases.
    data = json.loads((ROOT / "tests" / "data" / "pgbouncer" / "reasons.json").read_text())
    theirs = {r["format"]: (r["first"], r["last"]) for r in data["reasons"]}
    ours = {p.format: (p.first, p.last) for p in pgbouncer_reasons.printed_formats()}
    assert ours == theirs
    assert pgbouncer_reasons.catalog()["commit"] == data["commit"]


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        # REFERENCE.md says 1.17+ for this; janitor.c prints it for idle connections since 1.9.0 or earlier
        ("server lifetime over", "1.9.0", "HEAD"),
        ("server_lifetime", "1.9.0", "1.16.1"),  # release_server (objects.c) until 1.17.0 renamed it
        ("server login has been failing, try again later (server_login_retry)", "1.17.0", "1.23.1"),
        ("server login has been failing, cached error: %s (server_login_retry)", "1.24.0", "HEAD"),
        ("transaction timeout", "1.25.0", "HEAD"),
        ("prepared statement name is already in use", "1.21.0", "HEAD"),
        ("prepared statement did not exist", "1.21.0", "HEAD"),
        ("server shutting down", "1.23.0", "HEAD"),
        ("pooler is shutting down", "1.25.0", "HEAD"),
        ("client connections exceeded (max_db_client_connections)", "1.24.0", "HEAD"),
    ],
)
def test_the_releases_that_print_a_reason(text: str, first: str, last: str) -> None:
    entry = next(p for p in pgbouncer_reasons.printed_formats() if p.format == text)
    assert (entry.first, entry.last) == (first, last)


def test_each_family_says_from_which_release() -> None:
    since = {r.key: r.since for r in pgbouncer_reasons.REASONS}
    assert since["transaction_timeout"] == "1.25.0"
    assert since["prepared_statement_in_use"] == "1.21.0"
    assert since["server_login_retry"] == "1.17.0"
    assert since["server_lifetime"] == "1.9.0"
    assert since["server_too_many_clients"] is None  # only the server's own words, passed on


def test_pgbouncer_level_names_are_the_ones_its_log_lines_carry() -> None:
    for level in pgbouncer_reasons.LEVELS:
        line = f"2024-05-01 14:00:00.123 UTC [4321] {level} C-0x1: app/app@10.0.0.1:5000 closing because: x"
        match = LINE.match(line)
        assert match and match["level"] == level
    assert LINE.match("2024-05-01 14:00:00.123 UTC [4321] NOTICE something") is None  # PgBouncer has none


# -- (c) consequences --------------------------------------------------------------------------------------


def test_every_consequence_names_defined_findings() -> None:
    for spec in SPECS:
        for cause in (*spec.consequence_of, *spec.dropped_while):
            assert cause in FINDINGS, (spec.id, cause)
            assert cause != spec.id


def test_the_diagnosis_links_consequences_as_the_specs_say() -> None:
    linked: dict[str, set[str]] = {}
    for link in consequences.LINKS:
        assert link.consequence in FINDINGS
        linked.setdefault(link.consequence, set()).update(link.causes)
    assert linked == {s.id: set(s.consequence_of) for s in SPECS if s.consequence_of}
    assert {s.id: s.dropped_while for s in SPECS if s.dropped_while} == consequences.DROPPED_WHILE


# -- categories -----------------------------------------------------------------------------------------


def test_categories_are_defined_once() -> None:
    from playbook.evidence import vocab
    from playbook.lab import scenarios

    assert vocab.CATEGORIES is categories.CATEGORIES
    assert log_events.CATEGORIES == categories.CATEGORIES
    for spec in scenarios.SCENARIOS.values():
        assert spec.expected_category is None or spec.expected_category in categories.CATEGORIES
    # no module spells the five out again
    spelled = re.compile(r"\(\s*\"leak\",\s*\"timeout\",\s*\"network\",\s*\"pool_config\",\s*\"server\"\s*\)")
    again = [p for p, t in _package_texts().items() if p.suffix == ".py" and spelled.search(t)]
    assert not again, again

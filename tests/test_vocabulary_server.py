"""The server's words: every template reads as its event, and every language reads as English.

No server is needed: the templates are PostgreSQL's msgids (vocabulary/server_events.py), the
translations are its own catalogs (vocabulary/catalogs/postgres.json, tools/build_catalogs.py),
and the translated logs are the connection-heavy mix rewritten as a server in each language
writes it (bench/log_throughput.py's to_language, through the same catalogs' msgstrs).
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from playbook.collect import log_events
from playbook.collect.serverlog import read_server_logs
from playbook.vocabulary import levels, server_events, translations

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import log_throughput  # noqa: E402

SESSION_LINES = ("connection_received", "connection_authorized", "disconnection")
ERRNO = {
    "connection_reset": "Connection reset by peer",
    "client_recv_timeout": "Connection timed out",
    "broken_pipe": "Broken pipe",
}


# arguments whose value the wording depends on
FIRST_ARGUMENT = {"starting %s": "PostgreSQL 15.18 on x86_64-pc-linux-gnu"}


def render(msgid: str, errno_text: str = "Some error") -> str:
    """A msgid as the server prints it, with plain arguments."""
    if msgid in FIRST_ARGUMENT:
        return msgid.replace("%s", FIRST_ARGUMENT[msgid])
    piece = translations.split_template(msgid)
    out = [piece.literals[0]]
    for conversion, argument, literal in zip(
        piece.conversions, piece.arguments, piece.literals[1:], strict=True
    ):
        if argument is None:
            out.append(errno_text)
        elif conversion in "diouxX":
            out.append("12")
        else:
            out.append("name")
        out.append(literal)
    return "".join(out)


def test_every_wording_has_the_msgids_it_comes_from() -> None:
    worded = {kind.id for kind in log_events.EVENTS if kind.pattern} | set(SESSION_LINES)
    assert worded <= set(server_events.TEMPLATES), worded - set(server_events.TEMPLATES)
    assert set(server_events.TEMPLATES) <= set(log_events.CATALOG), "a template names an unknown event"


@pytest.mark.parametrize("event_id", sorted(server_events.TEMPLATES))
def test_every_msgid_reads_as_its_own_event(event_id: str) -> None:
    for msgid in server_events.TEMPLATES[event_id]:
        if msgid.startswith(" "):  # appended to the line of another msgid
            continue
        text = render(msgid, ERRNO.get(event_id, "Some error"))
        if event_id in SESSION_LINES:
            kind = log_events.session_kind(text)
        else:
            kind = log_events.classify(text, "FATAL")
            if kind is None or kind.id != event_id:
                kind = log_events.classify(text, "LOG")
        assert kind is not None and kind.id == event_id, (msgid, text, kind)


def test_the_shipped_catalog_was_built_from_these_templates() -> None:
    """Adding a template without running tools/build_catalogs.py would leave it untranslated."""
    text = resources.files("playbook.vocabulary").joinpath("catalogs/postgres.json").read_text("utf-8")
    catalog = json.loads(text)
    named = {m for ids in server_events.TEMPLATES.values() for m in ids}
    named |= set(server_events.PROCESS_NAMES) | set(levels.EVENT_LEVELS + levels.OTHER_LEVELS)
    named |= {levels.UNKNOWN_NAME} | {f"{label}:  " for label in levels.SECONDARY_LABELS}
    assert set(catalog["msgids"]) == named, "run tools/build_catalogs.py"
    assert catalog["harmless_heads"] == list(server_events.HARMLESS_LOG_HEADS)
    assert catalog["strerrors"] == list(server_events.STRERRORS)
    assert {"15", "17"} <= {m for entry in catalog["languages"].values() for m in entry["majors"]}


def test_the_catalogs_cover_every_language_postgresql_15_and_17_ship() -> None:
    expected = {"de", "es", "fr", "it", "ja", "ka", "ko", "ru", "sv", "uk", "zh_CN"}  # Debian's 15
    expected |= {"id", "pl", "pt_BR", "tr", "zh_TW"}  # and 17's additions
    assert set(translations.languages()) == expected


@pytest.mark.parametrize(
    ("locale", "code"),
    [
        ("ru_RU.UTF-8", "ru"),
        ("zh_CN.utf8", "zh_CN"),
        ("de_DE@euro", "de"),
        ("pt_BR.UTF-8", "pt_BR"),
        ("pt_PT.UTF-8", None),
        ("C", "en"),
        ("en_US.UTF-8", "en"),
        ("Russian_Russia.1251", "ru"),
        ("Chinese (Simplified)_China.936", "zh_CN"),
        ("nl_NL.UTF-8", None),
        ("", None),
    ],
)
def test_lc_messages_names_a_language(locale: str, code: str | None) -> None:
    assert translations.language_of_locale(locale) == code


def test_a_translated_message_is_rendered_back_into_its_msgid() -> None:
    ru = translations.language("ru")
    assert ru.to_english('слишком много подключений для роли "billing-api"') == (
        'too many connections for role "billing-api"'
    )
    # %m is glibc's errno text, translated by glibc's catalog
    assert ru.to_english("не удалось получить данные от клиента: Соединение разорвано другой стороной") == (
        "could not receive data from client: Connection reset by peer"
    )
    # a translation that wraps is known by its first line (readers classify by the first line)
    fr = translations.language("fr")
    assert fr.to_english("fin de fichier (EOF) inattendue de la connexion du client avec une") == (
        "unexpected EOF on client connection with an open transaction"
    )
    assert ru.to_english("синтаксическая ошибка") is None


@pytest.fixture(scope="module")
def english_mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mix") / "english.log"
    log_throughput.generate(path, 0.4)
    return path


@pytest.fixture(scope="module")
def english_read(english_mix: Path) -> Any:
    return read_server_logs([english_mix], prefix=log_throughput.PREFIX)


@pytest.mark.parametrize("code", sorted(translations.languages()))
def test_every_language_reads_as_english(
    english_mix: Path, english_read: Any, tmp_path: Path, code: str
) -> None:
    """The connection-heavy mix as a server in `code` writes it: the same events and sessions,
    recognised from the text alone."""
    translated = tmp_path / f"{code}.log"
    log_throughput.to_language(english_mix, translated, code)
    assert translated.read_bytes() != english_mix.read_bytes()
    english = english_read
    theirs = read_server_logs([translated], prefix=log_throughput.PREFIX)
    assert theirs.summary["languages"] == {str(translated): code}
    assert {k: v["count"] for k, v in theirs.summary["events"].items()} == {
        k: v["count"] for k, v in english.summary["events"].items()
    }
    assert theirs.summary["sessions"]["count"] == english.summary["sessions"]["count"] > 0
    assert theirs.sessions["ended_by"].value_counts().to_dict() == (
        english.sessions["ended_by"].value_counts().to_dict()
    )
    assert theirs.warnings == english.warnings


@pytest.mark.parametrize("code", sorted(translations.languages()))
def test_the_compiled_pass_rewrites_as_the_reference_does(
    english_mix: Path, tmp_path: Path, code: str
) -> None:
    """_scan.replace_many (one pass) against one bytes.replace per piece, on the translated mix
    and in every format's form of the pieces."""
    from playbook.collect.serverlog import language

    assert language.REPLACE_MANY is not None, "the compiled loops were not built (make install)"
    translated = tmp_path / f"{code}.log"
    log_throughput.to_language(english_mix, translated, code)
    data = translated.read_bytes()
    for fmt in ("stderr", "csvlog", "jsonlog"):
        pairs = language._replacements(code, fmt)
        expected = language.replace_each(data, pairs)
        assert language.LogLanguage(code).to_english(data, fmt) == expected, fmt
    assert language.LogLanguage(code).to_english(data, "stderr") != data


def test_every_sqlstate_the_vocabulary_names_is_one_postgresql_defines() -> None:
    """Against errcodes.txt (vocabulary/sqlstates.py, tools/gen_sqlstates.py): a typo'd code
    would never match a line."""
    from playbook.vocabulary import drivers
    from playbook.vocabulary.sqlstates import SQLSTATES

    named = {code for kind in log_events.CATALOG.values() for code in kind.sqlstates}
    named |= set(log_events.SQLSTATE_FALLBACK) | set(drivers.SQLSTATE_KINDS)
    assert named - set(SQLSTATES) == set()
    assert SQLSTATES["57P05"][0] == "idle_session_timeout"
    assert SQLSTATES["25P04"][0] == "transaction_timeout"

"""The catalog of PostgreSQL server-log lines that explain why sessions ended.

Every entry maps a server wording (English `lc_messages`, checked against the PostgreSQL
sources of 9.6 to 18) and, where the server attaches one, its SQLSTATE to a stable event id
and one of the five root-cause categories. Informational lines (start-up, reloads, the
session lines written by `log_connections` / `log_disconnections`) have the category "".

Classification goes by wording first, because one SQLSTATE often covers several causes
(53300 is max_connections, the reserved slots and both per-role and per-database limits).
When the line carries a SQLSTATE (csvlog and jsonlog always, stderr with %e in the prefix)
it must agree with the wording; a line whose wording is unknown, as with translated
messages, falls back to the SQLSTATE alone where that is unambiguous enough.
"""

from __future__ import annotations

import re

from playbook.vocabulary import translations
from playbook.vocabulary.categories import CATEGORIES
from playbook.vocabulary.levels import INTERESTING_LEVELS
from playbook.vocabulary.server_events import (
    CATALOG,
    EVENTS,
    GENERIC_EVENTS,
    SESSION_EVENTS,
    SQLSTATE_FALLBACK,
    EventKind,
)
from playbook.vocabulary.translations import ENGLISH

__all__ = [
    "CATALOG",
    "CATEGORIES",
    "EVENTS",
    "GENERIC_EVENTS",
    "INTERESTING_LEVELS",
    "SESSION_EVENTS",
    "SQLSTATE_FALLBACK",
    "EventKind",
    "category",
    "classify",
    "meaning",
    "session_kind",
    "session_seconds",
]

# One alternation, each entry in a named group, tried at the start of a message: `lastgroup`
# names the entry that matched. Order matters: specific wordings before general ones.
_WORDING_KINDS = [kind for kind in EVENTS if kind.pattern]
_WORDING_RE = re.compile("|".join(f"(?P<e{i}>{kind.pattern})" for i, kind in enumerate(_WORDING_KINDS)))
_BY_GROUP = {f"e{i}": kind for i, kind in enumerate(_WORDING_KINDS)}
_BY_LEVEL_ONLY = {level: kind for kind in EVENTS if not kind.pattern for level in kind.levels}


def classify(
    message: str, level: str, sqlstate: str | None = None, language: str | None = None
) -> EventKind | None:
    """The catalog entry for one log entry's primary message, or None if it explains nothing.

    `sqlstate` is the code from the line (None or "" when the format has none). A wording
    whose known codes disagree with the line's code is not trusted: a user's RAISE with the
    same text has P0001, not 57P01. `language` is what the server's lc_messages wrote the
    message in ('ru', 'zh_CN', ...): a wording English does not know is rendered back into
    English through PostgreSQL's own translation of it (vocabulary.translations) first.
    """
    kind = _by_wording(message, level, sqlstate)
    if kind is None and language and language != ENGLISH and language in translations.languages():
        english = translations.language(language).to_english(message)
        if english is not None:
            kind = _by_wording(english, level, sqlstate)
    if kind is None and level in _BY_LEVEL_ONLY:
        return _BY_LEVEL_ONLY[level]
    if kind is None and sqlstate and level in ("FATAL", "ERROR", "PANIC"):
        kind = SQLSTATE_FALLBACK.get(sqlstate)
    return kind


def _by_wording(message: str, level: str, sqlstate: str | None) -> EventKind | None:
    match = _WORDING_RE.match(message)
    if match is None or match.lastgroup is None:
        return None
    kind = _BY_GROUP[match.lastgroup]
    wrong_level = bool(kind.levels) and level not in kind.levels
    wrong_code = bool(sqlstate and sqlstate != "00000" and kind.sqlstates and sqlstate not in kind.sqlstates)
    return None if wrong_level or wrong_code else kind


def session_kind(message: str) -> EventKind | None:
    """connection_received / connection_authorized / disconnection, or None."""
    if message.startswith("disconnection: session time: "):
        return CATALOG["disconnection"]
    if message.startswith("connection received: "):
        return CATALOG["connection_received"]
    if message.startswith(("connection authorized: ", "replication connection authorized: ")):
        return CATALOG["connection_authorized"]
    return None


_SESSION_TIME_RE = re.compile(r"disconnection: session time: (\d+):(\d+):(\d+(?:\.\d+)?)")


def session_seconds(message: str) -> float | None:
    """The session time of a disconnection line, in seconds ('1:02:03.456' -> 3723.456)."""
    match = _SESSION_TIME_RE.match(message)
    if match is None:
        return None
    return round(int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3)), 3)


def meaning(event_id: str) -> str:
    kind = CATALOG.get(event_id)
    return kind.meaning if kind else ""


def category(event_id: str) -> str:
    kind = CATALOG.get(event_id)
    return kind.category if kind else ""

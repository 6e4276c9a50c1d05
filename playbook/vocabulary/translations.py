"""PostgreSQL's own translations of the words the playbook reads, and the way back to English.

A server whose lc_messages is not English writes its level words and messages translated
(`ВАЖНО:  закрытие подключения из-за тайм-аута простоя сеанса`). The translations come from
PostgreSQL's message catalogs (vocabulary/catalogs/postgres.json, made by
tools/build_catalogs.py from the catalogs of 15 and 17 and glibc's errno texts), so a line is
read by rendering it back into the English msgid it was made from: the arguments captured by
the translated template are put into the English one, and the English patterns of
vocabulary/server_events then classify it as if the server spoke English.

`Language.to_english` renders one message; `Language.levels` maps translated level words;
`Language.segments` lists the (translated, English) pieces of the session and harmless LOG
templates that a log reader can replace in bulk, at memory speed, before it parses a block.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from playbook.vocabulary import levels as _levels
from playbook.vocabulary import server_events

ENGLISH = "en"
# How a warning says that a log's words are in no language the catalogs cover (the server log's
# reader writes it, the verdict line reads it back).
NO_CATALOG = "in a language the playbook has no catalog for"

# printf conversions as PostgreSQL's msgids use them (src/port/snprintf.c): %m is the errno text
_PLACEHOLDER = re.compile(
    r"%(?:(\d+)\$)?[-+ #0]*(?:\d+|\*)?(?:\.\d+)?(?:hh|h|ll|l|z|j|t|L)?([diouxXeEfgGcsmp%])"
)
_GROUP_OF = {
    "d": r"(-?\d+)",
    "i": r"(-?\d+)",
    "u": r"(\d+)",
    "o": r"([0-7]+)",
    "x": r"([0-9a-fA-F]+)",
    "X": r"([0-9a-fA-F]+)",
    "c": r"(.)",
}
_ANY = r"(.*?)"

# The encodings a server's log may be written in when it is not UTF-8, per language: Windows
# servers write the OS code page, older Unix ones the locale's legacy charset.
LEGACY_ENCODINGS: dict[str, tuple[str, ...]] = {
    "ru": ("cp1251", "koi8_r"),
    "uk": ("cp1251", "koi8_u"),
    "zh_CN": ("gb18030",),
    "zh_TW": ("big5",),
    "ja": ("euc_jp", "cp932"),
    "ko": ("cp949",),
    "pl": ("cp1250", "iso8859_2"),
    "tr": ("cp1254",),
    "de": ("cp1252",),
    "fr": ("cp1252",),
    "es": ("cp1252",),
    "it": ("cp1252",),
    "sv": ("cp1252",),
    "pt_BR": ("cp1252",),
    "id": ("cp1252",),
}


@dataclass(frozen=True)
class _Piece:
    """A template split at its placeholders: the literals around them and, per placeholder,
    the index of the English argument it holds (None for %m, the errno text)."""

    literals: tuple[str, ...]
    conversions: tuple[str, ...]
    arguments: tuple[int | None, ...]


def split_template(text: str) -> _Piece:
    """Literals and placeholders of one printf template ('%%' stays a literal '%')."""
    literals: list[str] = []
    conversions: list[str] = []
    arguments: list[int | None] = []
    current: list[str] = []
    at, sequential = 0, 0
    for match in _PLACEHOLDER.finditer(text):
        current.append(text[at : match.start()])
        at = match.end()
        position, conversion = match.group(1), match.group(2)
        if conversion == "%":
            current.append("%")
            continue
        literals.append("".join(current))
        current = []
        conversions.append(conversion)
        if conversion == "m":
            arguments.append(None)
        elif position:
            arguments.append(int(position) - 1)
        else:
            arguments.append(sequential)
            sequential += 1
    current.append(text[at:])
    literals.append("".join(current))
    return _Piece(tuple(literals), tuple(conversions), tuple(arguments))


def _regex(piece: _Piece) -> str:
    parts = [re.escape(piece.literals[0])]
    for conversion, literal in zip(piece.conversions, piece.literals[1:], strict=True):
        parts.append(_GROUP_OF.get(conversion, _ANY))
        parts.append(re.escape(literal))
    return "".join(parts)


@dataclass(frozen=True)
class _Translated:
    msgid: str
    english: _Piece
    translated: _Piece


@dataclass
class Language:
    """One language's translations, as the log readers use them."""

    code: str
    majors: tuple[str, ...]
    messages: dict[str, tuple[str, ...]]
    strerror: dict[str, str]  # translated errno text -> English
    levels: dict[str, str] = field(init=False)  # translated level word -> English
    labels: dict[str, str] = field(init=False)  # translated 'DETAIL:  ' -> English
    unknown_name: str | None = field(init=False)  # what %u and %d print for "[unknown]"
    _templates: list[_Translated] = field(init=False, repr=False)
    _regex: re.Pattern[str] | None = field(init=False, repr=False)
    _search: re.Pattern[str] | None = field(init=False, repr=False)
    _keys: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        words = _levels.EVENT_LEVELS + _levels.OTHER_LEVELS
        self.levels = {t: word for word in words for t in self.messages.get(word, ()) if t != word}
        self.labels = {
            t: f"{label}:  "
            for label in _levels.SECONDARY_LABELS
            for t in self.messages.get(f"{label}:  ", ())
            if t != f"{label}:  "
        }
        unknown = self.messages.get(_levels.UNKNOWN_NAME, ())
        self.unknown_name = unknown[0] if unknown and unknown[0] != _levels.UNKNOWN_NAME else None
        templates = []
        for msgid in dict.fromkeys(m for ids in server_events.TEMPLATES.values() for m in ids):
            english = split_template(msgid)
            for msgstr in self.messages.get(msgid, ()):
                translated = split_template(msgstr)
                if len(translated.conversions) == len(english.conversions):
                    templates.append(_Translated(msgid, english, translated))
                first_line = msgstr.split("\n", 1)[0]
                if first_line != msgstr and len(first_line) >= 12:
                    # readers classify an entry by its first line: a translation that wraps
                    # (fr: "... avec une\ntransaction ouverte") is known by that line alone
                    templates.append(_Translated(msgid, english, split_template(first_line)))
        # the most literal text first: a template that is mostly placeholders matches anything
        templates.sort(key=lambda t: -sum(len(x) for x in t.translated.literals))
        self._templates = templates
        alternation = "|".join(f"(?P<t{i}>{_regex(t.translated)})" for i, t in enumerate(templates))
        self._regex = re.compile(rf"(?:{alternation})\Z", re.DOTALL) if templates else None
        # inside other text (a driver's exception line): the templates that say something on
        # their own (a literal head of 8 characters or more), matched anywhere
        heads = [
            f"(?P<t{i}>{_regex(t.translated)})"
            for i, t in enumerate(templates)
            if len(t.translated.literals[0]) >= 8
        ]
        self._search = re.compile("|".join(heads)) if heads else None
        # the regex costs ~0.4 ms on a line it does not match: these plain substring tests
        # (a few microseconds) decide first whether any head can be in the line at all
        self._keys = tuple(
            sorted({t.translated.literals[0] for t in templates if len(t.translated.literals[0]) >= 8})
        )

    def to_english(self, message: str) -> str | None:
        """The English wording of one translated message (its first line), or None when it is
        no template the vocabulary knows in this language."""
        if self._regex is None:
            return None
        return self._render(self._regex.match(message))

    def find_english(self, text: str) -> str | None:
        """The English wording of the first translated template found anywhere in `text` (a
        driver's exception line relaying the server's message), or None. Its arguments are
        read up to the end of the line at most."""
        if self._search is None or not any(key in text for key in self._keys):
            return None
        return self._render(self._search.search(text))

    def _render(self, match: re.Match[str] | None) -> str | None:
        if match is None or match.lastgroup is None:
            return None
        template = self._templates[int(match.lastgroup[1:])]
        groups = match.groups()
        first = match.re.groupindex[match.lastgroup]
        values = groups[first : first + len(template.translated.conversions)]
        by_argument: dict[int, str] = {}
        errno_text = ""
        for argument, value in zip(template.translated.arguments, values, strict=False):
            if argument is None:
                errno_text = self.strerror.get(value, value)
            else:
                by_argument[argument] = value
        out = [template.english.literals[0]]
        for argument, literal in zip(template.english.arguments, template.english.literals[1:], strict=True):
            out.append(errno_text if argument is None else by_argument.get(argument, ""))
            out.append(literal)
        return "".join(out)

    def segments(self, msgids: tuple[str, ...], heads_only: bool = False) -> list[tuple[str, str, bool]]:
        """(translated, English, is_head) pieces of these templates that can be replaced as they
        stand: every literal that differs from the English one, where both have the same
        placeholders in the same order (only the first with `heads_only`). The first piece
        (is_head) begins the message; a reader adds its own context (what precedes a message in
        its format) before replacing it. Pieces shorter than three characters on either side,
        and pieces that would map to two different English texts, are left out: replacing them
        could change other text."""
        found: dict[tuple[str, bool], set[str]] = {}
        for msgid in msgids:
            english = split_template(msgid)
            for msgstr in self.messages.get(msgid, ()):
                translated = split_template(msgstr)
                if translated.arguments != english.arguments:
                    continue
                pairs = list(zip(translated.literals, english.literals, strict=True))
                # a msgid that starts with a space is appended to another line (" database=%s")
                begins = not msgid.startswith(" ")
                for n, (mine, theirs) in enumerate(pairs[:1] if heads_only else pairs):
                    if mine != theirs and len(mine.strip()) >= 3 and len(theirs.strip()) >= 3:
                        found.setdefault((mine, n == 0 and begins), set()).add(theirs)
        return sorted(
            ((mine, next(iter(theirs)), head) for (mine, head), theirs in found.items() if len(theirs) == 1),
            key=lambda s: -len(s[0].encode()),
        )


@cache
def _catalog() -> dict[str, Any]:
    text = resources.files("playbook.vocabulary").joinpath("catalogs/postgres.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def languages() -> tuple[str, ...]:
    """The languages PostgreSQL's catalogs cover (English is not among them: it needs none)."""
    return tuple(_catalog()["languages"])


@cache
def language(code: str) -> Language:
    """The translations of one language code ('ru', 'zh_CN'); KeyError for one PostgreSQL does
    not ship."""
    entry = _catalog()["languages"][code]
    strerror = {t: en for en, t in entry.get("strerror", {}).items()}
    messages = {k: tuple(v) for k, v in entry["messages"].items()}
    return Language(code, tuple(entry["majors"]), messages, strerror)


def language_of_locale(locale: str | None) -> str | None:
    """The language code of an lc_messages value ('ru_RU.UTF-8' -> 'ru', 'zh_CN.utf8' ->
    'zh_CN', 'C' or 'en_US.UTF-8' -> 'en'); None when empty or a language with no catalog
    (whose log the playbook then recognises from its text, or warns about)."""
    if not locale:
        return None
    name = locale.split(".", 1)[0].split("@", 1)[0].strip()
    if name in ("C", "POSIX", "") or name.lower().startswith("en"):
        return ENGLISH
    known = languages()
    if name in known:
        return name
    base = name.split("_", 1)[0]
    if base in known:
        return base
    # Windows spells locales out: 'Russian_Russia.1251', 'Chinese (Simplified)_China.936'
    spelled = {
        "russian": "ru", "ukrainian": "uk", "german": "de", "french": "fr", "spanish": "es",
        "italian": "it", "japanese": "ja", "korean": "ko", "swedish": "sv", "polish": "pl",
        "turkish": "tr", "georgian": "ka", "indonesian": "id", "portuguese": "pt_BR",
        "chinese (simplified)": "zh_CN", "chinese (traditional)": "zh_TW", "english": ENGLISH,
    }  # fmt: skip
    return spelled.get(name.split("_", 1)[0].lower())

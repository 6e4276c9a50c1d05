"""The language and encoding of a server log, and its blocks rewritten into English for the parsers.

A server with lc_messages in another language writes translated level words, session lines and
messages; one on Windows may write them in the OS code page (GBK, Windows-1251). The parsers
read English UTF-8 at memory speed, so a translated block is first made into that:
- decoded from its legacy encoding, if any;
- its level words and secondary labels replaced in the form its format writes them (stderr
  `ВАЖНО:  `, csvlog `,ВАЖНО,`; jsonlog writes the English word already);
- the pieces of the session lines (log_connections, log_disconnections) and the heads of the
  harmless LOG wordings replaced with PostgreSQL's own English (vocabulary.translations): a few
  bytes.replace passes, each at several GB/s.
Event messages stay as written: the parsers classify each distinct one through
`Language.to_english`, so a translated log costs one pass per piece, not one regex per line.

The language is the server's lc_messages when the caller knows it (a live run reads it), else
recognised from a sample: the translated level words and message heads of every language
PostgreSQL ships are counted in it, in UTF-8 and in each language's legacy encodings, and the
language with most of them wins over English only when it has more.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache

from playbook.collect.serverlog import engine
from playbook.vocabulary import levels as vocabulary_levels
from playbook.vocabulary import server_events, translations
from playbook.vocabulary.translations import ENGLISH


def __getattr__(name: str) -> object:
    """REPLACE_MANY: the engine's one-pass replacement (_scan.replace_many), None for the
    reference (read by tests; the readers ask the engine)."""
    if name == "REPLACE_MANY":
        scan = engine.ENGINE.scan
        return None if scan is None else scan.replace_many
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The templates whose pieces are replaced in bulk: the session lines and the harmless LOG heads.
_SESSION_IDS = ("connection_received", "connection_authorized", "disconnection")
_CONTEXT = {"stderr": (":  ",), "csvlog": (',"',), "jsonlog": ('"message":"',)}


@dataclass(frozen=True)
class LogLanguage:
    """How a file's text is written: the language of its words and the encoding of its bytes.
    Picklable (only its names travel to worker processes)."""

    language: str = ENGLISH
    encoding: str = "utf-8"

    @property
    def plain(self) -> bool:
        """English UTF-8: the parsers read it as it is."""
        return self.language == ENGLISH and self.encoding == "utf-8"

    def describe(self) -> str:
        name = "English" if self.language == ENGLISH else self.language
        return name if self.encoding == "utf-8" else f"{name} ({self.encoding})"

    def to_english(self, block: bytes, fmt: str) -> bytes:
        """`block` as English UTF-8 as far as the vocabulary reaches (see the module's doc)."""
        if self.encoding != "utf-8":
            block = block.decode(self.encoding, "replace").encode("utf-8")
        if self.language == ENGLISH:
            return block
        compiled = engine.ENGINE.scan
        if compiled is not None:  # one pass for every piece
            needles, replacements = _replacement_lists(self.language, fmt)
            return bytes(compiled.replace_many(block, needles, replacements))
        return replace_each(block, _replacements(self.language, fmt))


def replace_each(block: bytes, pairs: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """The reference of the compiled one-pass replacement: one bytes.replace per pair."""
    for mine, theirs in pairs:
        block = block.replace(mine, theirs)
    return block


@cache
def _replacement_lists(code: str, fmt: str) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    pairs = _replacements(code, fmt)
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def _escape(text: str, fmt: str) -> str:
    if fmt == "jsonlog":
        return json.dumps(text, ensure_ascii=False)[1:-1]
    if fmt == "csvlog":
        return text.replace('"', '""')
    return text.replace("\n", "\n\t")  # stderr continues a message on tab-led lines


@cache
def _replacements(code: str, fmt: str) -> tuple[tuple[bytes, bytes], ...]:
    """(translated, English) byte strings to replace in a block of `fmt`, longest first."""
    lang = translations.language(code)
    pairs: dict[bytes, bytes] = {}
    if fmt == "stderr":
        for mine, theirs in lang.levels.items():
            pairs[f"{mine}:  ".encode()] = f"{theirs}:  ".encode()
        for mine, theirs in lang.labels.items():
            pairs[mine.encode()] = theirs.encode()
        if lang.unknown_name:
            pairs[lang.unknown_name.encode()] = vocabulary_levels.UNKNOWN_NAME.encode()
    elif fmt == "csvlog":  # the level is the unquoted 12th field (csvlog.c)
        for mine, theirs in lang.levels.items():
            pairs[f",{mine},".encode()] = f",{theirs},".encode()
    else:  # jsonlog.c writes error_severity untranslated; a translated one is read all the same
        for mine, theirs in lang.levels.items():
            pairs[f'"error_severity":"{mine}"'.encode()] = f'"error_severity":"{theirs}"'.encode()
    msgids = tuple(m for event in _SESSION_IDS for m in server_events.TEMPLATES[event])
    heads = tuple(m for m in lang.messages if m.startswith(server_events.HARMLESS_LOG_HEADS))
    pieces = lang.segments(msgids) + lang.segments(heads, heads_only=True)
    for mine, theirs, is_head in pieces:
        contexts = _CONTEXT[fmt] if is_head else ("",)
        for context in contexts:
            key = (context + _escape(mine, fmt)).encode()
            pairs.setdefault(key, (context + _escape(theirs, fmt)).encode())
    return tuple(sorted(pairs.items(), key=lambda p: -len(p[0])))


@cache
def _needles(code: str, fmt: str) -> tuple[str, ...]:
    """Texts only a log in this language holds, and often: its level words (in the format's
    form) where they differ from English, and the heads of its session lines and harmless LOG
    wordings (the bulk of any log that has sessions)."""
    lang = translations.language(code)
    if fmt == "stderr":
        words = [f"{w}:  " for w in lang.levels]
    elif fmt == "csvlog":
        words = [f",{w}," for w in lang.levels]
    else:
        words = []
    msgids = tuple(m for event in _SESSION_IDS for m in server_events.TEMPLATES[event])
    heads = tuple(m for m in lang.messages if m.startswith(server_events.HARMLESS_LOG_HEADS))
    pieces = [mine for mine, _, head in lang.segments(msgids) + lang.segments(heads, True) if head]
    return tuple(dict.fromkeys([*words, *(_escape(p, fmt) for p in pieces)]))


def _score(text: str, code: str, fmt: str) -> int:
    return sum(text.count(needle) for needle in _needles(code, fmt))


def _mostly_utf8(sample: bytes) -> bool:
    """UTF-8, but for a few stray bytes (a client's Latin-1 application name): read as UTF-8."""
    text = sample.decode("utf-8", "replace")
    return text.count("\ufffd") <= max(3, len(sample) // 1000)


# Hits below this are coincidence (a user's statement quoting a translated word), not a language.
MIN_HITS = 2
DETECT_SIZE = 64 << 10  # of the sample: a few hundred entries say which language they are in


def detect_language(sample: bytes, fmt: str, language: str | None = None) -> LogLanguage:
    """The language and encoding a sample is written in. `language` (from the server's
    lc_messages) is taken as given when PostgreSQL ships it; the encoding is always read from
    the bytes. Otherwise the language whose own words the sample holds most often, English when
    none holds MIN_HITS. A log that switched lc_messages part-way is read in the other language:
    its English lines read as they are (reading a language only adds to English)."""
    known = translations.languages()
    candidates = [language] if language == ENGLISH or language in known else list(known)
    head = sample[:DETECT_SIZE]
    utf8 = _mostly_utf8(head)
    texts = {"utf-8": head.decode("utf-8", "replace")}
    if utf8 and texts["utf-8"].isascii():  # no translated word but the Latin ones can be in it
        candidates = [c for c in candidates if c == ENGLISH or any(n.isascii() for n in _needles(c, fmt))]
    best, best_score = LogLanguage(), 0
    for code in candidates:
        if code == ENGLISH:
            break
        # UTF-8, or the language's legacy code pages: the wrong one decodes to nothing it knows
        for encoding in ("utf-8",) if utf8 else ("utf-8", *translations.LEGACY_ENCODINGS.get(code, ())):
            if encoding not in texts:
                texts[encoding] = head.decode(encoding, "replace")
            score = _score(texts[encoding], code, fmt)
            if score > best_score or (len(candidates) == 1 and best_score == 0 and encoding == "utf-8"):
                best, best_score = LogLanguage(code, encoding), score
    if best_score >= MIN_HITS or (len(candidates) == 1 and candidates[0] != ENGLISH):
        return best
    # English, or a language with no catalog: read as UTF-8, what is not UTF-8 replaced (a
    # legacy code page is only assumed where a language's own words were found in it)
    return LogLanguage()


@cache
def _known_level_words() -> frozenset[str]:
    words = set(
        vocabulary_levels.EVENT_LEVELS + vocabulary_levels.OTHER_LEVELS + vocabulary_levels.SECONDARY_LABELS
    )
    words.update(f"DEBUG{n}" for n in range(1, 6))
    for code in translations.languages():
        lang = translations.language(code)
        words.update(lang.levels)
        words.update(label.rstrip(": ") for label in lang.labels)
    return frozenset(words)


_STDERR_LEVEL = re.compile(r"(?:^|\s)(\S{2,40}):  ")


def unknown_level_words(sample: bytes, fmt: str) -> list[str]:
    """The level words of a sample (already rewritten into English where its language is
    known) that no catalog knows, most frequent first, when they are most of its entries; []
    otherwise. A log in a language PostgreSQL ships no catalog for, or one garbled on the way,
    parses but says nothing the playbook can read: the caller warns instead of reporting a quiet
    day."""
    text = sample.decode("utf-8", "replace")
    found: Counter[str] = Counter()
    if fmt == "stderr":
        for line in text.splitlines()[:2000]:
            if line.startswith("\t"):
                continue
            match = _STDERR_LEVEL.search(line)
            if match:
                found[match.group(1)] += 1
    elif fmt == "csvlog":
        try:
            for record in list(csv.reader(io.StringIO(text)))[:2000]:
                if len(record) > 11:
                    found[record[11]] += 1
        except csv.Error:
            pass
    else:
        for line in text.splitlines()[:2000]:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("error_severity"), str):
                found[record["error_severity"]] += 1
    known = _known_level_words()
    unknown = Counter({word: n for word, n in found.items() if word not in known})
    if sum(unknown.values()) < 3 or sum(unknown.values()) <= sum(found.values()) - sum(unknown.values()):
        return []
    return [word for word, _ in unknown.most_common()]

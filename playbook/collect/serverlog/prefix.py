"""log_line_prefix: the regular expressions that split a stderr entry into its prefix fields.

Two forms of one prefix. `compile_prefix` gives the lenient Python regex that accepts any name
(spaces, '@' and all) and is the reference; `FastPrefix` gives RE2 patterns for pyarrow that
assume a field never contains the literal that follows it in the prefix (a user name without
'@', a database name without a space), which is what makes them fast. The reader uses the fast
form and falls back to the lenient one for the entries it cannot split, so a strange name costs
time, never a wrong field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from playbook.errors import PlaybookError

# Prefixes tried, most specific first, when the caller does not give one.
COMMON_PREFIXES = (
    "%m [%p] %q%u@%d ",  # Debian / Ubuntu
    "%t [%p-%l] %q%u@%d ",  # Debian before 10
    "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ",  # pgBadger's recommendation
    "%m [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ",
    "%t [%p]: user=%u,db=%d,app=%a,client=%h ",
    "%m [%p] user=%u,db=%d,app=%a,client=%h ",  # the same without the colon, seen in the field
    "%t [%p] user=%u,db=%d,app=%a,client=%h ",
    "%m [%p] %q[user=%u,db=%d,app=%a] ",
    "%t:%r:%u@%d:[%p]:",  # Amazon RDS
    "%m:%r:%u@%d:[%p]:",
    "%m [%p] ",  # PostgreSQL's own default since 10
    "%t [%p] ",
    "%m ",
    "%t ",
)

_TS = rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) ([A-Za-z0-9+:\-]+)"
_TS_NOCAP = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? [A-Za-z0-9+:\-]+"
_TEXT = rb"[^\n]*?"

# escape -> (field name or None when not kept, lenient regex)
_ESCAPES: dict[str, tuple[str | None, bytes]] = {
    "a": ("application", _TEXT),
    "u": ("user", _TEXT),
    "d": ("database", _TEXT),
    "r": ("host_port", rb"[^\s]*?"),
    "h": ("host", rb"[^\s]*?"),
    "L": (None, rb"[^\s]*?"),
    "b": (None, _TEXT),
    "p": ("pid", rb"\d+"),
    "P": (None, rb"\d*"),
    "t": ("ts", _TS),
    "m": ("ts", _TS),
    "n": ("epoch", rb"\d+(?:\.\d+)?"),
    "i": (None, _TEXT),
    "e": ("sqlstate", rb"[0-9A-Z]{5}"),
    "c": ("session_id", rb"[0-9a-f]+\.[0-9a-f]+"),
    "l": (None, rb"\d+"),
    "s": (None, _TS_NOCAP),
    "v": (None, rb"[^\s]*?"),
    "x": (None, rb"\d*"),
    "Q": (None, rb"-?\d*"),
}
# The same in RE2 for the fast form; None: the field's class is "anything but what follows".
_FAST: dict[str, str | None] = {
    "a": None, "u": None, "d": None, "r": None, "h": None, "L": None, "b": None, "i": None, "v": None,
    "p": r"\d+", "P": r"\d*", "t": None, "m": None, "n": r"\d+(?:\.\d+)?", "e": r"[0-9A-Z]{5}",
    "c": r"[0-9a-f]+\.[0-9a-f]+", "l": r"\d+", "s": r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? [^ ]+",
    "x": r"\d*", "Q": r"-?\d*",
}  # fmt: skip
_FAST_TS = (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?", r"[A-Za-z0-9+:\-]+")

_LEVEL_AND_MESSAGE = rb"([A-Z]+[0-9]?):  ([^\n]*(?:\n\t[^\n]*)*)"


@dataclass
class PrefixRegex:
    """The lenient regex of one stderr entry (matched from its leading newline)."""

    prefix: str
    regex: re.Pattern[bytes]
    fields: list[str]  # the name of each captured group, in order (then level and message)


def _tokens(prefix: str) -> list[tuple[str, str, bool]]:
    """(kind, text, padded) tokens: kind "lit" with its text, "esc" with its letter, or "q"."""
    out: list[tuple[str, str, bool]] = []
    i = 0
    while i < len(prefix):
        ch = prefix[i]
        if ch != "%" or i + 1 >= len(prefix):
            out.append(("lit", ch, False))
            i += 1
            continue
        j = i + 1
        padding = re.match(r"-?\d+", prefix[j:])
        if padding:
            j += padding.end()
        if j >= len(prefix):
            out.append(("lit", prefix[i:], False))
            break
        esc = prefix[j]
        i = j + 1
        if esc == "%":
            out.append(("lit", "%", False))
        elif esc == "q":
            out.append(("q", "", False))
        elif esc not in _ESCAPES:
            raise PlaybookError(f"the log_line_prefix {prefix!r} has an unknown escape %{esc}")
        else:
            out.append(("esc", esc, bool(padding)))
    return out


def compile_prefix(prefix: str) -> PrefixRegex:
    """The lenient regex matching one stderr entry (from its leading newline) for `prefix`."""
    parts: list[bytes] = []
    fields: list[str] = []
    optional_from: int | None = None
    literal = bytearray()

    def flush() -> None:
        if literal:
            parts.append(re.escape(bytes(literal)))
            literal.clear()

    for kind, text, padded in _tokens(prefix):
        if kind == "lit":
            literal.extend(text.encode())
            continue
        flush()
        if kind == "q":
            optional_from = len(parts)
            continue
        name, pattern = _ESCAPES[text]
        if name is None or name in fields or (name == "ts" and "epoch" in fields):
            # A second occurrence, or a field we do not keep: match it without capturing.
            pattern = re.sub(rb"\((?!\?)", b"(?:", pattern)
            parts.append(b" *" + pattern + b" *" if padded else pattern)
            continue
        if name != "ts":
            pattern = b"(" + pattern + b")"
        parts.append(b" *" + pattern + b" *" if padded else pattern)
        fields.append(name)
        if name == "ts":
            fields.append("tz")
    flush()
    if optional_from is not None:
        # After %q, non-session processes print nothing: the rest of the prefix is optional.
        parts[optional_from:] = [b"(?:" + b"".join(parts[optional_from:]) + b")?"]
    regex = re.compile(b"\n" + b"".join(parts) + _LEVEL_AND_MESSAGE)
    return PrefixRegex(prefix, regex, [*fields, "level", "message"])


@dataclass
class FastPrefix:
    """RE2 patterns for pyarrow's extract_regex, at most four captures each.

    RE2 extracts in one pass only for up to four groups; more make it several times slower, so
    the fields are taken in passes of up to four over the same anchored pattern. Every pattern ends
    with the level and its two spaces: an entry that matches the last pass matched the prefix.
    The %q part is required: lines of processes that are not sessions, which print nothing
    after it, are left to the lenient regex.
    """

    passes: list[tuple[str, list[str]]]  # (pattern, field names of its groups)


def fast_prefix(prefix: str, skip: frozenset[str] = frozenset()) -> FastPrefix:
    """The RE2 passes of `prefix`; fields named in `skip` are matched but not captured."""
    return FastPrefix(_passes([t for t in _tokens(prefix) if t[0] != "q"], skip))


def _passes(
    tokens: list[tuple[str, str, bool]], skip: frozenset[str] = frozenset()
) -> list[tuple[str, list[str]]]:
    # One pattern per token, in two forms: capturing and not.
    pieces: list[tuple[str, str, list[str]]] = []  # (capturing, plain, names)
    seen: set[str] = set()
    for i, (kind, text, padded) in enumerate(tokens):
        if kind == "lit":
            pieces.append((re.escape(text), re.escape(text), []))
            continue
        name = _ESCAPES[text][0]
        if text in "tm":
            cap = f"({_FAST_TS[0]}) ({_FAST_TS[1]})"
            plain = f"{_FAST_TS[0]} {_FAST_TS[1]}"
            names = ["ts", "tz"]
        else:
            fast = _FAST[text]
            if fast is None:
                following = next((t[1][0] for t in tokens[i + 1 :] if t[0] == "lit"), " ")
                stop = re.escape(following)
                fast = f"[^{stop}\\n]*" if following != "\n" else "[^\\n]*"
            cap, plain, names = f"({fast})", fast, [name or ""]
        if padded:
            cap, plain = f" *{cap} *", f" *{plain} *"
        keep = name is not None and name not in seen and not (name == "ts" and "epoch" in seen)
        if name in skip:
            seen.add(name)
            keep = False
        if keep and name is not None:
            seen.add(name)
        pieces.append((cap, plain, names) if keep else (plain, plain, []))
    captured = [p for p in pieces if p[2]]
    out: list[tuple[str, list[str]]] = []
    level = r"[A-Z]+[0-9]?:  "
    groups: list[list[tuple[str, str, list[str]]]] = [[]]
    for piece in captured:
        if sum(len(p[2]) for p in groups[-1]) + len(piece[2]) > 4:
            groups.append([])
        groups[-1].append(piece)
    for group in groups:
        wanted = {id(p) for p in group}
        pattern = "^" + "".join(p[0] if id(p) in wanted else p[1] for p in pieces)
        names = [n for p in pieces if id(p) in wanted for n in p[2]]
        out.append((pattern + level, names))
    return out


# FieldProgram's op codes (the OP_* of _scan.c, in the same order)
OP_LIT, OP_STOP, OP_DIGITS, OP_DIGITS0, OP_SIGNED, OP_SQLSTATE, OP_SESSION, OP_TS = range(8)
# escape -> op, for the escapes a program reads (the others keep a prefix on the regexes)
_PROGRAM_OPS = {
    "p": OP_DIGITS, "l": OP_DIGITS, "P": OP_DIGITS0, "x": OP_DIGITS0, "Q": OP_SIGNED, "e": OP_SQLSTATE,
    "c": OP_SESSION, "t": OP_TS, "m": OP_TS,
    **{esc: OP_STOP for esc, fast in _FAST.items() if fast is None and esc not in "tm"},
}  # fmt: skip
# what each op may read: a literal that starts with one of these could be read into the field
_OP_READS = {
    OP_DIGITS: "0123456789", OP_DIGITS0: "0123456789", OP_SIGNED: "-0123456789",
    OP_SQLSTATE: "", OP_SESSION: "0123456789abcdef.",
    OP_TS: "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+:-",
}  # fmt: skip


@dataclass(frozen=True)
class FieldProgram:
    """A prefix read left to right without going back (the compiled prefix_fields of _scan.c):
    the same fields as fast_prefix's RE2 passes wherever it applies, several times faster."""

    ops: tuple[tuple[int, bytes, int], ...]  # (op, literal, capture or -1)
    names: tuple[str, ...]  # the field of each capture


def field_program(prefix: str, skip: frozenset[str] = frozenset()) -> FieldProgram | None:
    """The program of `prefix` (%q's part required, fields in `skip` read but not captured), or
    None where reading could have to go back, which the regexes handle: a padded escape, one
    the program does not read, or a field followed by anything but a literal it cannot read."""
    tokens = [t for t in _tokens(prefix) if t[0] != "q"]
    merged: list[tuple[str, str, bool]] = []
    for token in tokens:  # consecutive literals as one
        if token[0] == "lit" and merged and merged[-1][0] == "lit":
            merged[-1] = ("lit", merged[-1][1] + token[1], False)
        else:
            merged.append(token)
    ops: list[tuple[int, bytes, int]] = []
    names: list[str] = []
    seen: set[str] = set()
    for i, (kind, text, padded) in enumerate(merged):
        if kind == "lit":
            ops.append((OP_LIT, text.encode(), -1))
            continue
        op = _PROGRAM_OPS.get(text)
        following = merged[i + 1] if i + 1 < len(merged) else None
        if op is None or padded or following is None or following[0] != "lit":
            return None
        first = following[1][0]
        if not first.isascii():
            return None  # RE2 reads bytes: a multibyte literal's class would stop at each of its bytes
        if op == OP_STOP:
            if first == "\n":
                return None
            literal = first.encode()
        else:
            if first in _OP_READS[op]:
                return None
            literal = b""
        name = _ESCAPES[text][0]
        capture = -1
        if name is not None and name not in seen and name not in skip and op != OP_TS:
            capture = len(names)
            names.append(name)
        if name is not None:
            seen.add(name)
        ops.append((op, literal, capture))
    if not ops or len(ops) > 48 or len(names) > 8:
        return None
    return FieldProgram(tuple(ops), tuple(names))


def detect_prefix(sample: bytes) -> str | None:
    """The common log_line_prefix that matches most lines of the sample, or None."""
    best, best_count = None, 0
    for prefix in COMMON_PREFIXES:
        count = len(compile_prefix(prefix).regex.findall(b"\n" + sample))
        if count > best_count:
            best, best_count = prefix, count
    return best

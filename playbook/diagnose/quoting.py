"""Names as users spell them, written where a fix puts them: SQL, pgbouncer.ini, DSNs, URLs, code.

A role, database or application name comes from the evidence as the server spelled it
(`billing-api`, `o"brien`, `MyApp`, `отчёты`). Written bare into a fix, the first two are syntax
errors and the third silently names another role (`myapp`: unquoted identifiers are folded to
lower case). Each function here writes a name the way its destination's own parser reads it back,
citing that parser. Pure functions, no driver: diagnose may not import psycopg.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from playbook.diagnose.sql_keywords import QUOTED_KEYWORDS

__all__ = [
    "QUOTED_INI_KEYS_SINCE",
    "UnwritableName",
    "dsn_pair",
    "dsn_value",
    "javascript_string",
    "pgbouncer_auth_file_line",
    "pgbouncer_connstr_value",
    "pgbouncer_ini_key",
    "pgbouncer_ini_key_needs_quotes",
    "python_string",
    "sql_identifier",
    "sql_literal",
    "uri_component",
]


class UnwritableName(ValueError):
    """The destination's syntax has no way to write this name (PgBouncer's ini keys cannot hold `'`)."""


# quote_identifier (src/backend/utils/adt/ruleutils.c): bare only when the first character is a-z
# or `_` and every other one a-z, 0-9 or `_` (not `$`, not upper case, not non-ASCII letters).
_BARE_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise ValueError(f"{what} {value!r} holds a NUL character, which no PostgreSQL name can")
    return value


def sql_identifier(name: str) -> str:
    """`name` as PostgreSQL's quote_ident writes it: bare when it is lower-case ASCII letters, digits
    and underscores not starting with a digit and not a keyword quote_ident quotes (every category
    but UNRESERVED_KEYWORD, from kwlist.h: see sql_keywords.py); else in double quotes, each
    embedded `"` doubled. The result names exactly `name`, never its lower-cased twin."""
    name = _text(name, "an identifier")
    if _BARE_IDENTIFIER.fullmatch(name) and name not in QUOTED_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    """`value` as PostgreSQL's quote_literal writes it: in single quotes with `'` doubled; when it
    holds a backslash, every backslash doubled too and the string prefixed E (quote.c,
    quote_literal_internal), so it reads the same whatever standard_conforming_strings is."""
    value = _text(value, "a literal")
    body = value.replace("'", "''")
    if "\\" in value:
        return "E'" + body.replace("\\", "\\\\") + "'"
    return "'" + body + "'"


# PgBouncer's ini parser (lib/usual/cfparser.c, parse_ini_file_internal): a bare key runs over
# isalnum() characters and `_.-*`; from PgBouncer 1.25.0 (libusual 6b7fc84, "Support quoted keys
# in config", March 2025) a key may also be in single quotes, read up to the next `'` with no
# escape at all. Before 1.25 no other key can be written (PgBouncer's docs say double quotes: the
# parser never read them; 1.18 refuses both). isalnum of a byte above 127 depends on the locale,
# so non-ASCII names are quoted too.
_BARE_INI_KEY = re.compile(r"[A-Za-z0-9_.\-*]+")
QUOTED_INI_KEYS_SINCE = "1.25.0"


def pgbouncer_ini_key(name: str) -> str:
    """`name` as the key of a [databases] or [users] line of pgbouncer.ini.

    Bare when PgBouncer reads it bare, else in single quotes, which only PgBouncer 1.25.0 and later
    read (see pgbouncer_ini_key_needs_quotes). Raises UnwritableName when the name holds a `'` or a
    line break (PgBouncer has no escape for them in a key) or is empty.
    """
    name = _text(name, "a pgbouncer.ini key")
    if _BARE_INI_KEY.fullmatch(name):
        return name
    if not name or "'" in name or "\n" in name or "\r" in name:
        raise UnwritableName(
            f"PgBouncer cannot read the name {name!r} as a pgbouncer.ini key (a key cannot hold a quote "
            "or a line break)"
        )
    return "'" + name + "'"


def pgbouncer_ini_key_needs_quotes(name: str) -> bool:
    """Whether `name` can only be a pgbouncer.ini key in quotes (PgBouncer 1.25.0 or later)."""
    return not _BARE_INI_KEY.fullmatch(_text(name, "a pgbouncer.ini key"))


def pgbouncer_connstr_value(value: str) -> str:
    """`value` as the value of a `key=value` pair on a [databases]/[users] line of pgbouncer.ini:
    bare when it holds no space or quote, else in single quotes with `'` doubled (src/loader.c,
    cstr_get_value and cstr_unquote_value: a bare value ends at the first space). Raises
    UnwritableName for an empty value (PgBouncer refuses empty values) or a line break."""
    value = _text(value, "a pgbouncer.ini value")
    if not value or "\n" in value or "\r" in value:
        raise UnwritableName(f"PgBouncer cannot read {value!r} as a value on a pgbouncer.ini line")
    if re.fullmatch(r"[^\s']+", value):
        return value
    return "'" + value.replace("'", "''") + "'"


def pgbouncer_auth_file_line(user: str, password: str) -> str:
    """One line of PgBouncer's auth_file: both fields in double quotes, an embedded `"` doubled
    (src/loader.c, load_auth_file, find_quote and copy_quoted)."""
    user = _text(user, "a user name")
    password = _text(password, "a password")
    return " ".join('"' + field.replace('"', '""') + '"' for field in (user, password))


# libpq's conninfo_parse (src/interfaces/libpq/fe-connect.c): a bare value runs to the next
# whitespace, a backslash escaping the next character; a quoted value is in single quotes, `\`
# escaping the next character (so `\'` and `\\`). Anything but these safe characters is quoted.
_BARE_DSN_VALUE = re.compile(r"[A-Za-z0-9_.\-/:+@,]+")
_DSN_KEY = re.compile(r"[a-z_]+")


def dsn_value(value: str | int) -> str:
    """`value` as libpq reads it in a `key=value` connection string."""
    text = (
        str(value) if isinstance(value, int) and not isinstance(value, bool) else _text(value, "a DSN value")
    )
    if _BARE_DSN_VALUE.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dsn_pair(key: str, value: str | int) -> str:
    """One `key=value` of a libpq connection string, the value quoted as libpq reads it."""
    if not isinstance(key, str) or not _DSN_KEY.fullmatch(key):
        raise ValueError(f"{key!r} is not a libpq connection parameter name")
    return f"{key}={dsn_value(value)}"


def uri_component(value: str) -> str:
    """`value` percent-encoded (UTF-8) for the user, password, database or a query value of a
    postgresql:// URI: libpq (conninfo_uri_parse_options) decodes every %XX; nothing but
    unreserved characters stays bare, so `@`, `/`, `:`, `?`, `&` and `=` never split the URI."""
    return quote(_text(value, "a URI component"), safe="")


def python_string(value: str) -> str:
    """`value` as a Python string literal (repr: escapes quotes, backslashes and control characters)."""
    return repr(_text(value, "a Python string"))


def javascript_string(value: str) -> str:
    """`value` as a JavaScript string literal: JSON's escaping, plus U+2028/U+2029 which JavaScript
    before ES2019 did not accept raw in a string."""
    text = json.dumps(_text(value, "a JavaScript string"), ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")

"""How a fix is written: Markdown prose with fenced blocks labelled by where each block goes.

A recommendation reads as a sentence or two of why, then the blocks to paste, each fenced with an
info string naming its destination, so a report can label them ("SQL to run", "DSN parameters",
"pool code (psycopg)", "pgbouncer.ini") and offer a copy button:

    sql         statements to run on the server (ALTER ROLE …, ALTER SYSTEM …)
    dsn         connection-string parameters to add
    python, javascript, java, properties
                the pool's code or configuration for the application's stack
    ini         pgbouncer.ini lines
    shell       commands or environment lines
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from playbook.diagnose.quoting import (
    QUOTED_INI_KEYS_SINCE,
    UnwritableName,
    pgbouncer_ini_key,
    pgbouncer_ini_key_needs_quotes,
    sql_identifier,
)
from playbook.evidence import Evidence
from playbook.evidence.views import app_samples

# How the evidence says it has no name for a role, database or application.
NO_NAME = frozenset({"", "(none)", "[unknown]"})

BlockKind = Literal["sql", "dsn", "python", "javascript", "java", "properties", "ini", "shell"]


def block(kind: BlockKind, text: str) -> str:
    """One fenced block, separated from the prose around it. The fence is longer than any run of
    backticks in the text (CommonMark's rule), so a name holding ``` cannot end the block early."""
    runs = [len(run) for run in re.findall(r"`+", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"\n\n{fence}{kind}\n{text.strip()}\n{fence}\n\n"


def sql(*statements: str) -> str:
    """Statements to run, one per line, each ending in a semicolon."""
    return block("sql", "\n".join(s.strip().rstrip(";") + ";" for s in statements))


def sql_name(name: str | None, placeholder: str) -> str:
    """A role or database name for a SQL fix: as quote_ident writes it (so `MyApp` names MyApp, not
    myapp), or `placeholder` (`<app_role>`) for the reader to fill in when the evidence names none.
    The evidence's own stand-ins for "no name" (empty, `(none)`, `[unknown]`) count as none."""
    if name is None or str(name) in NO_NAME:
        return placeholder
    return sql_identifier(str(name))


def app_login(evidence: Evidence) -> dict[str, str | None]:
    """The role and database the application's sampled sessions used, as keyword arguments of
    client_fixes.stack_fix: each None unless the samples name exactly one."""
    samples = app_samples(evidence)
    found: dict[str, str | None] = {}
    for key, column in (("role", "usename"), ("database", "datname")):
        names = set() if samples.empty or column not in samples else set(samples[column].dropna().astype(str))
        names -= NO_NAME
        found[key] = names.pop() if len(names) == 1 else None
    return found


def ini(*lines: str) -> str:
    """pgbouncer.ini lines under their section."""
    return block("ini", "[pgbouncer]\n" + "\n".join(lines))


def ini_users(users: Iterable[str], settings: str) -> str:
    """A [users] section of pgbouncer.ini giving each named user `settings` (e.g.
    `max_user_connections=<n>`), each name written as PgBouncer's ini parser reads it. A name that
    must be quoted is preceded by a comment saying so (PgBouncer reads quoted keys from 1.25.0 on;
    an older one refuses the whole file); a name it cannot read as a key at all (one holding a `'`)
    is said in prose instead."""
    lines, unwritable = [], []
    for user in users:
        if str(user) in NO_NAME:
            continue
        try:
            key = pgbouncer_ini_key(str(user))
        except UnwritableName:
            unwritable.append(str(user))
            continue
        if pgbouncer_ini_key_needs_quotes(str(user)):
            lines.append(f"; a quoted name needs PgBouncer {QUOTED_INI_KEYS_SINCE} or later")
        lines.append(f"{key} = {settings}")
    text = block("ini", "[users]\n" + "\n".join(lines)) if lines else ""
    if unwritable:
        names = ", ".join(repr(u) for u in unwritable)
        text += (
            f"PgBouncer cannot name {names} in a [users] line (its ini keys cannot hold a quote): "
            "set the cap in [pgbouncer] for every user instead."
        )
    return text


def dsn(params: str) -> str:
    return block("dsn", params)


def joined(*parts: str) -> str:
    """Prose and blocks into one recommendation, without runs of blank lines."""
    text = "".join(parts).strip()
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


_FENCE = re.compile(r"^(`{3,})([a-z]+)\n(.*?)\n\1$", re.MULTILINE | re.DOTALL)


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """(kind, text) of every fenced block of a recommendation, in order."""
    return [(kind, text) for _, kind, text in _FENCE.findall(markdown)]

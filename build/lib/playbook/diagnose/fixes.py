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
from typing import Literal

BlockKind = Literal["sql", "dsn", "python", "javascript", "java", "properties", "ini", "shell"]


def block(kind: BlockKind, text: str) -> str:
    """One fenced block, separated from the prose around it."""
    return f"\n\n```{kind}\n{text.strip()}\n```\n\n"


def sql(*statements: str) -> str:
    """Statements to run, one per line, each ending in a semicolon."""
    return block("sql", "\n".join(s.strip().rstrip(";") + ";" for s in statements))


def ini(*lines: str) -> str:
    """pgbouncer.ini lines under their section."""
    return block("ini", "[pgbouncer]\n" + "\n".join(lines))


def dsn(params: str) -> str:
    return block("dsn", params)


def joined(*parts: str) -> str:
    """Prose and blocks into one recommendation, without runs of blank lines."""
    text = "".join(parts).strip()
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


_FENCE = re.compile(r"^```([a-z]+)\n(.*?)\n```$", re.MULTILINE | re.DOTALL)


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """(kind, text) of every fenced block of a recommendation, in order."""
    return [(kind, text) for kind, text in _FENCE.findall(markdown)]

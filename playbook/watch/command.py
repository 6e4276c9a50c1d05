"""`playbook watch`: rolling evidence on disk (issue 19; being built)."""

from __future__ import annotations

import argparse

from playbook.errors import PlaybookError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise PlaybookError("playbook watch is not built yet")

"""`playbook stress`: a bounded concurrency test of a pool (issue 18; being built)."""

from __future__ import annotations

import argparse

from playbook.errors import PlaybookError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise PlaybookError("playbook stress is not built yet")

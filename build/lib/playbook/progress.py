"""Progress for anything that takes more than a couple of seconds, on stderr so stdout stays clean."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)
_stderr = console


@contextmanager
def progress_bar(
    description: str, *, total: float, enabled: bool = True
) -> Iterator[Callable[[float], None]]:
    """Yields `advance(completed)`; silent when disabled or when stderr is not a terminal."""
    if not enabled or not _stderr.is_terminal:
        yield lambda completed: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_stderr, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda completed: progress.update(task, completed=completed)

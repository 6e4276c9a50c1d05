"""Wait on evidence with a deadline: incidents are timing-driven, bare sleeps are flaky."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(AssertionError):
    """The evidence did not show up in time; the message says what was awaited."""


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str, poll: float = 0.05) -> T:
    """Call `check` until it returns something truthy and return that; raise after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= end:
            raise DeadlineExceeded(f"waited {timeout:.1f} s for {what}")
        time.sleep(poll)

"""The clock of a sampler: one tick every interval, a backoff while its session is lost.

The activity sampler and PgBouncer's console sampler tick the same way: the first tick at once,
the next ones on a fixed grid (a tick that overran skips the grid points it missed rather than
bunching up), and while the session is lost (the patient may be down) the next attempt comes
after a backoff that doubles up to max(interval, 5 s), never more than four intervals away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def tick_until(
    end: float,
    interval: float,
    tick: Callable[[], None],
    lost: Callable[[], bool],
    stopped: threading.Event,
    advance: Callable[[float], None],
) -> None:
    """Call `tick` from now until the monotonic time `end`, or until `stopped` is set; `lost`
    says after each tick whether the session is gone (then the backoff applies); `advance` is
    given the seconds elapsed since the start (a progress bar's)."""
    start = next_tick = time.monotonic()
    backoff = interval
    while True:
        tick()
        advance(min(time.monotonic(), end) - start)
        if lost():
            backoff = min(backoff * 2, max(interval, 5.0))
            next_tick = time.monotonic() + min(backoff, interval * 4)
        else:
            backoff = interval
            next_tick += interval
            while next_tick < time.monotonic():  # an overlong tick skips, never bunches up
                next_tick += interval
        if next_tick > end or stopped.wait(max(0.0, next_tick - time.monotonic())):
            return

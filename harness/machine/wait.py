"""The one way machine code waits: bounded, polled, and with an error that says why.

Every wait in `harness.machine` goes through `wait_until` (or, for loops that must do more
than poll, a `Deadline`), so none can hang a run and every timeout raises the error its
caller built, with the console tail where there is one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """A point in time `seconds` from now (monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def wait_until(check: Callable[[], T | None], *, timeout: float, interval: float,
               on_timeout: Callable[[], BaseException]) -> T:
    """Call `check` until it returns something other than None, and return that.

    `check` runs at least once, and once more after the deadline has passed only if the
    previous call started before it. It may raise to end the wait at once (a VM that
    exited, a unit that failed). After `timeout` seconds, `on_timeout()` is raised.
    """
    deadline = Deadline(timeout)
    while True:
        result = check()
        if result is not None:
            return result
        if deadline.expired():
            raise on_timeout()
        time.sleep(min(interval, max(deadline.remaining(), 0.01)))

"""A steady pace for progress lines in long runs (an integration's deliveries, a warehouse import's batches):
`Pacer.due()` is True at most every PROGRESS_EVERY_SECONDS, so a run's log shows it moving without flooding it."""

from __future__ import annotations

import time
from collections.abc import Callable

PROGRESS_EVERY_SECONDS = 10.0


class Pacer:
    def __init__(self, every: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.every = PROGRESS_EVERY_SECONDS if every is None else every  # read when the run starts
        self.clock = clock
        self.started = self._last = clock()

    def due(self) -> bool:
        now = self.clock()
        if now - self._last < self.every:
            return False
        self._last = now
        return True

    def elapsed(self) -> float:
        return self.clock() - self.started


def duration(seconds: float) -> str:
    """`13 s`, `2 min 05 s`, `1 h 04 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"

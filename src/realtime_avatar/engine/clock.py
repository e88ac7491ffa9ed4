"""Where the engine reads the time: the monotonic clock, or a fake one in tests."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]  # seconds, monotonic

monotonic: Clock = time.monotonic


class FakeClock:
    """A clock that moves only when told: turn-state tests run in milliseconds."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        """Move the time on by ``seconds``."""
        self.now_s += seconds

"""Clocks the tests move by hand, in place of Redis ``TIME`` and the wall clock."""

from __future__ import annotations


class ManualClock:
    """A clock tests move by hand (ms since the epoch)."""

    def __init__(self, start_ms: int = 1_790_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms

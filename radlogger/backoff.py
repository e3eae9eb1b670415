"""Exponential backoff with jitter: the one reconnect policy every driver uses."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays ``initial * factor**n`` capped at ``maximum``, each spread by +/- ``jitter``.

    Jitter keeps a farm of instruments that dropped together (a switch reboot) from
    reconnecting in lock step.  ``max_retries`` of 0 means retry forever.
    """

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0,
                 jitter: float = 0.1, max_retries: int = 0, rng: random.Random | None = None):
        if initial < 0 or maximum < 0 or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs initial >= 0, maximum >= 0, factor >= 1, "
                             "0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.max_retries = max_retries
        self.attempts = 0
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self.attempts = 0

    @property
    def exhausted(self) -> bool:
        return self.max_retries > 0 and self.attempts >= self.max_retries

    def next_delay(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        base = min(self.maximum, self.initial * self.factor ** self.attempts)
        self.attempts += 1
        if self.jitter:
            base *= 1.0 + self._rng.uniform(-self.jitter, self.jitter)
        return max(0.0, base)

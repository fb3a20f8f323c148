"""SPIRE's exponential back-off for the agent's start-up: how long to wait, and when to give up.

SPIRE's agent retries a failed node attestation 5 s later, then each wait 1.5 times the last
(randomised by ±10 %, at most 24 times the first), and gives up when the next wait would end
more than a minute after the first attempt (``bootstrapBackoffInterval``,
``bootstrapBackoffMaxElapsedTime``). An agent that cannot attest within that minute exits
with the reason, so a misconfiguration shows as a failed start, not as an agent that waits
forever.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["ATTESTATION_RETRY_INTERVAL", "ATTESTATION_RETRY_WINDOW", "Backoff"]

ATTESTATION_RETRY_INTERVAL = 5.0
"""Seconds before the first retry of node attestation (SPIRE's ``bootstrapBackoffInterval``)."""
ATTESTATION_RETRY_WINDOW = 60.0
"""Seconds after the first attempt within which attestation is retried (``bootstrapBackoffMaxElapsedTime``)."""

_MULTIPLIER = 1.5
_JITTER = 0.1
_MAX_INTERVAL_MULTIPLE = 24


class Backoff:
    """The waits between attempts, until the window is spent."""

    def __init__(self, interval: float, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        """Start counting ``window`` seconds now; the first wait is about ``interval``."""
        self._clock = clock
        self._start = clock()
        self._interval = interval
        self._max_interval = interval * _MAX_INTERVAL_MULTIPLE
        self._window = window

    @property
    def window(self) -> float:
        """The seconds, from the first attempt, within which attempts are retried."""
        return self._window

    def next_wait(self) -> float | None:
        """Seconds to wait before the next attempt, or None when it would end outside the window."""
        elapsed = self._clock() - self._start
        wait = self._interval * random.uniform(1 - _JITTER, 1 + _JITTER)  # noqa: S311 - spreading load
        self._interval = min(self._interval * _MULTIPLIER, self._max_interval)
        if elapsed + wait > self._window:
            return None
        return wait

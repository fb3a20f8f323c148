"""Waiting between attempts: the one back-off every retry loop of the daemons uses.

A failure is either *transient* — the other side is down, slow, busy or failed inside, and
waiting may cure it — or it is a *configuration error* or a refusal, which no wait cures. Each
loop decides which a failure is (for the server's answers, :func:`transient_status` says) and
only transient ones are waited out here; the rest are reported at once, by name.

The waits grow exponentially from ``interval`` (times ``multiplier``, randomised by
``jitter`` so that many agents do not retry in step), up to ``max_interval``; with a
``window`` the back-off is spent when the next wait would end more than ``window`` seconds
after the first attempt. SPIRE's agent start-up is one such loop: node attestation retried
5 s later, each wait 1.5 times the last (±10 %, at most 24 times the first), for a minute
(``bootstrapBackoffInterval``, ``bootstrapBackoffMaxElapsedTime``), so a misconfigured agent
fails its start instead of waiting forever.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = [
    "ATTESTATION_RETRY_INTERVAL",
    "ATTESTATION_RETRY_WINDOW",
    "TRANSIENT_STATUS_CODES",
    "Backoff",
    "attestation_backoff",
    "transient_status",
]

ATTESTATION_RETRY_INTERVAL = 5.0
"""Seconds before the first retry of node attestation (SPIRE's ``bootstrapBackoffInterval``)."""
ATTESTATION_RETRY_WINDOW = 60.0
"""Seconds after the first attempt within which attestation is retried (``bootstrapBackoffMaxElapsedTime``)."""

TRANSIENT_STATUS_CODES = frozenset({2, 4, 8, 10, 13, 14})
"""gRPC statuses that may pass by themselves: UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
ABORTED, INTERNAL (a cloud API behind the server is down, say) and UNAVAILABLE. Every other
status is an answer about the request or the set-up (invalid, denied, not found,
unimplemented, failed precondition) that the same request would get again."""


def transient_status(code: int) -> bool:
    """Whether a server's gRPC status ``code`` may pass by itself (see :data:`TRANSIENT_STATUS_CODES`)."""
    return code in TRANSIENT_STATUS_CODES


class Backoff:
    """The waits between attempts after transient failures."""

    def __init__(
        self,
        interval: float,
        *,
        multiplier: float = 1.5,
        jitter: float = 0.1,
        max_interval: float | None = None,
        window: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start counting now; the first wait is ``interval`` (± ``jitter`` of it)."""
        if interval <= 0 or multiplier < 1 or not 0 <= jitter < 1:
            raise ValueError("a back-off needs interval > 0, multiplier >= 1 and 0 <= jitter < 1")
        self._first = interval
        self._multiplier = multiplier
        self._jitter = jitter
        self._max_interval = max_interval if max_interval is not None else interval * 24
        self._window = window
        self._clock = clock
        self.reset()

    @property
    def window(self) -> float | None:
        """The seconds, from the first attempt, within which attempts are retried (None: for ever)."""
        return self._window

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits ``interval`` again, and the window restarts."""
        self._start = self._clock()
        self._interval = self._first

    def next_wait(self) -> float | None:
        """Seconds to wait before the next attempt, or None when that would end outside the window."""
        elapsed = self._clock() - self._start
        wait = self._interval * random.uniform(1 - self._jitter, 1 + self._jitter)  # noqa: S311 - spreading load
        self._interval = min(self._interval * self._multiplier, self._max_interval)
        if self._window is not None and elapsed + wait > self._window:
            return None
        return wait


def attestation_backoff() -> Backoff:
    """SPIRE's back-off for the agent's start-up (attestation, the first bundle fetch)."""
    return Backoff(ATTESTATION_RETRY_INTERVAL, window=ATTESTATION_RETRY_WINDOW)

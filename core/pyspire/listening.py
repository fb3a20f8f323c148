"""Listening sockets as SPIRE's: the kernel's full backlog, and calm when descriptors run out.

SPIRE's listeners come from Go's ``net.Listen``, which asks for the kernel's ``somaxconn``
(4096 on current Linux); asyncio asks for 100 unless told, so a burst of 500 workloads
connecting at once lost 89 of them. :func:`listen_backlog` is the number to pass.

When the process runs out of file descriptors, asyncio's accept loop reports every failed
``accept()`` to the event loop's exception handler, with a traceback: thousands a second.
:class:`AcceptExhaustionLog` reports it once per interval instead (with how many were not
reported); asyncio itself pauses accepting for a second and resumes, so serving goes on as
soon as descriptors are free again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

__all__ = ["AcceptExhaustionLog", "listen_backlog"]

_log = logging.getLogger(__name__)

_SOMAXCONN: Final = Path("/proc/sys/net/core/somaxconn")
_DEFAULT_BACKLOG: Final = 4096
"""Linux's own somaxconn default (since 5.4), when the kernel's setting cannot be read."""
_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def listen_backlog() -> int:
    """The listen backlog Go's ``net.Listen`` uses: the kernel's ``net.core.somaxconn``."""
    try:
        value = int(_SOMAXCONN.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_BACKLOG
    return value if value > 0 else _DEFAULT_BACKLOG


class AcceptExhaustionLog:
    """An event-loop exception handler that reports resource exhaustion in ``accept()`` once per interval."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        """Report at most once every ``interval`` seconds."""
        self._interval = interval
        self._clock = clock
        self._reported_at: float | None = None
        self._unreported = 0
        self._previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle ``loop``'s exceptions; everything else goes to the handler it had."""
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self._handle)

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        accepting = str(context.get("message", "")).startswith("socket.accept()")
        if not (accepting and isinstance(error, OSError) and error.errno in _EXHAUSTED):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = self._clock()
        if self._reported_at is not None and now - self._reported_at < self._interval:
            self._unreported += 1
            return
        _log.error(
            "Cannot accept connections: the process is out of file descriptors or memory; retrying every second",
            extra={
                "error": error.strerror,
                "socket": str(context.get("socket", "")),
                "unreported_since_last": self._unreported,
            },
        )
        self._reported_at = now
        self._unreported = 0

"""The stop request both daemons answer: SIGTERM or SIGINT.

A stop is requested once but is often repeated (systemd's stop followed by its own timeout,
an operator pressing Ctrl-C twice, a supervisor retrying). While the daemon is stopping a
repeat only sets the same event again. Once it has stopped, its exit code is decided, and a
late repeat must not turn that clean exit into death by signal: the handlers are replaced
by "ignore" before the event loop closes (closing the loop would otherwise restore the
default action, which kills the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

__all__ = ["stop_requested"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_requested() -> Iterator[asyncio.Event]:
    """An event set when SIGTERM or SIGINT arrives, for the life of the ``with`` block."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, event.set)
    try:
        yield event
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

"""A daemon's life between its signals: start, run until a stop is asked or it fails, stop.

The server and the agent live the same way. A stop asked while starting (an upstream CA slow
to answer, say) cancels the start. A start that fails for a reason the operator can fix (a
port taken, a plugin that cannot do its part) is reported in its own words with exit code 1,
not as a crash. Once running, a stop signal or the daemon's own failure (the agent's sync
giving up) ends it. In every case what had started is stopped again before the exit code is
returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from pyspire.signals import StopRequest

__all__ = ["Daemon", "serve_until_stopped"]


class Daemon(Protocol):
    """What :func:`serve_until_stopped` runs."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until_stopped(
    daemon: Daemon,
    stop: StopRequest,
    *,
    name: str,
    log: logging.Logger,
    refusals: tuple[type[BaseException], ...],
    failure: Callable[[], asyncio.Future[Any] | None] = lambda: None,
) -> int:
    """Run ``daemon`` until ``stop`` or its ``failure``; the exit code.

    ``refusals`` are the errors of a start that fails for the operator to fix; ``failure``,
    asked once started, is what ends when the daemon can no longer run (None: nothing does).
    """
    starting = asyncio.create_task(daemon.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return stop.exit_code
        try:
            starting.result()
        except refusals as err:
            log.error("%s failed to start: %s", name, err)
            return 1
        failing = failure()
        await asyncio.wait({stopping} if failing is None else {stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        if failing is not None and failing.done() and not failing.cancelled():
            log.error("%s stopping: %s", name, failing.exception())
            return 1
        log.info("Stopping the %s", name.lower())
        return stop.exit_code
    finally:
        stopping.cancel()
        await daemon.stop()

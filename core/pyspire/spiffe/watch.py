"""Keeping a Workload API stream open: reconnect with backoff, and run it for synchronous callers.

A source (:mod:`~pyspire.spiffe.x509source`, :mod:`~pyspire.spiffe.jwtsource`) watches one
stream for as long as it lives. When the agent restarts or the socket disappears, the watch
reconnects after a pause that grows with each failure and resets after the next message, as
go-spiffe's does; meanwhile the source keeps serving the last good material. Only one answer
ends the watch: ``INVALID_ARGUMENT``, which means the request itself is wrong (the security
header missing), so retrying cannot help.

Synchronous sources run their watch on a :class:`LoopThread`: an event loop in a daemon thread
of its own, so a blocking program (a WSGI server, a script) gets updates without an event loop
of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Final, Generic, TypeVar

from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError

__all__ = [
    "PERMANENT_STATUSES",
    "Backoff",
    "LoopThread",
    "SourceClosedError",
    "SourceCore",
    "SourceTimeoutError",
    "watch_forever",
]

T = TypeVar("T")
S = TypeVar("S")
log = logging.getLogger("pyspire.spiffe")

PERMANENT_STATUSES: Final = frozenset({"INVALID_ARGUMENT"})
"""Answers after which retrying cannot help (go-spiffe stops on the same one)."""

RETRYABLE: Final = (WorkloadApiError, OSError, ValueError)
"""What a watch survives: refusals and lost connections (WorkloadApiError), an unreachable agent
(OSError), a malformed answer (a document that does not parse is a ValueError: X509SvidError,
BundleError...)."""


class SourceTimeoutError(WorkloadApiError, TimeoutError):
    """A source got no usable answer from the agent in time; the message says what went wrong."""


class SourceClosedError(WorkloadApiError):
    """The source was closed: it holds no material any more."""


class Backoff:
    """Pauses between reconnections: ``initial``, then one ``initial`` more each time, up to ``maximum``."""

    def __init__(self, initial: float = 1.0, maximum: float = 30.0) -> None:
        """Go-spiffe's defaults: 1 s, 2 s, 3 s... and never more than 30 s."""
        if initial <= 0 or maximum < initial:
            raise ValueError(f"backoff needs 0 < initial <= maximum (got initial={initial}, maximum={maximum})")
        self.initial = initial
        self.maximum = maximum
        self._failures = 0

    def next(self) -> float:
        """The pause before the next attempt (each call counts one more failure)."""
        self._failures += 1
        return min(self.initial * self._failures, self.maximum)

    def reset(self) -> None:
        """A message arrived: the next failure starts from ``initial`` again."""
        self._failures = 0


async def watch_forever(
    open_stream: Callable[[], AsyncIterator[T]],
    on_update: Callable[[T], None],
    on_error: Callable[[BaseException], None],
    backoff: Backoff,
) -> None:
    """Hand every item of the stream to ``on_update``, reopening it after each failure.

    ``on_error`` hears of each failure before the pause, and of an ``on_update`` that raised
    (that item is dropped, the stream stays open). Runs until cancelled; raises
    :class:`WorkloadApiError` only for a :data:`PERMANENT_STATUSES` answer.
    """
    while True:
        try:
            async for item in open_stream():
                backoff.reset()
                try:
                    on_update(item)
                except Exception as err:  # a bad item must not end the watch
                    on_error(err)
            raise WorkloadApiError("the agent ended the stream", "UNAVAILABLE")
        except RETRYABLE as err:
            on_error(err)
            if isinstance(err, WorkloadApiError) and err.status in PERMANENT_STATUSES:
                raise
        pause = backoff.next()
        log.debug("Workload API watch: retrying in %.1f s", pause)
        await asyncio.sleep(pause)


class LoopThread:
    """An event loop running in a daemon thread; coroutines are submitted from any other thread."""

    def __init__(self, name: str) -> None:
        """Start the thread and its loop."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    @property
    def in_loop_thread(self) -> bool:
        """Whether the caller runs in this loop's thread (where blocking on it would deadlock)."""
        return threading.current_thread() is self._thread

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the loop and wait for its result (TimeoutError after ``timeout``)."""
        if self.in_loop_thread:
            coroutine.close()
            raise RuntimeError("a source's blocking call was made from its own update callback")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        done, _ = concurrent.futures.wait([future], timeout)
        if not done:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout} s")
        return future.result()

    def stop(self) -> None:
        """Stop the loop and wait for the thread (pending tasks must have been cancelled first)."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        if not self.in_loop_thread:
            self._thread.join()


class SourceCore(Generic[T, S]):
    """What every source does: own a client, watch one stream, keep the latest accepted value.

    ``stream`` opens the watch on a client; ``accept`` turns each item into the value the
    source serves (raising drops the item: the last good value stays). Subscribers are called
    in the watch's event loop with each new value; one that raises is logged and kept.
    """

    def __init__(
        self,
        what: str,
        address: str | None,
        *,
        timeout: float,
        backoff: Backoff | None,
        stream: Callable[[WorkloadApiClient], AsyncIterator[T]],
        accept: Callable[[T], S],
    ) -> None:
        """Nothing runs until :meth:`start`; ``what`` names the material in messages ("X.509 context")."""
        if timeout <= 0:
            raise ValueError(f"timeout must be positive (got {timeout})")
        self._what = what
        self._address = address
        self._timeout = timeout
        self._backoff = backoff or Backoff()
        self._stream = stream
        self._accept = accept
        self._value: S | None = None
        self._generation = 0
        self._subscribers: list[Callable[[S], None]] = []
        self._last_error: BaseException | None = None
        self._client: WorkloadApiClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Event | None = None
        self._closed = False

    @property
    def client(self) -> WorkloadApiClient:
        """The client the watch uses (for the one-off calls of a source: FetchJWTSVID...)."""
        if self._closed or self._client is None:
            raise SourceClosedError(f"the {self._what} source is closed")
        return self._client

    @property
    def value(self) -> S:
        """The latest accepted value."""
        if self._closed or self._value is None:
            raise SourceClosedError(f"the {self._what} source is closed")
        return self._value

    @property
    def generation(self) -> int:
        """Counts accepted values: it changes exactly when the value does."""
        return self._generation

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or :meth:`start` failed)."""
        return self._closed

    def subscribe(self, callback: Callable[[S], None]) -> Callable[[], None]:
        """Call ``callback(value)`` on every update from now on; returns a function that stops it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def start(self) -> None:
        """Connect and wait for the first value (raises SourceTimeoutError or WorkloadApiError)."""
        if self._task is not None or self._closed:
            raise RuntimeError(f"the {self._what} source was already started")
        self._client = WorkloadApiClient(self._address, timeout=self._timeout)
        self._first = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._watch(), name=f"pyspire {self._what} watch")
        waiter = asyncio.ensure_future(self._first.wait())
        try:
            await asyncio.wait({waiter, self._task}, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._value is not None:
            return
        permanent = self._task.done()  # the watch gave up by itself
        await self.close()
        reason = f"{self._last_error}" if self._last_error is not None else "no answer"
        message = f"no {self._what} from the Workload API at {self._client.endpoint}"
        if permanent:
            raise WorkloadApiError(f"{message}: {reason}", getattr(self._last_error, "status", None))
        raise SourceTimeoutError(f"{message} within {self._timeout:g} s: {reason}", "DEADLINE_EXCEEDED")

    async def _watch(self) -> None:
        client = self.client
        try:
            await watch_forever(lambda: self._stream(client), self._update, self._failed, self._backoff)
        except WorkloadApiError as err:  # permanent: retrying cannot help
            log.error("Workload API: the %s watch stopped: %s", self._what, err)

    def _update(self, item: T) -> None:
        value = self._accept(item)
        self._value = value
        self._generation += 1
        self._last_error = None
        if self._first is not None:
            self._first.set()
        for callback in list(self._subscribers):
            try:
                callback(value)
            except Exception:
                log.exception("A %s subscriber failed", self._what)

    def _failed(self, err: BaseException) -> None:
        self._last_error = err
        if self._value is not None:
            log.warning("Workload API: %s watch failed, keeping the last one: %s", self._what, err)

    async def close(self) -> None:
        """Stop watching and drop the connection; the material is gone (idempotent)."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            self._client.close()

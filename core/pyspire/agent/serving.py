"""What the Workload API and Envoy SDS share: who is calling, and the streams that are open.

Both APIs hand out the same identities on the same socket, so they must decide who the caller
is in exactly one way: from the process pinned when the connection was accepted
(:class:`pyspire.transport.PinnedCaller`), never from the request, with every configured
WorkloadAttestor contributing. A failing attestor fails the call (UNAVAILABLE) rather than
serving an identity chosen on partial facts. The pinned process is checked before and after
attestation (same process, start time and owner), so a process that exited, whose PID was
reused before or during the call, can never receive the identity of what runs under its PID.

Open streams hold a cache subscription (their SVIDs are minted at once and never evicted) and
all end with UNAVAILABLE when the agent shuts down, never with OK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.cache import WorkloadCache
from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import WorkloadAttestor
from pyspire.plugin.selectors import Selector
from pyspire.telemetry.metrics import NO_METRICS, Metrics
from pyspire.telemetry.tracing import start_span
from pyspire.transport import pinned_caller

__all__ = ["SECURITY_HEADER", "CallerAttestor", "OpenStreams", "check_security_header", "log_matched_entries"]

SECURITY_HEADER = "workload.spiffe.io"
"""The header (value ``true``) a caller sends to show it means to call the agent (anti-SSRF)."""

_log = logging.getLogger(__name__)


def check_security_header(stream: Any, remedy: str = "") -> None:
    """INVALID_ARGUMENT unless the request carries exactly one ``workload.spiffe.io: true``.

    A repeated or differently spelt header is a client not following the standard, and gets
    nothing; ``remedy`` is added to the message (how to send it).
    """
    metadata = stream.metadata
    if (metadata.getall(SECURITY_HEADER, []) if metadata is not None else []) != ["true"]:
        raise GRPCError(Status.INVALID_ARGUMENT, "security header missing from request" + remedy)


class CallerAttestor:
    """The selectors of the process at the other end of a Unix-socket stream."""

    def __init__(self, attestors: Sequence[WorkloadAttestor], metrics: Metrics = NO_METRICS) -> None:
        """Attest callers with every one of ``attestors`` (their selectors are united)."""
        self._attestors = tuple(attestors)
        self._metrics = metrics

    async def attest(self, stream: Any) -> frozenset[Selector]:
        """The caller's selectors; raises GRPCError when it cannot be attested."""
        process = pinned_caller(stream)
        if process is None:
            raise GRPCError(Status.UNAUTHENTICATED, "unable to determine the calling process")
        if not process.alive():
            raise _replaced()
        with (
            self._metrics.call("workload_api", "workload_attestation"),
            start_span("agent.workload_attestation", attributes={"pyspire.pid": process.pid}),
        ):
            selectors = await self.attest_pid(process.pid)
            if not process.alive():
                raise _replaced()
        self._metrics.add_sample(("workload_api", "discovered_selectors"), len(selectors))
        _log.debug(
            "PID attested to have selectors",
            extra={
                "pid": process.pid,
                "uid": process.credentials.uid,
                "selectors": ",".join(sorted(str(selector) for selector in selectors)),
            },
        )
        return selectors

    async def attest_pid(self, pid: int) -> frozenset[Selector]:
        """The selectors of process ``pid`` from every attestor; GRPCError UNAVAILABLE if one fails.

        Whether ``pid`` is still the process meant is the caller's to check (the Workload API
        pins it to the socket's peer; a delegate naming a PID vouches for it, as in SPIRE).
        """
        selectors: set[Selector] = set()
        for attestor in self._attestors:
            try:
                with self._metrics.call("workload_api", "workload_attestor", labels=(("attestor", attestor.name),)):
                    selectors.update(await asyncio.to_thread(attestor.attest, pid))
            except PluginError as err:
                _log.error("Workload attestor failed", extra={"attestor": attestor.name, "pid": pid, "error": str(err)})
                raise GRPCError(
                    Status.UNAVAILABLE, f"workload attestor {attestor.name!r} failed: {err.message}"
                ) from None
        return frozenset(selectors)


def _replaced() -> GRPCError:
    _log.warning("The calling process exited or its PID was reused: no identity")
    return GRPCError(Status.PERMISSION_DENIED, "the calling process exited or was replaced: no identity issued")


def log_matched_entries(cache: WorkloadCache, selectors: frozenset[Selector]) -> None:
    """The debug line saying which entries a caller's selectors matched (none is logged as such too)."""
    if not _log.isEnabledFor(logging.DEBUG):
        return
    matched = cache.matching(selectors)
    _log.debug(
        "Entries matched the caller's selectors",
        extra={
            "count": len(matched),
            "entry_ids": ",".join(entry.id for entry in matched),
            "spiffe_ids": ",".join(str(entry.spiffe_id) for entry in matched),
        },
    )


class OpenStreams:
    """The streams open on one cache, and the shutdown that ends them."""

    def __init__(self, cache: WorkloadCache) -> None:
        """Track streams that follow ``cache``."""
        self.cache = cache
        self._stopping = asyncio.Event()
        self._count = 0
        self._drained = asyncio.Event()
        self._drained.set()

    @contextlib.contextmanager
    def open(self, selectors: frozenset[Selector]) -> Iterator[None]:
        """Hold a stream open for a caller with ``selectors``."""
        self.check_running()
        log_matched_entries(self.cache, selectors)
        self._count += 1
        self._drained.clear()
        try:
            with self.cache.subscription(selectors):
                yield
        finally:
            self._count -= 1
            if not self._count:
                self._drained.set()

    def check_running(self) -> None:
        """Raise UNAVAILABLE once the agent is shutting down."""
        if self._stopping.is_set():
            raise GRPCError(Status.UNAVAILABLE, "the agent is shutting down")

    async def next_change(self, generation: int) -> int:
        """Wait until the cache moves past ``generation`` (UNAVAILABLE if the agent stops first)."""
        change = asyncio.ensure_future(self.cache.wait_for_change(generation))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({change, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            change.cancel()
            stopping.cancel()
        self.check_running()
        return self.cache.generation

    async def stop(self, timeout: float = 5.0) -> None:
        """End every open stream with UNAVAILABLE, and wait (up to ``timeout``) until they have."""
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)

"""X509Source: a workload's X509-SVIDs and trust bundles, kept current from the Workload API.

A source connects to the agent once and watches the X.509 stream: every rotated SVID and every
bundle change replaces what it holds, and readers always get the newest. It is what
:mod:`pyspire.spiffe.tls` contexts present and verify with.

- :class:`X509Source` is synchronous: its watch runs on a daemon thread, and the constructor
  blocks until the first X.509 context arrives (or raises :class:`SourceTimeoutError` saying
  why not: no agent at the address, no identity issued to this process...).
- :class:`AsyncX509Source` is the same for asyncio code: ``async with AsyncX509Source() as
  source:``, or ``await source.start()``.

Both reconnect with backoff when the agent goes away and keep serving the last good material
meanwhile. When a workload has several SVIDs, the first one the agent lists is the default
(pyspire-agent lists the oldest entry first, spire-agent the lowest entry ID, which is
arbitrary); ``picker`` chooses one that does not depend on that, for example by hint::

    X509Source(picker=lambda svids: next(s for s in svids if s.hint == "internal"))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from pyspire.spiffe.bundle import Bundle
from pyspire.spiffe.bundleset import BundleSet
from pyspire.spiffe.spiffeid import TrustDomain
from pyspire.spiffe.watch import Backoff, LoopThread, SourceCore
from pyspire.spiffe.workloadapi import DEFAULT_TIMEOUT, X509Context
from pyspire.spiffe.x509svid import X509Svid

__all__ = ["AsyncX509Source", "SvidPicker", "X509Source"]

SvidPicker = Callable[[Sequence[X509Svid]], X509Svid]
"""Chooses the SVID a source serves among all of the workload's (called on every update)."""


@dataclass(frozen=True)
class _X509State:
    context: X509Context
    svid: X509Svid


def _picking(picker: SvidPicker | None) -> Callable[[X509Context], _X509State]:
    def accept(context: X509Context) -> _X509State:
        if picker is None:
            return _X509State(context, context.default_svid)
        try:
            chosen = picker(context.svids)
        except Exception as err:
            raise ValueError(f"the SVID picker failed: {type(err).__name__}: {err}") from err
        if not isinstance(chosen, X509Svid):
            raise TypeError(f"the SVID picker returned {type(chosen).__name__}, not an X509Svid")
        return _X509State(context, chosen)

    return accept


class AsyncX509Source:
    """The X.509 material of this workload for asyncio code, following every push of the agent."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        picker: SvidPicker | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        """``address`` defaults to ``SPIFFE_ENDPOINT_SOCKET``; ``timeout`` bounds the wait for the first context."""
        self._core: SourceCore[X509Context, _X509State] = SourceCore(
            "X.509 context",
            address,
            timeout=timeout,
            backoff=backoff,
            stream=lambda client: client.watch_x509_contexts(),
            accept=_picking(picker),
        )

    async def start(self) -> AsyncX509Source:
        """Connect and wait for the first X.509 context; raises SourceTimeoutError when none comes in time."""
        await self._core.start()
        return self

    async def close(self) -> None:
        """Stop watching; the source serves nothing afterwards."""
        await self._core.close()

    async def __aenter__(self) -> AsyncX509Source:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def svid(self) -> X509Svid:
        """The SVID to present: the default one, or the picker's choice."""
        return self._core.value.svid

    @property
    def svids(self) -> tuple[X509Svid, ...]:
        """All of the workload's X509-SVIDs, in the agent's order."""
        return self._core.value.context.svids

    @property
    def bundles(self) -> BundleSet:
        """The X.509 bundles to trust: the workload's trust domain's and every federated one (a copy)."""
        return BundleSet(self._core.value.context.bundles)

    @property
    def x509_context(self) -> X509Context:
        """The latest X.509 context as the agent sent it."""
        return self._core.value.context

    @property
    def generation(self) -> int:
        """Changes exactly when the material does (TLS contexts rebuild when it moves)."""
        return self._core.generation

    @property
    def closed(self) -> bool:
        """Whether the source was closed."""
        return self._core.closed

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> Bundle | None:
        """:class:`~pyspire.spiffe.BundleSource`: the X.509 bundle of ``trust_domain``, or None."""
        return self._core.value.context.bundles.get(trust_domain)

    def subscribe(self, callback: Callable[[X509Context], None]) -> Callable[[], None]:
        """Call ``callback(context)`` in the event loop on every update; returns the unsubscribe function."""
        return self._core.subscribe(lambda state: callback(state.context))


class X509Source:
    """The X.509 material of this workload for synchronous code; the watch runs on a thread of its own.

    The constructor returns once the first X.509 context has arrived. Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        picker: SvidPicker | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        """Connect to ``address`` (default ``SPIFFE_ENDPOINT_SOCKET``) and wait up to ``timeout`` s for a context."""
        self._source = AsyncX509Source(address, timeout=timeout, picker=picker, backoff=backoff)
        self._thread = LoopThread("pyspire-x509-source")
        try:
            self._thread.run(self._source.start())
        except BaseException:
            self._thread.stop()
            raise

    def close(self) -> None:
        """Stop watching and end the thread (idempotent)."""
        if not self._source.closed:
            self._thread.run(self._source.close())
        self._thread.stop()

    def __enter__(self) -> X509Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def svid(self) -> X509Svid:
        """The SVID to present: the default one, or the picker's choice."""
        return self._source.svid

    @property
    def svids(self) -> tuple[X509Svid, ...]:
        """All of the workload's X509-SVIDs, in the agent's order."""
        return self._source.svids

    @property
    def bundles(self) -> BundleSet:
        """The X.509 bundles to trust: the workload's trust domain's and every federated one (a copy)."""
        return self._source.bundles

    @property
    def x509_context(self) -> X509Context:
        """The latest X.509 context as the agent sent it."""
        return self._source.x509_context

    @property
    def generation(self) -> int:
        """Changes exactly when the material does (TLS contexts rebuild when it moves)."""
        return self._source.generation

    @property
    def closed(self) -> bool:
        """Whether the source was closed."""
        return self._source.closed

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> Bundle | None:
        """:class:`~pyspire.spiffe.BundleSource`: the X.509 bundle of ``trust_domain``, or None."""
        return self._source.get_bundle_for_trust_domain(trust_domain)

    def subscribe(self, callback: Callable[[X509Context], None]) -> Callable[[], None]:
        """Call ``callback(context)`` on every update, from the source's thread (keep it short).

        Returns the function that unsubscribes.
        """
        return self._source.subscribe(callback)

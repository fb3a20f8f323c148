"""JwtSource: JWT-SVIDs on request, and the JWT bundles to validate other workloads' tokens.

A source watches the agent's JWT bundle stream (new and revoked signing keys arrive as they are
published) and asks the agent for JWT-SVIDs when the workload needs one:

- :meth:`JwtSource.fetch_svid` — a JWT-SVID of this workload for an audience (the agent signs
  it, or returns one it cached);
- :meth:`JwtSource.validate` — check a token presented by a peer against the source's bundles,
  locally: signature, ``exp``/``nbf``, audience, and a key of the subject's own trust domain;
- :meth:`JwtSource.validate_with_agent` — the same check done by the agent (ValidateJWTSVID).

:class:`JwtSource` is synchronous (its watch runs on a daemon thread; the constructor blocks
until the first bundles arrive); :class:`AsyncJwtSource` is its asyncio twin. Both reconnect
with backoff when the agent goes away and keep the last bundles meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from pyspire.spiffe.bundle import Bundle
from pyspire.spiffe.bundleset import BundleSet
from pyspire.spiffe.jwtsvid import JwtSvid
from pyspire.spiffe.spiffeid import SpiffeId, TrustDomain
from pyspire.spiffe.watch import Backoff, LoopThread, SourceCore
from pyspire.spiffe.workloadapi import DEFAULT_TIMEOUT, WorkloadApiError

__all__ = ["AsyncJwtSource", "JwtSource"]


def _subject(spiffe_id: SpiffeId | str | None) -> str:
    if spiffe_id is None:
        return ""
    return str(spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id))


class AsyncJwtSource:
    """JWT-SVIDs and JWT bundles of this workload for asyncio code."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Backoff | None = None,
    ) -> None:
        """``address`` defaults to ``SPIFFE_ENDPOINT_SOCKET``; ``timeout`` bounds the wait for the first bundles
        and each fetch."""
        self._timeout = timeout
        self._core: SourceCore[BundleSet, BundleSet] = SourceCore(
            "JWT bundle set",
            address,
            timeout=timeout,
            backoff=backoff,
            stream=lambda client: client.watch_jwt_bundles(),
            accept=lambda bundles: bundles,
        )

    async def start(self) -> AsyncJwtSource:
        """Connect and wait for the first JWT bundles; raises SourceTimeoutError when none come in time."""
        await self._core.start()
        return self

    async def close(self) -> None:
        """Stop watching; the source serves nothing afterwards."""
        await self._core.close()

    async def __aenter__(self) -> AsyncJwtSource:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def fetch_svid(
        self, audience: str, *extra_audiences: str, spiffe_id: SpiffeId | str | None = None
    ) -> JwtSvid:
        """A JWT-SVID for ``audience`` (and ``extra_audiences``): the first the agent gives, or ``spiffe_id``'s."""
        return (await self.fetch_svids(audience, *extra_audiences, spiffe_id=spiffe_id))[0]

    async def fetch_svids(
        self, audience: str, *extra_audiences: str, spiffe_id: SpiffeId | str | None = None
    ) -> list[JwtSvid]:
        """One JWT-SVID for ``audience`` per identity of this workload (only ``spiffe_id``'s when given)."""
        if not audience:
            raise ValueError("a JWT-SVID needs an audience")
        svids = await self._core.client.fetch_jwt_svids([audience, *extra_audiences], _subject(spiffe_id))
        if not svids:
            raise WorkloadApiError("the agent answered without a JWT-SVID")
        return svids

    def validate(self, token: str, audience: str) -> JwtSvid:
        """``token`` checked against the source's bundles for ``audience`` (JwtSvidError says why not)."""
        return JwtSvid.parse_and_validate(token, self._core.value, [audience])

    async def validate_with_agent(self, token: str, audience: str) -> JwtSvid:
        """``token`` checked by the agent (ValidateJWTSVID); WorkloadApiError (INVALID_ARGUMENT) if invalid."""
        spiffe_id, _claims = await self._core.client.validate_jwt_svid(token, audience)
        svid = JwtSvid.parse_insecure(token, [audience])
        if svid.spiffe_id != spiffe_id:
            raise WorkloadApiError(
                f"the agent validated {token[:16]}... as {spiffe_id}, its subject is {svid.spiffe_id}"
            )
        return svid

    @property
    def bundles(self) -> BundleSet:
        """The JWT bundles to trust: this trust domain's and every federated one (a copy)."""
        return BundleSet(self._core.value)

    @property
    def generation(self) -> int:
        """Changes exactly when the bundles do."""
        return self._core.generation

    @property
    def closed(self) -> bool:
        """Whether the source was closed."""
        return self._core.closed

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> Bundle | None:
        """:class:`~pyspire.spiffe.BundleSource`: the JWT bundle of ``trust_domain``, or None."""
        return self._core.value.get(trust_domain)

    def subscribe(self, callback: Callable[[BundleSet], None]) -> Callable[[], None]:
        """Call ``callback(bundles)`` in the event loop on every update; returns the unsubscribe function."""
        return self._core.subscribe(callback)


class JwtSource:
    """JWT-SVIDs and JWT bundles of this workload for synchronous code; the watch runs on a thread of its own."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Backoff | None = None,
    ) -> None:
        """Connect to ``address`` (default ``SPIFFE_ENDPOINT_SOCKET``) and wait up to ``timeout`` s for the bundles."""
        self._timeout = timeout
        self._source = AsyncJwtSource(address, timeout=timeout, backoff=backoff)
        self._thread = LoopThread("pyspire-jwt-source")
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

    def __enter__(self) -> JwtSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def fetch_svid(self, audience: str, *extra_audiences: str, spiffe_id: SpiffeId | str | None = None) -> JwtSvid:
        """A JWT-SVID for ``audience`` (and ``extra_audiences``): the first the agent gives, or ``spiffe_id``'s."""
        return self._thread.run(self._source.fetch_svid(audience, *extra_audiences, spiffe_id=spiffe_id), self._timeout)

    def fetch_svids(
        self, audience: str, *extra_audiences: str, spiffe_id: SpiffeId | str | None = None
    ) -> list[JwtSvid]:
        """One JWT-SVID for ``audience`` per identity of this workload (only ``spiffe_id``'s when given)."""
        return self._thread.run(
            self._source.fetch_svids(audience, *extra_audiences, spiffe_id=spiffe_id), self._timeout
        )

    def validate(self, token: str, audience: str) -> JwtSvid:
        """``token`` checked against the source's bundles for ``audience`` (JwtSvidError says why not)."""
        return self._source.validate(token, audience)

    def validate_with_agent(self, token: str, audience: str) -> JwtSvid:
        """``token`` checked by the agent (ValidateJWTSVID); WorkloadApiError (INVALID_ARGUMENT) if invalid."""
        return self._thread.run(self._source.validate_with_agent(token, audience), self._timeout)

    @property
    def bundles(self) -> BundleSet:
        """The JWT bundles to trust: this trust domain's and every federated one (a copy)."""
        return self._source.bundles

    @property
    def generation(self) -> int:
        """Changes exactly when the bundles do."""
        return self._source.generation

    @property
    def closed(self) -> bool:
        """Whether the source was closed."""
        return self._source.closed

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> Bundle | None:
        """:class:`~pyspire.spiffe.BundleSource`: the JWT bundle of ``trust_domain``, or None."""
        return self._source.get_bundle_for_trust_domain(trust_domain)

    def subscribe(self, callback: Callable[[BundleSet], None]) -> Callable[[], None]:
        """Call ``callback(bundles)`` on every update, from the source's thread (keep it short).

        Returns the function that unsubscribes.
        """
        return self._source.subscribe(callback)

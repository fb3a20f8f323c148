"""The Workload API for synchronous code: one call, one answer, no event loop of the caller's.

:class:`~pyspire.spiffe.workloadapi.WorkloadApiClient` is asyncio; a script, a WSGI app or a
CLI tool that wants its SVID once should not have to run a loop for it. A
:class:`BlockingWorkloadApiClient` runs that client on a daemon thread of its own and waits
for each answer, at most ``timeout`` seconds::

    with BlockingWorkloadApiClient() as client:
        svid = client.fetch_x509_context().default_svid
        token = client.fetch_jwt_svids(["billing"])[0].token

A program that holds its identity for long (a server presenting an SVID that rotates) wants
:class:`~pyspire.spiffe.X509Source` or :class:`~pyspire.spiffe.JwtSource` instead: they keep
the material current and reconnect when the agent restarts. Each call here is one attempt:
an agent that is not there is a :class:`WorkloadApiError` (``UNAVAILABLE``) at once.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from pyspire.spiffe.bundleset import BundleSet
from pyspire.spiffe.jwtsvid import JwtSvid
from pyspire.spiffe.spiffeid import SpiffeId
from pyspire.spiffe.watch import LoopThread
from pyspire.spiffe.workloadapi import DEFAULT_TIMEOUT, WorkloadApiClient, WorkloadApiError, X509Context

__all__ = ["BlockingWorkloadApiClient"]

T = TypeVar("T")


async def _client(address: str | None, timeout: float) -> WorkloadApiClient:
    # Made in the loop's thread: the client's channel belongs to that loop.
    return WorkloadApiClient(address, timeout=timeout)


async def _close(client: WorkloadApiClient) -> None:
    client.close()


class BlockingWorkloadApiClient:
    """A synchronous Workload API client for one agent socket; use ``with`` or call :meth:`close`."""

    def __init__(self, address: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """``address`` defaults to ``SPIFFE_ENDPOINT_SOCKET``; ``timeout`` bounds each call, in seconds."""
        if timeout <= 0:
            raise ValueError(f"timeout must be positive (got {timeout})")
        self._timeout = timeout
        self._closed = False
        self._thread = LoopThread("pyspire-workload-api")
        try:
            self._client = self._thread.run(_client(address, timeout))
        except BaseException:
            self._thread.stop()
            raise
        self.endpoint = self._client.endpoint

    def close(self) -> None:
        """Drop the connection and end the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._thread.run(_close(self._client))
        self._thread.stop()

    def __enter__(self) -> BlockingWorkloadApiClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, what: str, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise WorkloadApiError(f"the Workload API client for {self.endpoint} is closed")
        try:
            return self._thread.run(coroutine, self._timeout)
        except WorkloadApiError:
            raise
        except TimeoutError:
            raise WorkloadApiError(
                f"{what}: no answer from the Workload API at {self.endpoint} within {self._timeout:g} s",
                "DEADLINE_EXCEEDED",
            ) from None
        except OSError as err:
            raise WorkloadApiError(
                f"{what}: cannot reach the Workload API at {self.endpoint}: {err}", "UNAVAILABLE"
            ) from err

    def fetch_x509_context(self) -> X509Context:
        """This workload's X509-SVIDs (the default first) and the bundles it may trust."""
        return self._call("FetchX509SVID", self._client.fetch_x509_context())

    def fetch_x509_bundles(self) -> BundleSet:
        """The X.509 bundles the workload may trust."""
        return self._call("FetchX509Bundles", self._client.fetch_x509_bundles())

    def fetch_jwt_bundles(self) -> BundleSet:
        """The JWT bundles the workload may trust (to validate tokens locally)."""
        return self._call("FetchJWTBundles", self._client.fetch_jwt_bundles())

    def fetch_jwt_svids(self, audience: Sequence[str], spiffe_id: SpiffeId | str | None = None) -> list[JwtSvid]:
        """JWT-SVIDs for ``audience``, one per identity (only ``spiffe_id``'s when given); parsed, not validated."""
        if isinstance(audience, str):
            raise TypeError("audience is a list of audiences, not one string")
        if not audience or not all(audience):
            raise ValueError("a JWT-SVID needs an audience")
        subject = "" if spiffe_id is None else str(SpiffeId.parse(str(spiffe_id)))
        return self._call("FetchJWTSVID", self._client.fetch_jwt_svids(list(audience), subject))

    def validate_jwt_svid(self, token: str, audience: str) -> tuple[SpiffeId, dict[str, object]]:
        """The agent's check of ``token`` for ``audience`` (ValidateJWTSVID): its SPIFFE ID and claims.

        An invalid token is a :class:`WorkloadApiError` whose ``status`` is ``INVALID_ARGUMENT``.
        """
        return self._call("ValidateJWTSVID", self._client.validate_jwt_svid(token, audience))

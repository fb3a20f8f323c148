"""A Workload API client: how a workload gets its SVIDs and bundles from the local agent.

The address is the one given, else ``SPIFFE_ENDPOINT_SOCKET`` (``unix:///path`` or
``tcp://ip:port``). Every call carries the ``workload.spiffe.io: true`` header the standard
requires. Fetches return parsed, checked documents (:class:`X509Context`, :class:`JwtSvid`,
:class:`BundleSet`); watches yield a new value each time the agent pushes one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from google.protobuf.json_format import MessageToDict
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from pyspire.proto.spiffe.workload import workload_pb2 as pb
from pyspire.proto.spiffe.workload.service import SpiffeWorkloadAPIStub
from pyspire.spiffe.bundle import Bundle
from pyspire.spiffe.bundleset import BundleSet
from pyspire.spiffe.endpoint import TcpEndpoint, UnixEndpoint, endpoint_from_environment, parse_endpoint
from pyspire.spiffe.jwtsvid import JwtSvid
from pyspire.spiffe.spiffeid import SpiffeId, TrustDomain
from pyspire.spiffe.x509svid import X509Svid

__all__ = ["HEADER", "WorkloadApiClient", "WorkloadApiError", "X509Context"]

T = TypeVar("T")

HEADER = {"workload.spiffe.io": "true"}
DEFAULT_TIMEOUT = 30.0


class WorkloadApiError(Exception):
    """The agent refused the call or sent something that is not a valid document.

    ``status`` is the gRPC status name the agent answered with (``"PERMISSION_DENIED"``...), or
    None when the agent answered but its answer was not usable.
    """

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def _agent_errors() -> Iterator[None]:
    """The agent's refusals and a lost connection as WorkloadApiError, grpclib's own types kept inside.

    A connection the agent drops mid-call (it restarts, or runs short of descriptors) is
    UNAVAILABLE, as gRPC's own clients (go-spiffe's, java-spiffe's) report it: one error type
    and one status for callers to retry on.
    """
    try:
        yield
    except GRPCError as err:
        raise WorkloadApiError(f"{err.status.name}: {err.message}", err.status.name) from err
    except (StreamTerminatedError, ProtocolError) as err:
        raise WorkloadApiError(f"UNAVAILABLE: the connection to the agent was lost: {err}", "UNAVAILABLE") from err


@dataclass(frozen=True)
class X509Context:
    """A workload's X509-SVIDs (the first is the default) and the bundles it may trust."""

    svids: tuple[X509Svid, ...]
    bundles: BundleSet

    @property
    def default_svid(self) -> X509Svid:
        return self.svids[0]


def _x509_context(response: pb.X509SVIDResponse) -> X509Context:
    if not response.svids:
        raise WorkloadApiError("the agent sent an X.509 context without SVIDs")
    svids = []
    bundles = BundleSet()
    for item in response.svids:
        svid = X509Svid.parse_raw(item.x509_svid, item.x509_svid_key, item.hint)
        if str(svid.spiffe_id) != item.spiffe_id:
            raise WorkloadApiError(f"SVID for {item.spiffe_id} carries {svid.spiffe_id}")
        svids.append(svid)
        trust_domain = svid.spiffe_id.trust_domain
        if trust_domain not in bundles:
            bundles.put(Bundle.parse_x509_der(trust_domain, item.bundle))
    for td_id, der in response.federated_bundles.items():
        trust_domain = _trust_domain(td_id)
        bundles.put(Bundle.parse_x509_der(trust_domain, der))
    return X509Context(tuple(svids), bundles)


async def _first(stream: AsyncGenerator[T, None], empty: str) -> T:
    """The first item of a watch; the stream is closed at once rather than when collected."""
    async with aclosing(stream) as items:
        async for item in items:
            return item
    raise WorkloadApiError(empty)


def _trust_domain(text: str) -> TrustDomain:
    return SpiffeId.parse(text).trust_domain if text.startswith("spiffe://") else TrustDomain.parse(text)


def _integral(value: Any) -> Any:
    """Claims travel as a protobuf Struct, whose numbers are doubles: give back ``exp`` as 1700000000."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


class WorkloadApiClient:
    """An async client for one agent socket; use ``async with``."""

    def __init__(self, address: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connect to ``address`` (or ``SPIFFE_ENDPOINT_SOCKET``)."""
        endpoint: UnixEndpoint | TcpEndpoint | None = (
            parse_endpoint(address) if address else endpoint_from_environment()
        )
        if endpoint is None:
            raise WorkloadApiError("no Workload API address: pass one or set SPIFFE_ENDPOINT_SOCKET")
        self.endpoint = endpoint
        self._timeout = timeout
        if isinstance(endpoint, UnixEndpoint):
            self._channel = Channel(path=endpoint.path)
        else:
            self._channel = Channel(endpoint.host, endpoint.port)
        self._stub = SpiffeWorkloadAPIStub(self._channel)

    async def __aenter__(self) -> WorkloadApiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    async def fetch_x509_context(self) -> X509Context:
        """The current X.509 context (first message of the stream)."""
        return await _first(self.watch_x509_contexts(), "the agent closed the X.509 stream without an answer")

    async def watch_x509_contexts(self) -> AsyncGenerator[X509Context, None]:
        """Every X.509 context the agent pushes, as it pushes them."""
        with _agent_errors():
            async with self._stub.FetchX509SVID.open(metadata=HEADER) as stream:
                await stream.send_message(pb.X509SVIDRequest(), end=True)
                async for response in stream:
                    yield _x509_context(response)

    async def fetch_x509_bundles(self) -> BundleSet:
        """The X.509 bundles the workload may trust."""
        with _agent_errors():
            async with self._stub.FetchX509Bundles.open(metadata=HEADER) as stream:
                await stream.send_message(pb.X509BundlesRequest(), end=True)
                response = await stream.recv_message()
                await stream.cancel()
        if response is None:
            raise WorkloadApiError("the agent closed the bundle stream without an answer")
        return BundleSet(Bundle.parse_x509_der(_trust_domain(td), der) for td, der in response.bundles.items())

    async def fetch_jwt_bundles(self) -> BundleSet:
        """The JWT bundles the workload may trust."""
        return await _first(self.watch_jwt_bundles(), "the agent closed the bundle stream without an answer")

    async def watch_jwt_bundles(self) -> AsyncGenerator[BundleSet, None]:
        """The JWT bundles, again each time the agent pushes a change (a new or revoked key)."""
        with _agent_errors():
            async with self._stub.FetchJWTBundles.open(metadata=HEADER) as stream:
                await stream.send_message(pb.JWTBundlesRequest(), end=True)
                async for response in stream:
                    yield BundleSet(Bundle.parse_jwks(_trust_domain(td), jwks) for td, jwks in response.bundles.items())

    async def fetch_jwt_svids(self, audience: Sequence[str], spiffe_id: str = "") -> list[JwtSvid]:
        """JWT-SVIDs for ``audience`` (only ``spiffe_id``'s when given); parsed, not validated."""
        request = pb.JWTSVIDRequest(audience=list(audience), spiffe_id=spiffe_id)
        with _agent_errors():
            response = await self._stub.FetchJWTSVID(request, metadata=HEADER, timeout=self._timeout)
        return [JwtSvid.parse_insecure(item.svid, list(audience), hint=item.hint) for item in response.svids]

    async def validate_jwt_svid(self, token: str, audience: str) -> tuple[SpiffeId, dict[str, object]]:
        """Have the agent validate ``token`` for ``audience``: the SPIFFE ID and claims."""
        request = pb.ValidateJWTSVIDRequest(svid=token, audience=audience)
        with _agent_errors():
            response = await self._stub.ValidateJWTSVID(request, metadata=HEADER, timeout=self._timeout)
        return SpiffeId.parse(response.spiffe_id), _integral(MessageToDict(response.claims))

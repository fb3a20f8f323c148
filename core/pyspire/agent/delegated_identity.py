"""SPIRE's DelegatedIdentity API on the agent's admin socket.

A delegate is a trusted local process (a node-wide proxy, a CNI plugin) that obtains other
workloads' identities: it names a workload by selectors it vouches for, or by a PID the agent
attests. Who may do this is decided as SPIRE decides it: the caller is attested like any
workload (from the socket's peer credentials), and at least one SPIFFE ID of the entries it
matches must be listed in ``authorized_delegates``. Streams check that again on every update,
so removing the delegate's entry (or the delegate's registration changing) ends its streams.

Errors are SPIRE's: PERMISSION_DENIED "no identity issued" for a caller matching no entry,
"caller not configured as an authorized delegate" for one that is not listed; INVALID_ARGUMENT
unless exactly one of selectors and a non-zero PID is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.cache import WorkloadIdentity
from pyspire.agent.jwt_svids import JwtSvidIssuer
from pyspire.agent.rpc import typed_stream
from pyspire.agent.serving import CallerAttestor, OpenStreams
from pyspire.plugin.selectors import Selector
from pyspire.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_grpc
from pyspire.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as pb
from pyspire.proto.spire.api.types import types_pb2
from pyspire.rpc_stream import ApiStream
from pyspire.spiffe import Bundle, SpiffeId

__all__ = ["DelegatedIdentityService"]

_log = logging.getLogger(__name__)


def _der(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certificates)


def _id_proto(spiffe_id: SpiffeId) -> types_pb2.SPIFFEID:
    return types_pb2.SPIFFEID(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


def _selectors_from_request(selectors: Sequence[types_pb2.Selector]) -> frozenset[Selector]:
    found = set()
    for selector in selectors:
        if not selector.type or ":" in selector.type or not selector.value:
            raise GRPCError(Status.INVALID_ARGUMENT, "could not parse provided selectors")
        found.add(Selector(selector.type, selector.value))
    return frozenset(found)


class DelegatedIdentityService(delegatedidentity_grpc.DelegatedIdentityBase):
    """SubscribeToX509SVIDs, SubscribeToX509Bundles, FetchJWTSVIDs, SubscribeToJWTBundles."""

    def __init__(
        self,
        streams: OpenStreams,
        caller: CallerAttestor,
        issuer: JwtSvidIssuer,
        authorized_delegates: Sequence[SpiffeId],
    ) -> None:
        """Serve ``streams.cache`` to the delegates listed; callers (and PIDs) attested by ``caller``."""
        self._streams = streams
        self._cache = streams.cache
        self._caller = caller
        self._issuer = issuer
        self._delegates = frozenset(authorized_delegates)

    def _authorize(self, caller: frozenset[Selector]) -> None:
        entries = self._cache.matching(caller)
        if not entries:
            _log.error(
                "No identity issued to a DelegatedIdentity caller", extra={"selectors": sorted(map(str, caller))}
            )
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        for entry in entries:
            if entry.spiffe_id in self._delegates:
                _log.debug("Caller authorized as delegate", extra={"delegate_id": str(entry.spiffe_id)})
                return
        _log.error(
            "Permission denied; caller not configured as an authorized delegate",
            extra={"default_id": str(entries[0].spiffe_id), "registered_entries": len(entries)},
        )
        raise GRPCError(Status.PERMISSION_DENIED, "caller not configured as an authorized delegate")

    async def _authorized_caller(self, stream: Any) -> frozenset[Selector]:
        caller = await self._caller.attest(stream)
        self._authorize(caller)
        return caller

    async def _workload(self, pid: int, selectors: Sequence[types_pb2.Selector]) -> frozenset[Selector]:
        """The selectors of the workload the delegate asks for: given, or found by attesting ``pid``."""
        if bool(selectors) == bool(pid):
            raise GRPCError(Status.INVALID_ARGUMENT, "must provide either selectors or non-zero PID, but not both")
        if selectors:
            return _selectors_from_request(selectors)
        return await self._caller.attest_pid(pid)

    # --- X.509 -----------------------------------------------------------------------

    def _x509_svids(self, identities: list[WorkloadIdentity]) -> pb.SubscribeToX509SVIDsResponse:
        response = pb.SubscribeToX509SVIDsResponse(
            federates_with=sorted(td.id_string() for td in self._cache.federated_bundles(i.entry for i in identities))
        )
        for identity in identities:
            if identity.entry.admin or identity.entry.downstream:
                continue  # a delegate never receives the powers of an admin or a downstream server
            chain = identity.svid.chain
            response.x509_svids.append(
                pb.X509SVIDWithKey(
                    x509_svid=types_pb2.X509SVID(
                        id=_id_proto(identity.entry.spiffe_id),
                        cert_chain=[c.public_bytes(serialization.Encoding.DER) for c in chain],
                        expires_at=int(chain[0].not_valid_after_utc.timestamp()),
                        hint=identity.entry.hint,
                    ),
                    x509_svid_key=identity.svid.private_key_der,
                )
            )
        return response

    @typed_stream
    async def SubscribeToX509SVIDs(
        self, stream: ApiStream[pb.SubscribeToX509SVIDsRequest, pb.SubscribeToX509SVIDsResponse]
    ) -> None:
        request = await stream.request()
        caller = await self._authorized_caller(stream.raw)
        workload = await self._workload(request.pid, request.selectors)
        last: pb.SubscribeToX509SVIDsResponse | None = None
        with self._streams.open(workload):
            while True:
                generation = self._cache.generation
                self._authorize(caller)
                identities = self._cache.identities(workload)
                # As SPIRE does, answer once every matched entry has its SVID (at once if none matches).
                if len(identities) == len(self._cache.matching(workload)):
                    response = self._x509_svids(identities)
                    if response != last:
                        await stream.send_message(response)
                        last = response
                await self._streams.next_change(generation)

    @typed_stream
    async def SubscribeToX509Bundles(
        self, stream: ApiStream[pb.SubscribeToX509BundlesRequest, pb.SubscribeToX509BundlesResponse]
    ) -> None:
        await stream.request()
        await self._stream_bundles(
            stream,
            lambda bundles: pb.SubscribeToX509BundlesResponse(
                ca_certificates={td: _der(b.x509_authorities) for td, b in bundles.items()}
            ),
        )

    # --- JWT -------------------------------------------------------------------------

    @typed_stream
    async def FetchJWTSVIDs(self, stream: ApiStream[pb.FetchJWTSVIDsRequest, pb.FetchJWTSVIDsResponse]) -> None:
        request = await stream.request()
        if not request.audience:
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        await self._authorized_caller(stream.raw)
        workload = await self._workload(request.pid, request.selectors)
        audience = tuple(request.audience)
        response = pb.FetchJWTSVIDsResponse()
        for entry in self._cache.matching(workload):
            svid = await self._issuer.issue(entry, audience)
            response.svids.append(
                types_pb2.JWTSVID(
                    token=svid.token,
                    id=_id_proto(entry.spiffe_id),
                    expires_at=int(svid.expires_at.timestamp()),
                    issued_at=int(svid.issued_at.timestamp()),
                    hint=entry.hint,
                )
            )
        if not response.svids:
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        await stream.send_message(response)

    @typed_stream
    async def SubscribeToJWTBundles(
        self, stream: ApiStream[pb.SubscribeToJWTBundlesRequest, pb.SubscribeToJWTBundlesResponse]
    ) -> None:
        await stream.request()
        await self._stream_bundles(
            stream,
            lambda bundles: pb.SubscribeToJWTBundlesResponse(
                bundles={td: b.marshal_jwks() for td, b in bundles.items()}
            ),
        )

    # --- bundles ---------------------------------------------------------------------

    async def _stream_bundles(self, stream: ApiStream[Any, Any], build: Callable[[dict[str, Bundle]], Any]) -> None:
        """Every bundle the agent holds (its own and all federated ones), again on each change.

        The full current set each time: a federated bundle the agent dropped is dropped here
        too (SPIRE keeps sending the last copy it saw; see docs/compatibility.md).
        """
        caller = await self._authorized_caller(stream.raw)
        last = None
        while True:
            self._streams.check_running()
            generation = self._cache.generation
            self._authorize(caller)
            bundles: dict[str, Bundle] = {}
            if self._cache.bundle is not None:
                bundles[self._cache.bundle.trust_domain.id_string()] = self._cache.bundle
            for trust_domain, bundle in self._cache.federated.items():
                bundles[trust_domain.id_string()] = bundle
            response = build(bundles)
            if response != last:
                await stream.send_message(response)
                last = response
            await self._streams.next_change(generation)

"""The SPIFFE Workload API, served on the agent's Unix socket.

Who is calling is decided as for Envoy SDS (:mod:`pyspire.agent.serving`), after the
standard's security header is checked.

Streams answer at once, push a full replacement whenever the cache changes, and end with
UNAVAILABLE (never OK) when the agent shuts down. As SPIRE does, a caller that matches no
entry gets PERMISSION_DENIED "no identity issued" (with the selectors it was found to have);
one that matches entries whose SVIDs are still being minted waits for them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import struct_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.cache import WorkloadIdentity
from pyspire.agent.jwt_svids import JwtSvidIssuer
from pyspire.agent.rpc import typed_stream
from pyspire.agent.serving import (
    SECURITY_HEADER,
    CallerAttestor,
    OpenStreams,
    check_security_header,
    log_matched_entries,
)
from pyspire.plugin.selectors import Selector
from pyspire.proto.spiffe.workload import workload_pb2 as pb
from pyspire.proto.spiffe.workload.service import SERVICE_NAME, SpiffeWorkloadAPIBase
from pyspire.rpc_stream import ApiStream
from pyspire.spiffe import Bundle, BundleSet, JwtSvid, JwtSvidError, SpiffeId, SpiffeIdError

__all__ = ["SECURITY_HEADER", "WorkloadApiService"]

_log = logging.getLogger(__name__)

_ALWAYS_RETURNED_CLAIMS = frozenset({"sub", "aud", "exp"})


def _no_identity(selectors: frozenset[Selector]) -> GRPCError:
    """PERMISSION_DENIED "no identity issued", saying (to the caller and in the log) what it was attested as.

    The selectors are the caller's own: telling it what it looks like to the agent is what
    lets an operator see why no entry matched.
    """
    found = ", ".join(sorted(map(str, selectors))) or "none"
    _log.error("No identity issued", extra={"registered": False, "selectors": found})
    return GRPCError(
        Status.PERMISSION_DENIED, f"no identity issued: no registration entry matches the caller's selectors ({found})"
    )


def _validation_error(err: JwtSvidError) -> str:
    """Why a token did not validate, in SPIRE's agent's words (not the library's, which go-spiffe's prefix)."""
    if err.code == "key_not_found":
        return f'public key "{err.key_id}" not found in trust domain "{err.trust_domain}"'
    return err.reason


def _der_chain(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certificates)


def _log_delivery(identities: list[WorkloadIdentity]) -> None:
    """SPIRE's debug line for each X509-SVID handed to a workload."""
    now = datetime.now(UTC)
    for identity in identities:
        _log.debug(
            "Fetched X.509 SVID",
            extra={
                "spiffe_id": str(identity.entry.spiffe_id),
                "ttl": round((identity.svid.not_after - now).total_seconds(), 3),
            },
        )


class WorkloadApiService(SpiffeWorkloadAPIBase):
    """The seven Workload API methods over the agent's cache."""

    def __init__(
        self,
        streams: OpenStreams,
        caller: CallerAttestor,
        issuer: JwtSvidIssuer,
        allowed_foreign_claims: Iterable[str] = (),
        *,
        allow_unauthenticated_verifiers: bool = False,
    ) -> None:
        """Serve ``streams.cache`` to callers attested by ``caller``; JWT-SVIDs come from ``issuer``.

        ``allowed_foreign_claims`` (``allowed_foreign_jwt_claims``) are the claims, beyond
        ``sub``, ``aud`` and ``exp``, that ValidateJWTSVID returns for a foreign token.

        ``allow_unauthenticated_verifiers`` (SPIRE's agent key) lets a caller that matches no
        entry fetch the agent's own trust domain bundle (X.509 and JWT), to verify what others
        present; federated bundles still go only to callers with an identity.
        """
        self._streams = streams
        self._cache = streams.cache
        self._caller = caller
        self._jwt = issuer
        self._allowed_foreign_claims = frozenset(allowed_foreign_claims)
        self._unauthenticated_verifiers = allow_unauthenticated_verifiers

    async def _attest(self, stream: Any) -> frozenset[Selector]:
        check_security_header(stream)
        return await self._caller.attest(stream)

    async def _next(self, generation: int) -> int:
        return await self._streams.next_change(generation)

    async def _identities(self, selectors: frozenset[Selector]) -> tuple[list[WorkloadIdentity], int]:
        """The caller's identities, waiting while matched entries still lack SVIDs."""
        generation = self._cache.generation
        while True:
            identities = self._cache.identities(selectors)
            if identities:
                return identities, generation
            if not self._cache.matching(selectors):
                raise _no_identity(selectors)
            generation = await self._next(generation)

    # --- X.509 -----------------------------------------------------------------------

    def _x509_response(self, identities: list[WorkloadIdentity]) -> pb.X509SVIDResponse:
        bundle = self._cache.bundle
        own = _der_chain(bundle.x509_authorities) if bundle else b""
        response = pb.X509SVIDResponse()
        hints: set[str] = set()
        for identity in identities:
            hint = identity.entry.hint
            if hint:
                if hint in hints:
                    continue
                hints.add(hint)
            response.svids.append(
                pb.X509SVID(
                    spiffe_id=str(identity.entry.spiffe_id),
                    x509_svid=_der_chain(identity.svid.chain),
                    x509_svid_key=identity.svid.private_key_der,
                    bundle=own,
                    hint=hint,
                )
            )
        for trust_domain, federated in self._cache.federated_bundles(i.entry for i in identities).items():
            response.federated_bundles[trust_domain.id_string()] = _der_chain(federated.x509_authorities)
        return response

    @typed_stream
    async def FetchX509SVID(self, stream: ApiStream[pb.X509SVIDRequest, pb.X509SVIDResponse]) -> None:
        await stream.request()
        selectors = await self._attest(stream.raw)
        last: pb.X509SVIDResponse | None = None
        with self._streams.open(selectors):
            while True:
                self._streams.check_running()
                identities, generation = await self._identities(selectors)
                response = self._x509_response(identities)
                if response != last:
                    await stream.send_message(response)
                    last = response
                    _log_delivery(identities)
                await self._next(generation)

    def _bundles_for(self, selectors: frozenset[Selector]) -> dict[str, Bundle]:
        entries = self._cache.matching(selectors)
        if self._cache.bundle is None or not (entries or self._unauthenticated_verifiers):
            raise _no_identity(selectors)
        bundles = {self._cache.bundle.trust_domain.id_string(): self._cache.bundle}
        for trust_domain, bundle in self._cache.federated_bundles(entries).items():
            bundles[trust_domain.id_string()] = bundle
        return bundles

    @typed_stream
    async def FetchX509Bundles(self, stream: ApiStream[pb.X509BundlesRequest, pb.X509BundlesResponse]) -> None:
        await stream.request()
        selectors = await self._attest(stream.raw)
        await self._stream_bundles(
            stream,
            selectors,
            lambda bundles: pb.X509BundlesResponse(
                bundles={td: _der_chain(b.x509_authorities) for td, b in bundles.items()}
            ),
        )

    @typed_stream
    async def FetchJWTBundles(self, stream: ApiStream[pb.JWTBundlesRequest, pb.JWTBundlesResponse]) -> None:
        await stream.request()
        selectors = await self._attest(stream.raw)
        await self._stream_bundles(
            stream,
            selectors,
            lambda bundles: pb.JWTBundlesResponse(bundles={td: b.marshal_jwks() for td, b in bundles.items()}),
        )

    async def _stream_bundles(self, stream: ApiStream[Any, Any], selectors: frozenset[Selector], build: Any) -> None:
        last = None
        with self._streams.open(selectors):
            while True:
                generation = self._cache.generation
                response = build(self._bundles_for(selectors))
                if response != last:
                    await stream.send_message(response)
                    last = response
                await self._next(generation)

    # --- JWT -------------------------------------------------------------------------

    @typed_stream
    async def FetchJWTSVID(self, stream: ApiStream[pb.JWTSVIDRequest, pb.JWTSVIDResponse]) -> None:
        request = await stream.request()
        if not request.audience:
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        wanted: SpiffeId | None = None
        if request.spiffe_id:
            try:
                wanted = SpiffeId.parse(request.spiffe_id)
            except SpiffeIdError as err:
                raise GRPCError(Status.INVALID_ARGUMENT, f"invalid requested SPIFFE ID: {err.reason}") from None
        selectors = await self._attest(stream.raw)
        log_matched_entries(self._cache, selectors)
        entries = self._cache.matching(selectors)
        if wanted is not None:
            entries = [e for e in entries if e.spiffe_id == wanted]
        if not entries:
            raise _no_identity(selectors)
        audience = tuple(request.audience)
        response = pb.JWTSVIDResponse()
        hints: set[str] = set()
        for entry in entries:
            if entry.hint:
                if entry.hint in hints:
                    continue
                hints.add(entry.hint)
            svid = await self._jwt.issue(entry, audience)
            token, expires_at = svid.token, svid.expires_at
            response.svids.append(pb.JWTSVID(spiffe_id=str(entry.spiffe_id), svid=token, hint=entry.hint))
            _log.debug(
                "Fetched JWT SVID",
                extra={
                    "spiffe_id": str(entry.spiffe_id),
                    "audience": ",".join(audience),
                    "ttl": round((expires_at - datetime.now(UTC)).total_seconds(), 3),
                },
            )
        await stream.send_message(response)

    @typed_stream
    async def ValidateJWTSVID(self, stream: ApiStream[pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse]) -> None:
        request = await stream.request()
        if not request.audience:
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        if not request.svid:
            raise GRPCError(Status.INVALID_ARGUMENT, "svid must be specified")
        selectors = await self._attest(stream.raw)
        # As SPIRE: the caller's own trust domain, and the trust domains its entries federate
        # with; never every bundle the agent holds for other workloads.
        bundles = BundleSet(self._cache.federated_bundles(self._cache.matching(selectors)).values())
        if self._cache.bundle is not None:
            bundles.put(self._cache.bundle)
        try:
            svid = JwtSvid.parse_and_validate(request.svid, bundles, [request.audience])
        except JwtSvidError as err:
            raise GRPCError(Status.INVALID_ARGUMENT, _validation_error(err)) from None
        claims = struct_pb2.Struct()
        claims.update(self._returned_claims(svid))
        await stream.send_message(pb.ValidateJWTSVIDResponse(spiffe_id=str(svid.spiffe_id), claims=claims))

    def _returned_claims(self, svid: JwtSvid) -> dict[str, Any]:
        """The claims a validation returns, as SPIRE returns them.

        A token of another trust domain keeps only ``sub``, ``aud``, ``exp`` and the claims
        named in ``allowed_foreign_jwt_claims``: its issuer's other claims (groups, roles)
        mean nothing here unless the operator says they do. ``aud`` is always a list.
        """
        claims = dict(svid.claims)
        if svid.spiffe_id.trust_domain != self._cache.trust_domain:
            allowed = _ALWAYS_RETURNED_CLAIMS | self._allowed_foreign_claims
            claims = {name: value for name, value in claims.items() if name in allowed}
        if isinstance(claims.get("aud"), str):
            claims["aud"] = [claims["aud"]]
        return claims

    # --- not offered -----------------------------------------------------------------

    # SPIRE v1.13's agent does not know the WIT methods: gRPC's answer for an unknown method.

    async def FetchWITSVID(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, f"unknown method FetchWITSVID for service {SERVICE_NAME}")

    async def FetchWITBundles(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, f"unknown method FetchWITBundles for service {SERVICE_NAME}")

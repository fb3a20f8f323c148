"""SPIRE's SVID service: minting for admins; signing for agents and downstream servers.

For agents the identity always comes from an entry authorized to the calling agent (an
entry ID the agent names but may not have is NotFound "entry not found or not authorized");
the CSR contributes only its public key (CVE-2021-27098). Only MintX509SVID, an admin call,
takes the SPIFFE ID from the CSR's URI SAN, as SPIRE does.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.crypto import CsrError, parse_csr
from pyspire.plugin.records import RegistrationEntry
from pyspire.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.rpc_stream import ApiStream
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.api.convert import (
    InvalidInput,
    id_to_proto,
    validate_dns_name,
    workload_id_from_proto,
    x509_svid_to_proto,
)
from pyspire.server.api.errors import status_message
from pyspire.server.api.unserved import unknown_method
from pyspire.server.context import ServerContext
from pyspire.spiffe import SpiffeId, SpiffeIdError

__all__ = ["SvidService"]

_SERVICE = "/spire.api.server.svid.v1.SVID/"
MAX_BATCH = 500


def _invalid(message: object) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, str(message))


class SvidService(svid_grpc.SVIDBase):
    """The SVID service (``spire.api.server.svid.v1.SVID``)."""

    def __init__(self, ctx: ServerContext) -> None:
        """Serve with the server's shared parts."""
        self.ctx = ctx

    def _x509_ttl(self, seconds: int) -> timedelta:
        return timedelta(seconds=seconds) if seconds > 0 else self.ctx.config.server.default_x509_svid_ttl

    def _jwt_ttl(self, seconds: int) -> timedelta:
        return timedelta(seconds=seconds) if seconds > 0 else self.ctx.config.server.default_jwt_svid_ttl

    def _authorized_entry(self, caller: Caller, entry_id: str) -> RegistrationEntry | None:
        node = caller.agent
        assert node is not None
        authorized = self.ctx.entries.authorized(node.spiffe_id, self.ctx.nodes.selectors(node.spiffe_id))
        return authorized.by_id.get(entry_id)

    @rpc(_SERVICE + "BatchNewX509SVID")
    async def BatchNewX509SVID(
        self, stream: ApiStream[svid_pb2.BatchNewX509SVIDRequest, svid_pb2.BatchNewX509SVIDResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        if not request.params:
            raise _invalid("missing parameters")
        if len(request.params) > MAX_BATCH:
            raise _invalid(f"too many CSRs in one batch: {len(request.params)} (at most {MAX_BATCH})")
        if len(request.params) > 1 and not self.ctx.rate_limits.allow(
            _SERVICE + "BatchNewX509SVID", caller.address, len(request.params) - 1
        ):
            raise GRPCError(Status.RESOURCE_EXHAUSTED, "rate limit exceeded: 500 signatures per second per address")
        work: list[tuple[int, RegistrationEntry, Any]] = []
        results: list[svid_pb2.BatchNewX509SVIDResponse.Result] = [
            svid_pb2.BatchNewX509SVIDResponse.Result() for _ in request.params
        ]
        pending: list[tuple[int, RegistrationEntry, bytes]] = []
        for index, param in enumerate(request.params):
            if not param.entry_id:
                results[index].status.CopyFrom(status_message(Status.INVALID_ARGUMENT, "missing entry ID"))
                continue
            entry = self._authorized_entry(caller, param.entry_id)
            if entry is None:
                results[index].status.CopyFrom(status_message(Status.NOT_FOUND, "entry not found or not authorized"))
                continue
            pending.append((index, entry, bytes(param.csr)))
        checked = await self.ctx.csr_verifier.check([csr for _, _, csr in pending])
        for (index, entry, _), public_key in zip(pending, checked, strict=True):
            if isinstance(public_key, CsrError):
                results[index].status.CopyFrom(status_message(Status.INVALID_ARGUMENT, f"malformed CSR: {public_key}"))
                continue
            work.append((index, entry, public_key))

        def sign_all() -> list[tuple[int, RegistrationEntry, list[x509.Certificate]]]:
            return [
                (
                    index,
                    entry,
                    self.ctx.issuer.sign_workload_x509_svid(
                        key, entry.spiffe_id, self._x509_ttl(entry.x509_svid_ttl), entry.dns_names
                    ),
                )
                for index, entry, key in work
            ]

        for index, entry, chain in await self.ctx.pools.sign_some(len(work), sign_all):
            results[index].status.CopyFrom(status_message(Status.OK, "OK"))
            results[index].svid.CopyFrom(x509_svid_to_proto(chain, entry.spiffe_id, entry.hint))
        await stream.send_message(svid_pb2.BatchNewX509SVIDResponse(results=results))

    @rpc(_SERVICE + "NewJWTSVID")
    async def NewJWTSVID(
        self, stream: ApiStream[svid_pb2.NewJWTSVIDRequest, svid_pb2.NewJWTSVIDResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        # SPIRE looks the entry up first: an empty or unknown ID is not found, whatever else is asked.
        entry = self._authorized_entry(caller, request.entry_id) if request.entry_id else None
        if entry is None:
            raise GRPCError(Status.NOT_FOUND, "entry not found or not authorized")
        if not request.audience:
            raise _invalid("at least one audience is required")
        svid = await self._mint_jwt(
            entry.spiffe_id,
            list(request.audience),
            self._jwt_ttl(entry.jwt_svid_ttl),
            entry.jwt_svid_include_jti,
            entry.hint,
        )
        await stream.send_message(svid_pb2.NewJWTSVIDResponse(svid=svid))

    async def _mint_jwt(
        self, spiffe_id: SpiffeId, audience: list[str], ttl: timedelta, include_jti: bool, hint: str = ""
    ) -> types_pb2.JWTSVID:
        if self.ctx.config.server.disable_jwt_svids:
            raise GRPCError(Status.FAILED_PRECONDITION, "JWT-SVIDs are disabled on this server")
        if any(not value for value in audience):
            raise _invalid("audience values must not be empty")
        minted = await self.ctx.pools.sign_one(
            functools.partial(self.ctx.issuer.mint_jwt_svid, include_jti=include_jti), spiffe_id, audience, ttl
        )
        return types_pb2.JWTSVID(
            token=minted.token,
            id=id_to_proto(spiffe_id),
            expires_at=minted.expires_at,
            issued_at=minted.issued_at,
            hint=hint,
        )

    @rpc(_SERVICE + "MintX509SVID")
    async def MintX509SVID(
        self, stream: ApiStream[svid_pb2.MintX509SVIDRequest, svid_pb2.MintX509SVIDResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        if not request.csr:
            raise _invalid("missing CSR")
        try:
            public_key = parse_csr(bytes(request.csr))
            csr = x509.load_der_x509_csr(bytes(request.csr))
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except CsrError as err:
            raise _invalid(f"malformed CSR: {err}") from None
        except x509.ExtensionNotFound:
            raise _invalid("CSR URI SAN is required") from None
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if not uris:
            raise _invalid("CSR URI SAN is required")
        if len(uris) > 1:
            raise _invalid("only one URI SAN is expected")
        try:
            spiffe_id = SpiffeId.parse(uris[0])
            workload_id_from_proto(id_to_proto(spiffe_id), self.ctx.trust_domain, "CSR URI SAN")
        except (SpiffeIdError, InvalidInput) as err:
            raise _invalid(f"CSR URI SAN is invalid: {err.reason}") from None
        try:
            dns_names = [validate_dns_name(name) for name in san.get_values_for_type(x509.DNSName)]
        except InvalidInput as err:
            raise _invalid(f"CSR DNS name is invalid: {err.reason}") from None
        if request.ttl < 0:
            raise _invalid("ttl must not be negative")
        chain = await self.ctx.pools.sign_one(
            self.ctx.issuer.sign_workload_x509_svid,
            public_key,
            spiffe_id,
            self._x509_ttl(request.ttl),
            dns_names,
            csr.subject,
        )
        await stream.send_message(svid_pb2.MintX509SVIDResponse(svid=x509_svid_to_proto(chain, spiffe_id)))

    @rpc(_SERVICE + "MintJWTSVID")
    async def MintJWTSVID(
        self, stream: ApiStream[svid_pb2.MintJWTSVIDRequest, svid_pb2.MintJWTSVIDResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        try:
            spiffe_id = workload_id_from_proto(
                request.id if request.HasField("id") else None, self.ctx.trust_domain, "SPIFFE ID"
            )
        except InvalidInput as err:
            raise _invalid(err) from None
        if not request.audience:
            raise _invalid("at least one audience is required")
        if request.ttl < 0:
            raise _invalid("ttl must not be negative")
        svid = await self._mint_jwt(spiffe_id, list(request.audience), self._jwt_ttl(request.ttl), False)
        await stream.send_message(svid_pb2.MintJWTSVIDResponse(svid=svid))

    @rpc(_SERVICE + "NewDownstreamX509CA")
    async def NewDownstreamX509CA(
        self,
        stream: ApiStream[svid_pb2.NewDownstreamX509CARequest, svid_pb2.NewDownstreamX509CAResponse],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        try:
            public_key = parse_csr(bytes(request.csr))
        except CsrError as err:
            raise _invalid(f"malformed CSR: {err}") from None
        ttl = timedelta(seconds=request.preferred_ttl) if request.preferred_ttl > 0 else self.ctx.config.server.ca_ttl
        chain = await self.ctx.pools.sign_one(self.ctx.issuer.sign_downstream_x509_ca, public_key, ttl)
        bundle = self.ctx.bundles.get(self.ctx.trust_domain)
        roots = [a.der for a in bundle.x509_authorities] if bundle else []
        await stream.send_message(
            svid_pb2.NewDownstreamX509CAResponse(
                ca_cert_chain=[c.public_bytes(serialization.Encoding.DER) for c in chain], x509_authorities=roots
            )
        )

    async def MintWITSVID(self, stream: Any) -> None:
        """Not a method of the SPIRE pyspire follows: unknown, to every caller (see ``unserved``)."""
        raise unknown_method(_SERVICE.strip("/"), "MintWITSVID")

    async def BatchNewWITSVID(self, stream: Any) -> None:
        """Not a method of the SPIRE pyspire follows: unknown, to every caller (see ``unserved``)."""
        raise unknown_method(_SERVICE.strip("/"), "BatchNewWITSVID")

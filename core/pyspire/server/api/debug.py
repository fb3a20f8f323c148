"""SPIRE's server Debug service (local socket only): the server SVID, uptime and counts."""

from __future__ import annotations

import contextlib
import time

from cryptography import x509
from cryptography.x509.oid import NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.proto.spire.api.server.debug.v1 import debug_grpc, debug_pb2
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.api.convert import id_to_proto
from pyspire.server.api.stream import ApiStream
from pyspire.server.context import ServerContext
from pyspire.spiffe import Bundle, SpiffeId, SpiffeIdError, X509SvidError
from pyspire.spiffe.x509svid import verify

__all__ = ["DebugService"]

_GO_NAMES = {
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.POSTAL_CODE: "POSTALCODE",
    NameOID.DOMAIN_COMPONENT: NameOID.DOMAIN_COMPONENT.dotted_string,
    NameOID.USER_ID: NameOID.USER_ID.dotted_string,
}
"""Attribute names as Go's pkix.Name.String() writes them (SPIRE's subjects), where Python's differ."""


class DebugService(debug_grpc.DebugBase):
    """The Debug service (``spire.api.server.debug.v1.Debug``)."""

    def __init__(self, ctx: ServerContext) -> None:
        """Serve with the server's shared parts."""
        self.ctx = ctx

    @rpc("/spire.api.server.debug.v1.Debug/GetInfo")
    async def GetInfo(
        self, stream: ApiStream[debug_pb2.GetInfoRequest, debug_pb2.GetInfoResponse], caller: Caller
    ) -> None:
        await stream.request()
        chain = []
        for certificate in self._verified_chain():
            cert = debug_pb2.GetInfoResponse.Cert(
                expires_at=int(certificate.not_valid_after_utc.timestamp()),
                subject=certificate.subject.rfc4514_string(_GO_NAMES),
            )
            spiffe_id = _uri_spiffe_id(certificate)
            if spiffe_id is not None:
                cert.id.CopyFrom(id_to_proto(spiffe_id))
            chain.append(cert)
        # SPIRE's "federated" count is every bundle it holds, its own included.
        bundles = self.ctx.bundles.all()
        await stream.send_message(
            debug_pb2.GetInfoResponse(
                svid_chain=chain,
                uptime=int(time.time() - self.ctx.started_at),
                agents_count=len(self.ctx.nodes),
                federated_bundles_count=len(bundles),
                entries_count=len(self.ctx.entries),
            )
        )

    def _verified_chain(self) -> list[x509.Certificate]:
        """The server SVID's chain as verified against the bundle: leaf to root, as SPIRE shows it."""
        record = self.ctx.bundles.get(self.ctx.trust_domain)
        roots = [x509.load_der_x509_certificate(a.der) for a in record.x509_authorities] if record else []
        try:
            _, paths = verify(self.ctx.server_svid.chain, Bundle(self.ctx.trust_domain, roots))
        except X509SvidError as err:
            raise GRPCError(Status.INTERNAL, f"failed verification against bundle: {err}") from None
        return paths[0]


def _uri_spiffe_id(certificate: x509.Certificate) -> SpiffeId | None:
    """The SPIFFE ID in a certificate's URI SAN (a CA's is the trust domain's own), if it has one."""
    with contextlib.suppress(x509.ExtensionNotFound, SpiffeIdError):
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            return SpiffeId.parse(uri)
    return None

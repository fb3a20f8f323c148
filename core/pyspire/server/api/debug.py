"""SPIRE's server Debug service (local socket only): the server SVID, uptime and counts."""

from __future__ import annotations

import time

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.debug_chain import debug_chain
from pyspire.proto.spire.api.server.debug.v1 import debug_grpc, debug_pb2
from pyspire.rpc_stream import ApiStream
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.api.convert import id_to_proto
from pyspire.server.context import ServerContext
from pyspire.spiffe import Bundle, X509SvidError
from pyspire.spiffe.pem import der_certificate

__all__ = ["DebugService"]


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
        record = self.ctx.bundles.get(self.ctx.trust_domain)
        roots = [der_certificate(a.der) for a in record.x509_authorities] if record else []
        try:
            shown = debug_chain(self.ctx.server_svid.chain, Bundle(self.ctx.trust_domain, roots))
        except X509SvidError as err:
            raise GRPCError(Status.INTERNAL, f"failed verification against bundle: {err}") from None
        chain = [
            debug_pb2.GetInfoResponse.Cert(
                id=id_to_proto(c.spiffe_id) if c.spiffe_id else None, expires_at=c.expires_at, subject=c.subject
            )
            for c in shown
        ]
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

"""SPIRE's server Debug service (local socket only): the server SVID, uptime and counts."""

from __future__ import annotations

import contextlib
import time

from pyspire.proto.spire.api.server.debug.v1 import debug_grpc, debug_pb2
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.api.convert import id_to_proto
from pyspire.server.api.stream import ApiStream
from pyspire.server.context import ServerContext
from pyspire.spiffe import X509SvidError
from pyspire.spiffe.x509svid import leaf_spiffe_id

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
        chain = []
        for certificate in self.ctx.server_svid.chain:
            cert = debug_pb2.GetInfoResponse.Cert(
                expires_at=int(certificate.not_valid_after_utc.timestamp()),
                subject=certificate.subject.rfc4514_string(),
            )
            with contextlib.suppress(X509SvidError):
                cert.id.CopyFrom(id_to_proto(leaf_spiffe_id(certificate)))
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

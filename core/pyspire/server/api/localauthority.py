"""SPIRE's LocalAuthority service: forced rotation of this server's signing authorities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_grpc as grpc_module
from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_pb2 as pb
from pyspire.rpc_stream import ApiStream
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.api.unserved import unknown_method
from pyspire.server.ca.authority import AuthorityState
from pyspire.server.context import ServerContext

__all__ = ["LocalAuthorityService"]

_SERVICE = "/spire.api.server.localauthority.v1.LocalAuthority/"


def _state(state: AuthorityState | None) -> pb.AuthorityState | None:
    if state is None:
        return None
    return pb.AuthorityState(
        authority_id=state.authority_id,
        expires_at=state.expires_at,
        upstream_authority_subject_key_id=state.upstream_authority_subject_key_id,
    )


def _required(value: str, missing: str) -> str:
    """``value``, or INVALID_ARGUMENT with SPIRE's message ``missing`` when it is empty."""
    if not value:
        raise GRPCError(Status.INVALID_ARGUMENT, missing)
    return value


_NO_ID = "no authority ID provided"
_REVOKE_NO_ID = f"invalid authority ID: {_NO_ID}"
_TAINT_NO_KEY = "provided subject key id is not valid: no subject key ID provided"
_REVOKE_NO_KEY = "invalid subject key ID: no subject key ID provided"


class LocalAuthorityService(grpc_module.LocalAuthorityBase):
    """The LocalAuthority service (``spire.api.server.localauthority.v1.LocalAuthority``)."""

    def __init__(self, ctx: ServerContext) -> None:
        """Serve with the server's shared parts."""
        self.ctx = ctx

    def _require_upstream(self) -> None:
        """SPIRE checks for an UpstreamAuthority before it looks at the request."""
        if not self.ctx.authority.has_upstream:
            raise GRPCError(Status.FAILED_PRECONDITION, "upstream authority is not configured")

    async def _run(self, operation: Callable[..., AuthorityState], *args: str) -> pb.AuthorityState | None:
        state = await self.ctx.call(operation, *args)
        await self.ctx.wrote()
        return _state(state)

    @rpc(_SERVICE + "GetX509AuthorityState")
    async def GetX509AuthorityState(
        self, stream: ApiStream[pb.GetX509AuthorityStateRequest, pb.GetX509AuthorityStateResponse], caller: Caller
    ) -> None:
        await stream.request()
        active, prepared, old = self.ctx.authority.x509_states()
        await stream.send_message(
            pb.GetX509AuthorityStateResponse(active=_state(active), prepared=_state(prepared), old=_state(old))
        )

    @rpc(_SERVICE + "PrepareX509Authority")
    async def PrepareX509Authority(
        self, stream: ApiStream[pb.PrepareX509AuthorityRequest, pb.PrepareX509AuthorityResponse], caller: Caller
    ) -> None:
        await stream.request()
        await stream.send_message(
            pb.PrepareX509AuthorityResponse(prepared_authority=await self._run(self.ctx.authority.prepare_x509))
        )

    @rpc(_SERVICE + "ActivateX509Authority")
    async def ActivateX509Authority(
        self, stream: ApiStream[pb.ActivateX509AuthorityRequest, pb.ActivateX509AuthorityResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        state = await self._run(self.ctx.authority.activate_x509, _required(request.authority_id, _NO_ID))
        await stream.send_message(pb.ActivateX509AuthorityResponse(activated_authority=state))

    @rpc(_SERVICE + "TaintX509Authority")
    async def TaintX509Authority(
        self, stream: ApiStream[pb.TaintX509AuthorityRequest, pb.TaintX509AuthorityResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        state = await self._run(self.ctx.authority.taint_x509, _required(request.authority_id, _NO_ID))
        await stream.send_message(pb.TaintX509AuthorityResponse(tainted_authority=state))

    @rpc(_SERVICE + "RevokeX509Authority")
    async def RevokeX509Authority(
        self, stream: ApiStream[pb.RevokeX509AuthorityRequest, pb.RevokeX509AuthorityResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        state = await self._run(self.ctx.authority.revoke_x509, _required(request.authority_id, _REVOKE_NO_ID))
        await stream.send_message(pb.RevokeX509AuthorityResponse(revoked_authority=state))

    @rpc(_SERVICE + "TaintX509UpstreamAuthority")
    async def TaintX509UpstreamAuthority(
        self,
        stream: ApiStream[pb.TaintX509UpstreamAuthorityRequest, pb.TaintX509UpstreamAuthorityResponse],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        self._require_upstream()
        subject_key = _required(request.subject_key_id, _TAINT_NO_KEY).lower()  # as SPIRE: either case
        key = await self.ctx.call(self.ctx.authority.taint_upstream, subject_key)
        await self.ctx.wrote()
        await stream.send_message(pb.TaintX509UpstreamAuthorityResponse(upstream_authority_subject_key_id=key))

    @rpc(_SERVICE + "RevokeX509UpstreamAuthority")
    async def RevokeX509UpstreamAuthority(
        self,
        stream: ApiStream[pb.RevokeX509UpstreamAuthorityRequest, pb.RevokeX509UpstreamAuthorityResponse],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        self._require_upstream()
        subject_key = _required(request.subject_key_id, _REVOKE_NO_KEY).lower()  # as SPIRE: either case
        key = await self.ctx.call(self.ctx.authority.revoke_upstream, subject_key)
        await self.ctx.wrote()
        await stream.send_message(pb.RevokeX509UpstreamAuthorityResponse(upstream_authority_subject_key_id=key))

    @rpc(_SERVICE + "GetJWTAuthorityState")
    async def GetJWTAuthorityState(
        self, stream: ApiStream[pb.GetJWTAuthorityStateRequest, pb.GetJWTAuthorityStateResponse], caller: Caller
    ) -> None:
        await stream.request()
        active, prepared, old = self.ctx.authority.jwt_states()
        await stream.send_message(
            pb.GetJWTAuthorityStateResponse(active=_state(active), prepared=_state(prepared), old=_state(old))
        )

    @rpc(_SERVICE + "PrepareJWTAuthority")
    async def PrepareJWTAuthority(
        self, stream: ApiStream[pb.PrepareJWTAuthorityRequest, pb.PrepareJWTAuthorityResponse], caller: Caller
    ) -> None:
        await stream.request()
        await stream.send_message(
            pb.PrepareJWTAuthorityResponse(prepared_authority=await self._run(self.ctx.authority.prepare_jwt))
        )

    @rpc(_SERVICE + "ActivateJWTAuthority")
    async def ActivateJWTAuthority(
        self, stream: ApiStream[pb.ActivateJWTAuthorityRequest, pb.ActivateJWTAuthorityResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        state = await self._run(self.ctx.authority.activate_jwt, _required(request.authority_id, _NO_ID))
        await stream.send_message(pb.ActivateJWTAuthorityResponse(activated_authority=state))

    @rpc(_SERVICE + "TaintJWTAuthority")
    async def TaintJWTAuthority(
        self, stream: ApiStream[pb.TaintJWTAuthorityRequest, pb.TaintJWTAuthorityResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        state = await self._run(self.ctx.authority.taint_jwt, _required(request.authority_id, _NO_ID))
        await stream.send_message(pb.TaintJWTAuthorityResponse(tainted_authority=state))

    @rpc(_SERVICE + "RevokeJWTAuthority")
    async def RevokeJWTAuthority(
        self, stream: ApiStream[pb.RevokeJWTAuthorityRequest, pb.RevokeJWTAuthorityResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        state = await self._run(self.ctx.authority.revoke_jwt, _required(request.authority_id, _REVOKE_NO_ID))
        await stream.send_message(pb.RevokeJWTAuthorityResponse(revoked_authority=state))

    async def GetWITAuthorityState(self, stream: Any) -> None:
        """Not a method of the SPIRE pyspire follows: unknown, to every caller (see ``unserved``)."""
        raise unknown_method(_SERVICE.strip("/"), "GetWITAuthorityState")

    async def PrepareWITAuthority(self, stream: Any) -> None:
        """Not a method of the SPIRE pyspire follows: unknown, to every caller (see ``unserved``)."""
        raise unknown_method(_SERVICE.strip("/"), "PrepareWITAuthority")

    async def ActivateWITAuthority(self, stream: Any) -> None:
        """Not a method of the SPIRE pyspire follows: unknown, to every caller (see ``unserved``)."""
        raise unknown_method(_SERVICE.strip("/"), "ActivateWITAuthority")

    async def TaintWITAuthority(self, stream: Any) -> None:
        """Not a method of the SPIRE pyspire follows: unknown, to every caller (see ``unserved``)."""
        raise unknown_method(_SERVICE.strip("/"), "TaintWITAuthority")

    async def RevokeWITAuthority(self, stream: Any) -> None:
        """Not a method of the SPIRE pyspire follows: unknown, to every caller (see ``unserved``)."""
        raise unknown_method(_SERVICE.strip("/"), "RevokeWITAuthority")

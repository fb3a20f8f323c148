"""Who is calling, and may they call this method? SPIRE's authorization, method by method.

Callers are of five kinds (SPIRE's policy classes): *any* caller; *local* (on the Unix admin
socket); *admin* (an SVID whose ID is in ``admin_ids`` or has an entry with ``admin``);
*downstream* (an SVID whose ID has an entry with ``downstream``); *agent* (an attested
agent's SVID, checked against its node record by serial number). :data:`POLICY` lists, for
every RPC of every service, which kinds may call it; an RPC missing from it is refused. (The
WIT methods are not in it: they are unknown methods, see :mod:`pyspire.server.api.unserved`.)

Every handler is wrapped by :func:`rpc`, which authorizes the caller, applies the rate limit,
turns plugin errors into gRPC errors and writes the audit line.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.plugin.errors import Internal, PluginError
from pyspire.plugin.records import AttestedNode
from pyspire.rpc_stream import ApiStream
from pyspire.server.api.audit import caller_path
from pyspire.server.api.errors import to_grpc
from pyspire.server.errors import AgentDenied, DenialReason
from pyspire.spiffe import SpiffeId
from pyspire.spire_ids import is_agent_id
from pyspire.telemetry.rpc import rpc_metric_key
from pyspire.transport import ResumedSessionError, peer_address, peer_credentials, peer_leaf

if TYPE_CHECKING:
    from pyspire.server.context import ServerContext

__all__ = ["POLICY", "Caller", "Policy", "authorize", "rpc"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """Which caller kinds may call a method."""

    any: bool = False
    local: bool = False
    admin: bool = False
    downstream: bool = False
    agent: bool = False


_ANY = Policy(any=True)
_LOCAL = Policy(local=True)
_ADMIN = Policy(local=True, admin=True)
_AGENT = Policy(agent=True)
_DOWNSTREAM = Policy(downstream=True)


def _methods(service: str, policy: Policy, *names: str) -> dict[str, Policy]:
    return {f"/{service}/{name}": policy for name in names}


POLICY: dict[str, Policy] = {
    **_methods(
        "spire.api.server.agent.v1.Agent",
        _ADMIN,
        "CountAgents",
        "ListAgents",
        "GetAgent",
        "DeleteAgent",
        "BanAgent",
        "CreateJoinToken",
    ),
    **_methods("spire.api.server.agent.v1.Agent", _ANY, "AttestAgent"),
    **_methods("spire.api.server.agent.v1.Agent", _AGENT, "RenewAgent", "PostStatus"),
    **_methods("spire.api.server.bundle.v1.Bundle", _ANY, "GetBundle"),
    **_methods(
        "spire.api.server.bundle.v1.Bundle",
        _ADMIN,
        "AppendBundle",
        "CountBundles",
        "ListFederatedBundles",
        "BatchCreateFederatedBundle",
        "BatchUpdateFederatedBundle",
        "BatchSetFederatedBundle",
        "BatchDeleteFederatedBundle",
    ),
    **_methods("spire.api.server.bundle.v1.Bundle", Policy(local=True, admin=True, agent=True), "GetFederatedBundle"),
    **_methods("spire.api.server.bundle.v1.Bundle", _DOWNSTREAM, "PublishJWTAuthority"),
    **_methods(
        "spire.api.server.entry.v1.Entry",
        _ADMIN,
        "CountEntries",
        "ListEntries",
        "GetEntry",
        "BatchCreateEntry",
        "BatchUpdateEntry",
        "BatchDeleteEntry",
    ),
    **_methods("spire.api.server.entry.v1.Entry", _AGENT, "GetAuthorizedEntries", "SyncAuthorizedEntries"),
    **_methods("spire.api.server.svid.v1.SVID", _ADMIN, "MintX509SVID", "MintJWTSVID"),
    **_methods("spire.api.server.svid.v1.SVID", _AGENT, "BatchNewX509SVID", "NewJWTSVID"),
    **_methods("spire.api.server.svid.v1.SVID", _DOWNSTREAM, "NewDownstreamX509CA"),
    **_methods(
        "spire.api.server.trustdomain.v1.TrustDomain",
        _ADMIN,
        "ListFederationRelationships",
        "GetFederationRelationship",
        "BatchCreateFederationRelationship",
        "BatchUpdateFederationRelationship",
        "BatchDeleteFederationRelationship",
        "RefreshBundle",
    ),
    **_methods(
        "spire.api.server.localauthority.v1.LocalAuthority",
        _ADMIN,
        *(
            f"{verb}{kind}"
            for kind in ("JWTAuthority", "X509Authority")
            for verb in ("Prepare", "Activate", "Taint", "Revoke")
        ),
        "GetJWTAuthorityState",
        "GetX509AuthorityState",
        "TaintX509UpstreamAuthority",
        "RevokeX509UpstreamAuthority",
    ),
    **_methods("spire.api.server.debug.v1.Debug", _LOCAL, "GetInfo"),
    **_methods("spire.api.server.logger.v1.Logger", _LOCAL, "GetLogger", "SetLogLevel", "ResetLogLevel"),
}


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one RPC."""

    local: bool
    address: str | None = None
    pid: int | None = None
    uid: int | None = None
    gid: int | None = None
    certificate: x509.Certificate | None = None
    certificate_not_after: float = 0.0
    """The certificate's expiry, a POSIX timestamp."""
    spiffe_id: SpiffeId | None = None
    agent: AttestedNode | None = None
    admin: bool = False
    downstream: bool = False

    def audit_fields(self) -> dict[str, Any]:
        """SPIRE's audit fields describing the caller."""
        if self.local:
            return {
                "caller_uid": self.uid,
                "caller_gid": self.gid,
                "caller_path": caller_path(self.pid) if self.pid else "",
            }
        return {"caller_addr": self.address or "", "caller_id": str(self.spiffe_id or "")}


def _identify(stream: Any) -> Caller:
    credentials = peer_credentials(stream)
    if credentials is not None:
        return Caller(local=True, pid=credentials.pid, uid=credentials.uid, gid=credentials.gid)
    try:
        leaf = peer_leaf(stream)
    except ResumedSessionError as err:
        raise GRPCError(Status.UNAUTHENTICATED, str(err)) from None
    if leaf is None:
        return Caller(local=False, address=peer_address(stream))
    return Caller(
        local=False,
        address=peer_address(stream),
        certificate=leaf.certificate,
        certificate_not_after=leaf.not_after,
        spiffe_id=leaf.spiffe_id,
    )


async def _fetch_node(ctx: ServerContext, agent_id: SpiffeId) -> AttestedNode | None:
    """The node record as committed now: read on the loop where the store can, else from a thread."""
    datastore = ctx.datastore
    read = datastore.read_attested_node_at_once(agent_id) or await datastore.read_attested_node_on_loop(agent_id)
    if read is not None:
        return read.node
    try:
        return await ctx.call(ctx.datastore.fetch_attested_node, agent_id)
    except PluginError as err:
        _log.error("Unable to look up agent information", extra={"agent_id": str(agent_id), "error": err.message})
        raise Internal(f"unable to look up agent information: {err.message}") from None


async def authenticate_agent(caller: Caller, ctx: ServerContext) -> AttestedNode:
    """The caller's node record, checked by the serial of the SVID it presented.

    The current serial passes; the serial of a renewed SVID passes and becomes current on
    this first use; anything else is refused with SPIRE's reason so the agent knows whether
    to re-attest (expired, not attested, not active) or stop (banned).

    The record is read from the datastore on every call, as SPIRE does, unless
    ``max_attested_node_info_staleness`` allows the cached one and the cache matched the
    datastore within that time. A datastore that cannot be read is an INTERNAL refusal: a
    server that cannot confirm an agent's standing never serves it on what it last knew.
    """
    assert caller.certificate is not None
    assert caller.spiffe_id is not None
    agent_id, certificate = caller.spiffe_id, caller.certificate
    if ctx.clock() > caller.certificate_not_after:
        raise AgentDenied(DenialReason.AGENT_EXPIRED, f'agent "{agent_id}" SVID is expired')
    serial = str(certificate.serial_number)
    staleness = ctx.config.server.max_attested_node_info_staleness.total_seconds()
    if staleness > 0 and ctx.follower.confirmed_within(staleness):
        cached = ctx.nodes.get(agent_id)
        if cached is not None and cached.cert_serial_number and cached.cert_serial_number == serial:
            return cached
    node = await _fetch_node(ctx, agent_id)
    if node is None:
        raise AgentDenied(DenialReason.AGENT_NOT_ATTESTED, f'agent "{agent_id}" is not attested')
    if not node.cert_serial_number:
        raise AgentDenied(DenialReason.AGENT_BANNED, f'agent "{agent_id}" is banned')
    if node.cert_serial_number == serial:
        return node
    if node.new_cert_serial_number == serial:

        def promote(current: AttestedNode) -> AttestedNode:
            if current.new_cert_serial_number != serial:
                return current  # another server promoted (or banned) it meanwhile
            return replace(
                current,
                cert_serial_number=current.new_cert_serial_number,
                cert_not_after=current.new_cert_not_after,
                new_cert_serial_number="",
                new_cert_not_after=0,
            )

        try:
            promoted = await ctx.call(ctx.datastore.modify_attested_node, agent_id, promote)
        except PluginError as err:
            raise Internal(f"unable to activate the new agent SVID: {err.message}") from None
        if promoted.cert_serial_number == serial:
            ctx.nodes.put(promoted)
            return promoted
    raise AgentDenied(
        DenialReason.AGENT_NOT_ACTIVE,
        f'agent "{agent_id}" expected to have serial number "{node.cert_serial_number}"; has "{serial}"',
    )


def _entry_flags(caller: Caller, ctx: ServerContext) -> tuple[bool, bool]:
    if caller.spiffe_id is None:
        return False, False
    entries = ctx.entries.by_spiffe_id(caller.spiffe_id)
    admin = caller.spiffe_id in ctx.config.server.admin_ids or any(e.admin for e in entries)
    return admin, any(e.downstream for e in entries)


async def authorize(stream: Any, ctx: ServerContext, method: str) -> Caller:
    """The caller of ``stream`` if it may call ``method``; raises GRPCError otherwise."""
    policy = POLICY.get(method)
    if policy is None:
        raise GRPCError(Status.PERMISSION_DENIED, f"no authorization policy for {method}")
    caller = _identify(stream)
    if not caller.local and ctx.rate_limits.applies(method):
        # SPIRE counts each rate-limited call as rateLimit.<service>.<method>, with its outcome.
        with ctx.metrics.call("rateLimit", *rpc_metric_key(method)[1:]):
            if not ctx.rate_limits.allow(method, caller.address):
                raise GRPCError(
                    Status.RESOURCE_EXHAUSTED,
                    f"rate limit exceeded: {method} allows {ctx.rate_limits.describe(method)}",
                )
    if policy.any or (policy.local and caller.local):
        return caller
    admin, downstream = _entry_flags(caller, ctx)
    if policy.admin and admin:
        return replace(caller, admin=True)
    if policy.downstream and downstream:
        return replace(caller, downstream=True)
    if policy.agent and caller.spiffe_id is not None and is_agent_id(caller.spiffe_id, ctx.trust_domain):
        return replace(caller, agent=await authenticate_agent(caller, ctx))
    # SPIRE's words: the caller learns only that it was refused; the log says who it was.
    _log.debug("Authorization denied", extra={"method": method, "caller_id": str(caller.spiffe_id or "")})
    raise GRPCError(Status.PERMISSION_DENIED, f"authorization denied for method {method}")


Handler = Callable[[Any, ApiStream[Any, Any], Caller], Awaitable[None]]
Wrapped = Callable[[Any, Any], Coroutine[Any, Any, None]]


def rpc(method: str) -> Callable[[Handler], Wrapped]:
    """Wrap a service handler: authorize, map errors, audit. The handler gets a typed stream and the Caller."""

    def decorate(handler: Handler) -> Wrapped:
        @functools.wraps(handler)
        async def wrapper(self: Any, stream: Any) -> None:
            ctx: ServerContext = self.ctx
            # Nothing of the audit record or the debug line is built unless it is written:
            # together they were a twentieth of an unchanged sync's CPU.
            request_id = ctx.audit.request_id() if ctx.audit.enabled else ""
            started = time.monotonic()
            caller = Caller(local=False)
            code, message = 0, ""
            try:
                caller = await authorize(stream, ctx, method)
                await handler(self, ApiStream(stream), caller)
            except PluginError as err:
                grpc_error = to_grpc(err)
                code, message = grpc_error.status.value, str(grpc_error.message)
                raise grpc_error from None
            except GRPCError as err:
                code, message = err.status.value, str(err.message)
                raise
            except Exception as err:
                code, message = Status.INTERNAL.value, f"internal error: {type(err).__name__}"
                _log.exception("Unexpected error in %s", method)
                raise GRPCError(Status.INTERNAL, message) from None
            finally:
                if ctx.audit.enabled:
                    ctx.audit.record(
                        request_id, method, caller.audit_fields(), status_code=code, status_message=message
                    )
                if _log.isEnabledFor(logging.DEBUG):
                    _log.debug(
                        "API call",
                        extra={
                            "method": method,
                            "status_code": code,
                            "ms": round((time.monotonic() - started) * 1000, 2),
                        },
                    )

        return wrapper

    return decorate

"""SPIRE's Agent service: attestation, renewal, and the administration of agents."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import datetime

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.crypto import CsrError, parse_csr
from pyspire.plugin.records import AttestedNode, JoinToken, NodeFilter, Page, RegistrationEntry
from pyspire.plugin.selectors import Selector
from pyspire.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.rpc_stream import ApiStream
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.api.convert import (
    InvalidInput,
    agent_id_from_proto,
    agent_to_proto,
    match_from_proto,
    selectors_from_proto,
    workload_id_from_proto,
    x509_svid_to_proto,
)
from pyspire.server.attestation import attest_agent
from pyspire.server.context import ServerContext
from pyspire.server.errors import AgentDenied, DenialReason
from pyspire.spiffe import SpiffeId
from pyspire.spire_ids import join_token_agent_id

__all__ = ["MAX_PAGE_SIZE", "AgentService"]

MAX_PAGE_SIZE = 1000
_SERVICE = "/spire.api.server.agent.v1.Agent/"


def _invalid(err: InvalidInput | str) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, str(err))


_GO_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ([+-]\d{4}) [+-]\d\d")
"""Go's ``2006-01-02 15:04:05 -0700 -07``: the layout SPIRE parses by_expires_before with."""


def _expires_before(text: str) -> int | None:
    """A by_expires_before time: SPIRE's layout, RFC 3339, or Unix seconds; refused otherwise."""
    if not text:
        return None
    if text.isdigit():
        return int(text)
    go_time = _GO_TIME.fullmatch(text)
    try:
        if go_time:
            return int(datetime.strptime(" ".join(go_time.groups()), "%Y-%m-%d %H:%M:%S %z").timestamp())
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise _invalid(
            f'invalid by_expires_before "{text}": use "2006-01-02 15:04:05 -0700 -07", RFC 3339 or Unix seconds'
        ) from None


def _node_filter(proto: agent_pb2.ListAgentsRequest.Filter | agent_pb2.CountAgentsRequest.Filter) -> NodeFilter:
    by_selectors = None
    if proto.HasField("by_selector_match"):
        try:
            selectors = selectors_from_proto(proto.by_selector_match.selectors)
            by_selectors = (selectors, match_from_proto(proto.by_selector_match.match))
        except InvalidInput as err:
            raise _invalid(f"failed to parse selectors: {err}") from None
        if not selectors:
            # SPIRE's datastore fails on it (INTERNAL); it is the caller's mistake.
            raise _invalid("failed to parse selectors: empty selector set")
    return NodeFilter(
        by_attestation_type=proto.by_attestation_type or None,
        by_selectors=by_selectors,
        by_banned=proto.by_banned.value if proto.HasField("by_banned") else None,
        by_can_reattest=proto.by_can_reattest.value if proto.HasField("by_can_reattest") else None,
        by_expires_before=_expires_before(proto.by_expires_before),
    )


def _join_token_alias(agent_id: SpiffeId, alias: SpiffeId) -> RegistrationEntry:
    """The entry that gives a join-token agent a second, operator-chosen ID (SPIRE's alias)."""
    return RegistrationEntry("", alias, agent_id, (Selector("spiffe_id", str(agent_id)),))


class AgentService(agent_grpc.AgentBase):
    """The Agent service (``spire.api.server.agent.v1.Agent``)."""

    def __init__(self, ctx: ServerContext) -> None:
        """Serve with the server's shared parts."""
        self.ctx = ctx

    def _agent_id(
        self, request: agent_pb2.GetAgentRequest | agent_pb2.DeleteAgentRequest | agent_pb2.BanAgentRequest
    ) -> SpiffeId:
        """The agent a Get, Delete or Ban request names (an unset ID is not an empty one)."""
        proto = request.id if request.HasField("id") else None
        try:
            return agent_id_from_proto(proto, self.ctx.trust_domain)
        except InvalidInput as err:
            raise _invalid(err) from None

    @rpc(_SERVICE + "AttestAgent")
    async def AttestAgent(
        self, stream: ApiStream[agent_pb2.AttestAgentRequest, agent_pb2.AttestAgentResponse], caller: Caller
    ) -> None:
        await attest_agent(self.ctx, stream, caller.address)

    @rpc(_SERVICE + "RenewAgent")
    async def RenewAgent(
        self, stream: ApiStream[agent_pb2.RenewAgentRequest, agent_pb2.RenewAgentResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        node = caller.agent
        assert node is not None
        if node.can_reattest:
            raise AgentDenied(
                DenialReason.AGENT_MUST_REATTEST, f'agent "{node.spiffe_id}" must re-attest instead of renewing'
            )
        if not request.HasField("params"):
            raise _invalid("params cannot be nil")
        if not request.params.csr:
            raise _invalid("missing CSR")
        try:
            public_key = parse_csr(bytes(request.params.csr))
        except CsrError as err:
            raise _invalid(f"invalid CSR: {err}") from None
        ttl = self.ctx.config.server.effective_agent_ttl
        chain = await self.ctx.pools.sign_one(self.ctx.issuer.sign_agent_x509_svid, public_key, node.spiffe_id, ttl)
        serial, not_after = str(chain[0].serial_number), int(chain[0].not_valid_after_utc.timestamp())

        def record_new_serial(current: AttestedNode) -> AttestedNode:
            return replace(current, new_cert_serial_number=serial, new_cert_not_after=not_after)

        updated = await self.ctx.call(self.ctx.datastore.modify_attested_node, node.spiffe_id, record_new_serial)
        self.ctx.nodes.put(updated)
        await stream.send_message(agent_pb2.RenewAgentResponse(svid=x509_svid_to_proto(chain, node.spiffe_id)))

    @rpc(_SERVICE + "PostStatus")
    async def PostStatus(
        self, stream: ApiStream[agent_pb2.PostStatusRequest, agent_pb2.PostStatusResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        node = caller.agent
        assert node is not None
        if request.agent_version and request.agent_version != node.agent_version:
            version = request.agent_version[:255]
            updated = await self.ctx.call(
                self.ctx.datastore.modify_attested_node, node.spiffe_id, lambda n: replace(n, agent_version=version)
            )
            self.ctx.nodes.put(updated)
        await stream.send_message(agent_pb2.PostStatusResponse())

    @rpc(_SERVICE + "CountAgents")
    async def CountAgents(
        self, stream: ApiStream[agent_pb2.CountAgentsRequest, agent_pb2.CountAgentsResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        count = await self.ctx.call(self.ctx.datastore.count_attested_nodes, _node_filter(request.filter))
        await stream.send_message(agent_pb2.CountAgentsResponse(count=count))

    @rpc(_SERVICE + "ListAgents")
    async def ListAgents(
        self, stream: ApiStream[agent_pb2.ListAgentsRequest, agent_pb2.ListAgentsResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        # As SPIRE: a page size of zero or less lists every agent.
        size = min(request.page_size, MAX_PAGE_SIZE) if request.page_size > 0 else 0
        nodes, token = await self.ctx.call(
            self.ctx.datastore.list_attested_nodes,
            _node_filter(request.filter),
            Page(size, request.page_token if size else ""),
        )
        mask = request.output_mask if request.HasField("output_mask") else None
        await stream.send_message(
            agent_pb2.ListAgentsResponse(agents=[agent_to_proto(n, mask) for n in nodes], next_page_token=token)
        )

    @rpc(_SERVICE + "GetAgent")
    async def GetAgent(self, stream: ApiStream[agent_pb2.GetAgentRequest, types_pb2.Agent], caller: Caller) -> None:
        request = await stream.request()
        agent_id = self._agent_id(request)
        node = await self.ctx.call(self.ctx.datastore.fetch_attested_node, agent_id)
        if node is None:
            raise GRPCError(Status.NOT_FOUND, "agent not found")
        mask = request.output_mask if request.HasField("output_mask") else None
        await stream.send_message(agent_to_proto(node, mask))

    @rpc(_SERVICE + "DeleteAgent")
    async def DeleteAgent(
        self, stream: ApiStream[agent_pb2.DeleteAgentRequest, empty_pb2.Empty], caller: Caller
    ) -> None:
        request = await stream.request()
        agent_id = self._agent_id(request)
        deleted = await self.ctx.call(self.ctx.datastore.delete_attested_node, agent_id)
        if deleted is None:
            raise GRPCError(Status.NOT_FOUND, "agent not found")
        self.ctx.nodes.remove(agent_id)
        # A join-token agent's alias entry goes with it, as in SPIRE.
        marker = Selector("spiffe_id", str(agent_id))
        for entry in self.ctx.entries.all():
            if entry.parent_id == agent_id and entry.selectors == (marker,):
                await self.ctx.call(self.ctx.datastore.delete_registration_entry, entry.id)
        await self.ctx.wrote()
        await stream.send_message(empty_pb2.Empty())

    @rpc(_SERVICE + "BanAgent")
    async def BanAgent(self, stream: ApiStream[agent_pb2.BanAgentRequest, empty_pb2.Empty], caller: Caller) -> None:
        request = await stream.request()
        agent_id = self._agent_id(request)

        def ban(current: AttestedNode) -> AttestedNode:
            return replace(current, cert_serial_number="", new_cert_serial_number="")

        node = await self.ctx.call(self.ctx.datastore.fetch_attested_node, agent_id)
        if node is None:
            raise GRPCError(Status.NOT_FOUND, "agent not found")
        banned = await self.ctx.call(self.ctx.datastore.modify_attested_node, agent_id, ban)
        self.ctx.nodes.put(banned)
        await self.ctx.wrote()
        await stream.send_message(empty_pb2.Empty())

    @rpc(_SERVICE + "CreateJoinToken")
    async def CreateJoinToken(
        self, stream: ApiStream[agent_pb2.CreateJoinTokenRequest, types_pb2.JoinToken], caller: Caller
    ) -> None:
        request = await stream.request()
        if request.ttl < 1:
            raise _invalid("ttl is required, you must provide one")
        value = request.token or str(uuid.uuid4())
        if len(value) > 255:
            raise _invalid("token is longer than 255 characters")
        alias = None
        if request.HasField("agent_id") and (request.agent_id.trust_domain or request.agent_id.path):
            try:
                alias = workload_id_from_proto(request.agent_id, self.ctx.trust_domain, "agent ID")
            except InvalidInput as err:
                raise _invalid(err) from None
        try:
            agent_id = join_token_agent_id(self.ctx.trust_domain, value)
        except ValueError as err:
            raise _invalid(f"invalid token: {err}") from None
        expires_at = int(self.ctx.clock()) + request.ttl
        await self.ctx.call(self.ctx.datastore.create_join_token, JoinToken(value, expires_at))
        if alias is not None:
            await self.ctx.call(self.ctx.datastore.create_registration_entries, [_join_token_alias(agent_id, alias)])
            await self.ctx.wrote()
        await stream.send_message(types_pb2.JoinToken(value=value, expires_at=expires_at))

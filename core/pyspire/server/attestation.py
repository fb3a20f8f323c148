"""Node attestation: from an agent's evidence to an attested node with an agent SVID.

The steps, and the refusals, are SPIRE's: the first message carries the attestation data
and a CSR (only its public key is used); a join token is consumed atomically (deleted even if
expired); any other type goes to the NodeAttestor plugin of that name, which may challenge
the agent; the agent ID is ``spiffe://<td>/spire/agent<path>`` validated strictly and never
the server's ID; a banned node is refused; a node that is already attested is refused unless
its attestor allows re-attestation (trust on first use otherwise). The node record and the SVID
are only committed together: a failure at any step leaves no node behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass, replace
from datetime import timedelta

from cryptography import x509
from grpclib.exceptions import StreamTerminatedError

from pyspire import spire_ids
from pyspire.crypto import CsrError, parse_csr
from pyspire.plugin.attestation import AttestationResult
from pyspire.plugin.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    PermissionDenied,
    PluginError,
    Unavailable,
)
from pyspire.plugin.records import AttestedNode
from pyspire.plugin.selectors import Selector
from pyspire.proto.spire.api.server.agent.v1 import agent_pb2
from pyspire.rpc_stream import ApiStream
from pyspire.server.api.convert import x509_svid_to_proto
from pyspire.server.context import ServerContext
from pyspire.spiffe import SpiffeId, SpiffeIdError

__all__ = ["CHALLENGE_TIMEOUT", "MAX_PAYLOAD_BYTES", "attest_agent"]

_log = logging.getLogger(__name__)

CHALLENGE_TIMEOUT = 30.0
"""Seconds an agent has to answer each challenge.

SPIRE sets none (a waiting stream costs it a goroutine); here a waiting challenge holds a
thread of the attestation pool (:mod:`pyspire.server.work`), so it is bounded: 30 s, the
timeout SPIRE's agent gives each of its calls to the server."""
MAX_PAYLOAD_BYTES = 1024 * 1024
"""Attestation payloads above this size are refused before any plugin sees them."""


@dataclass(frozen=True)
class _Attested:
    agent_id: SpiffeId
    attestation_type: str
    selectors: tuple[Selector, ...]
    can_reattest: bool


_Stream = ApiStream[agent_pb2.AttestAgentRequest, agent_pb2.AttestAgentResponse]


async def _exchange(stream: _Stream, challenge: bytes, abandoned: asyncio.Event) -> bytes:
    if abandoned.is_set():
        # The handler is gone; its plugin thread woke up later and must not write to the stream.
        raise Unavailable("the agent left before the challenge was sent")
    try:
        await stream.send_message(agent_pb2.AttestAgentResponse(challenge=challenge))
        reply = await stream.recv_message()
    except (StreamTerminatedError, ConnectionError) as err:
        raise InvalidArgument(f"the agent hung up during the challenge: {err}") from None
    if reply is None:
        raise InvalidArgument("the agent closed the stream instead of answering the challenge")
    if reply.WhichOneof("step") != "challenge_response":
        raise InvalidArgument("expected a challenge response from the agent")
    return bytes(reply.challenge_response)


async def _run_plugin(
    ctx: ServerContext, stream: _Stream, attestation_type: str, payload: bytes, client_ip: str
) -> _Attested:
    attestor = ctx.catalog.node_attestors.get(attestation_type)
    if attestor is None:
        raise FailedPrecondition(f'could not find node attestor type "{attestation_type}"')
    loop = asyncio.get_running_loop()
    exchanges: set[concurrent.futures.Future[bytes]] = set()
    # Set on the loop when the handler is cancelled, and read on the loop by every exchange: a
    # plugin already running in its thread when the agent hung up may still ask for a challenge.
    abandoned = asyncio.Event()

    def challenge(data: bytes) -> bytes:
        future = asyncio.run_coroutine_threadsafe(_exchange(stream, data, abandoned), loop)
        exchanges.add(future)
        try:
            return future.result(timeout=CHALLENGE_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise InvalidArgument("the agent did not answer the challenge in time") from None
        except concurrent.futures.CancelledError:
            # The stream was cancelled (the agent left, or the server is stopping).
            raise Unavailable("the attestation was cancelled while waiting for the agent's answer") from None
        finally:
            exchanges.discard(future)

    try:
        result: AttestationResult = await ctx.pools.attest(attestor.attest, payload, challenge, client_ip)
    except asyncio.CancelledError:
        # The agent hung up (grpclib cancels the handler): wake the plugin's thread now rather
        # than leave it waiting CHALLENGE_TIMEOUT for an answer that cannot come.
        abandoned.set()
        for exchange in list(exchanges):
            exchange.cancel()
        raise
    try:
        agent_id = spire_ids.agent_id(ctx.trust_domain, result.agent_path)
    except SpiffeIdError as err:
        raise Internal(f"nodeattestor({attestation_type}) produced an invalid agent ID: {err}") from None
    return _Attested(agent_id, attestation_type, attestor.selectors(result), result.can_reattest)


async def _join_token(ctx: ServerContext, payload: bytes) -> _Attested:
    if "join_token" not in ctx.catalog.node_attestors:
        raise FailedPrecondition('could not find node attestor type "join_token"')
    try:
        value = payload.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidArgument("join token is not valid text") from None
    if not value:
        raise InvalidArgument("missing join token")
    token = await ctx.call(ctx.datastore.take_join_token, value)
    if token is None:
        raise InvalidArgument("failed to attest: join token does not exist or has already been used")
    await ctx.wrote()
    if token.expires_at < ctx.clock():
        raise InvalidArgument("failed to attest: join token expired")
    try:
        # The ID is built from the token the datastore returned, never from what the agent
        # sent (Cure53 SPI-01-007): they are equal, but only one was verified.
        agent_id = spire_ids.join_token_agent_id(ctx.trust_domain, token.token)
    except SpiffeIdError as err:
        raise InvalidArgument(f"join token cannot form an agent ID: {err}") from None
    return _Attested(agent_id, "join_token", (), False)


async def attest_agent(ctx: ServerContext, stream: _Stream, client_ip: str | None) -> None:
    """Run one AttestAgent stream from an agent at ``client_ip`` to its end (a result, or a refusal)."""
    try:
        request = await stream.recv_message()
    except StreamTerminatedError:
        return
    if request is None or request.WhichOneof("step") != "params":
        raise InvalidArgument("malformed param: missing params")
    params = request.params
    attestation_type = params.data.type
    payload = bytes(params.data.payload)
    # SPIRE's order of checks, so the first thing missing is the one named.
    if not params.HasField("data"):
        raise InvalidArgument("malformed param: missing attestation data")
    if not params.HasField("params"):
        raise InvalidArgument("malformed param: missing X509-SVID parameters")
    if not params.params.csr:
        raise InvalidArgument("malformed param: missing CSR")
    if not attestation_type:
        raise InvalidArgument("malformed param: missing attestation data type")
    if not payload:
        raise InvalidArgument("malformed param: missing attestation data payload")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"malformed param: attestation payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} are accepted"
        )
    try:
        public_key = parse_csr(bytes(params.params.csr))
    except CsrError as err:
        raise InvalidArgument(f"malformed param: invalid CSR: {err}") from None

    try:
        if attestation_type == "join_token":
            attested = await _join_token(ctx, payload)
        else:
            attested = await _run_plugin(ctx, stream, attestation_type, payload, client_ip or "")
    except PluginError as err:
        _log.info("Node attestation failed", extra={"attestation_type": attestation_type, "error": err.message})
        raise
    agent_id = attested.agent_id
    if agent_id == ctx.server_id:
        raise Internal("the agent ID would be the server's own ID: refused")

    existing = await ctx.call(ctx.datastore.fetch_attested_node, agent_id)
    if existing is not None:
        if existing.banned:
            raise PermissionDenied("failed to attest: agent is banned")
        if not attested.can_reattest:
            _log.warning(
                "Attestation data was presented again for an attested agent (possible replay)",
                extra={"agent_id": str(agent_id), "attestation_type": attestation_type},
            )
            raise PermissionDenied("failed to attest: attestation data has already been used to attest an agent")

    ttl: timedelta = ctx.config.server.effective_agent_ttl
    chain: list[x509.Certificate] = await ctx.pools.sign_one(ctx.issuer.sign_agent_x509_svid, public_key, agent_id, ttl)
    node = AttestedNode(
        spiffe_id=agent_id,
        attestation_type=attested.attestation_type,
        cert_serial_number=str(chain[0].serial_number),
        cert_not_after=int(chain[0].not_valid_after_utc.timestamp()),
        can_reattest=attested.can_reattest,
        agent_version=existing.agent_version if existing else "",
        selectors=attested.selectors,
    )
    stored = await _store_node(ctx, node, existing is not None)
    ctx.nodes.put(stored)
    await ctx.wrote()
    _log.info(
        "Agent attested",
        extra={"agent_id": str(agent_id), "attestation_type": attestation_type, "reattested": existing is not None},
    )
    result = agent_pb2.AttestAgentResponse.Result(
        svid=x509_svid_to_proto(chain, agent_id), reattestable=attested.can_reattest
    )
    await stream.send_message(agent_pb2.AttestAgentResponse(result=result))


async def _store_node(ctx: ServerContext, node: AttestedNode, exists: bool) -> AttestedNode:
    def replace_node(current: AttestedNode) -> AttestedNode:
        if current.banned:
            raise PermissionDenied("failed to attest: agent is banned")
        return replace(node, agent_version=current.agent_version)

    try:
        if exists:
            return await ctx.call(ctx.datastore.modify_attested_node, node.spiffe_id, replace_node)
        return await ctx.call(ctx.datastore.create_attested_node, node)
    except AlreadyExists:
        # Another attestation of the same agent won the race: only a re-attestable agent may
        # take the record over.
        if not node.can_reattest:
            raise PermissionDenied(
                "failed to attest: attestation data has already been used to attest an agent"
            ) from None
        return await ctx.call(ctx.datastore.modify_attested_node, node.spiffe_id, replace_node)

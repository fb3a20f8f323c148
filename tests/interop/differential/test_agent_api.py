"""The Agent API's administration calls, differentially, on servers no agent has attested to.

Join tokens, and the answers about agents that do not exist or are named wrongly; lists and
counts with every filter (empty results on both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import BoolValue
from grpclib.exceptions import GRPCError
from pyspire.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from pyspire.proto.spire.api.types import types_pb2 as types

from tests.support.daemons import ServerDaemon, start_server
from tests.support.differential import Case, Side, assert_same_answers
from tests.support.server_callers import attest_with_token, reach

CASES: dict[str, Case] = {}


def case(function: Case) -> Case:
    CASES[function.__name__] = function
    return function


def sid(path: str, trust_domain: str = "example.org") -> types.SPIFFEID:
    return types.SPIFFEID(trust_domain=trust_domain, path=path)


def agents(side: Side) -> agent_grpc.AgentStub:
    return agent_grpc.AgentStub(side.channel)


WRONG_IDS = [
    sid("/spire/agent/join_token/missing"),
    sid("/workload"),
    sid("/spire/agent/x", "other.org"),
    sid("no-slash"),
    sid("/x", "Bad_TD"),
    types.SPIFFEID(),
]


@case
async def join_tokens(side: Side) -> None:
    stub = agents(side)
    for request in (
        agent_pb2.CreateJoinTokenRequest(ttl=600, token="chosen-token"),
        agent_pb2.CreateJoinTokenRequest(ttl=0),
        agent_pb2.CreateJoinTokenRequest(ttl=-5),
        agent_pb2.CreateJoinTokenRequest(ttl=600, token="aliased", agent_id=sid("/node/alias")),
        agent_pb2.CreateJoinTokenRequest(ttl=600, token="bad-alias", agent_id=sid("no-slash")),
        agent_pb2.CreateJoinTokenRequest(ttl=600, token="other-td", agent_id=sid("/x", "other.org")),
        agent_pb2.CreateJoinTokenRequest(ttl=600, token="in-spire", agent_id=sid("/spire/agent/x")),
    ):
        reply = await side.call(stub.CreateJoinToken, request, record=False)
        if reply is None:
            await side.call(stub.CreateJoinToken, request)  # the refusal, recorded
        else:
            side.note("token", {"value": reply.value, "expires in": reply.expires_at > 0})
    await side.call(
        stub.CreateJoinToken,
        agent_pb2.CreateJoinTokenRequest(ttl=600, token="chosen-token"),
        documented="Errors SPIRE passes on from its database",
    )
    generated = await side.call(stub.CreateJoinToken, agent_pb2.CreateJoinTokenRequest(ttl=60), record=False)
    side.note("generated token", len(generated.value) if generated else None)


@case
async def agents_that_do_not_exist_or_are_named_wrongly(side: Side) -> None:
    stub = agents(side)
    for agent_id in WRONG_IDS:
        await side.call(stub.GetAgent, agent_pb2.GetAgentRequest(id=agent_id))
        await side.call(stub.DeleteAgent, agent_pb2.DeleteAgentRequest(id=agent_id))
        await side.call(stub.BanAgent, agent_pb2.BanAgentRequest(id=agent_id))
    await side.call(stub.GetAgent, agent_pb2.GetAgentRequest())
    await side.call(stub.DeleteAgent, agent_pb2.DeleteAgentRequest())
    await side.call(stub.BanAgent, agent_pb2.BanAgentRequest())


@case
async def list_and_count_agents_with_every_filter(side: Side) -> None:
    stub = agents(side)
    selectors = types.SelectorMatch(selectors=[types.Selector(type="join_token", value="x")])
    filters: list[dict[str, Any]] = [
        {},
        {"by_attestation_type": "join_token"},
        {"by_selector_match": selectors},
        {"by_banned": BoolValue(value=True)},
        {"by_banned": BoolValue(value=False)},
        {"by_can_reattest": BoolValue(value=True)},
        {"by_expires_before": "2030-01-01 00:00:00 +0000 +00"},
        {"by_selector_match": types.SelectorMatch(selectors=[types.Selector(type="", value="x")])},
    ]
    for fields in filters:
        listed = agent_pb2.ListAgentsRequest(filter=agent_pb2.ListAgentsRequest.Filter(**fields))
        await side.call(stub.ListAgents, listed)
        counted = agent_pb2.CountAgentsRequest(filter=agent_pb2.CountAgentsRequest.Filter(**fields))
        await side.call(stub.CountAgents, counted)
    for fields in ({"by_expires_before": "not a time"}, {"by_selector_match": types.SelectorMatch()}):
        listed = agent_pb2.ListAgentsRequest(filter=agent_pb2.ListAgentsRequest.Filter(**fields))
        await side.call(stub.ListAgents, listed, documented="Filters SPIRE's datastore fails on")
    await side.call(stub.ListAgents, agent_pb2.ListAgentsRequest(page_size=-1))
    await side.call(stub.ListAgents, agent_pb2.ListAgentsRequest(page_size=1, output_mask=types.AgentMask()))


async def attested(side: Side, token: str, ports: dict[str, int], directory: Path) -> str:
    """Attest an agent with join token ``token`` over TCP; its SPIFFE ID path (the token names it)."""
    await side.call(agents(side).CreateJoinToken, agent_pb2.CreateJoinTokenRequest(ttl=600, token=token), record=False)
    callers = await reach(side.socket_path, ports[side.name], directory / side.name)
    await attest_with_token(callers, token)
    return f"/spire/agent/join_token/{token}"


async def attested_agent_lifecycle(side: Side, ports: dict[str, int], directory: Path) -> None:
    stub = agents(side)
    path = await attested(side, "lifecycle-token", ports, directory)
    await side.call(stub.GetAgent, agent_pb2.GetAgentRequest(id=sid(path)))
    await side.call(stub.GetAgent, agent_pb2.GetAgentRequest(id=sid(path), output_mask=types.AgentMask()))
    masked = types.AgentMask(attestation_type=True, selectors=True, banned=True)
    await side.call(stub.GetAgent, agent_pb2.GetAgentRequest(id=sid(path), output_mask=masked))
    token = types.SelectorMatch(selectors=[types.Selector(type="join_token", value="lifecycle-token")])
    for match in (token.MATCH_EXACT, token.MATCH_SUBSET, token.MATCH_SUPERSET, token.MATCH_ANY):
        by_selector = agent_pb2.ListAgentsRequest.Filter(
            by_selector_match=types.SelectorMatch(selectors=token.selectors, match=match)
        )
        await side.call(stub.ListAgents, agent_pb2.ListAgentsRequest(filter=by_selector, output_mask=types.AgentMask()))
    for fields in ({"by_banned": BoolValue(value=False)}, {"by_can_reattest": BoolValue(value=False)}):
        counted = agent_pb2.CountAgentsRequest(filter=agent_pb2.CountAgentsRequest.Filter(**fields))
        reply = await side.call(stub.CountAgents, counted, record=False)
        side.note(f"count {sorted(fields)}", reply.count > 0 if reply else None)
    await side.call(stub.BanAgent, agent_pb2.BanAgentRequest(id=sid(path)))
    await side.call(stub.GetAgent, agent_pb2.GetAgentRequest(id=sid(path), output_mask=masked))
    banned = agent_pb2.ListAgentsRequest.Filter(by_banned=BoolValue(value=True), by_selector_match=token)
    await side.call(stub.ListAgents, agent_pb2.ListAgentsRequest(filter=banned, output_mask=masked))
    await side.call(stub.BanAgent, agent_pb2.BanAgentRequest(id=sid(path)))
    await side.call(stub.DeleteAgent, agent_pb2.DeleteAgentRequest(id=sid(path)))
    await side.call(stub.GetAgent, agent_pb2.GetAgentRequest(id=sid(path)))
    await side.call(stub.DeleteAgent, agent_pb2.DeleteAgentRequest(id=sid(path)))


async def token_used_twice(side: Side, ports: dict[str, int], directory: Path) -> None:
    await attested(side, "used-token", ports, directory)
    callers = await reach(side.socket_path, ports[side.name], directory / side.name)
    try:
        await attest_with_token(callers, "used-token")
    except GRPCError as err:
        side.note("second attestation", {"code": err.status.name, "message": err.message})


ATTESTING_CASES = {"attested_agent_lifecycle": attested_agent_lifecycle, "token_used_twice": token_used_twice}


@pytest.mark.parametrize("name", ATTESTING_CASES)
async def test_attested_agents_are_administered_as_by_spire(
    name: str, unlimited_pair: dict[str, ServerDaemon], tmp_path: Path
) -> None:
    ports = {side: daemon.port for side, daemon in unlimited_pair.items()}
    for side in ports:
        (tmp_path / side).mkdir()

    async def case(side: Side) -> None:
        await ATTESTING_CASES[name](side, ports, tmp_path)

    spire = await assert_same_answers(case, {side: daemon.socket_path for side, daemon in unlimited_pair.items()})
    # SPIRE itself served the agent (a corpus both servers refuse alike would prove nothing).
    assert spire[0].get("code", "OK") == "OK", spire[0]


@pytest.fixture(scope="module")
def unlimited_pair(
    tmp_path_factory: pytest.TempPathFactory, spire_server_bin: Path
) -> Iterator[dict[str, ServerDaemon]]:
    """A pair without the attestation rate limit (the limits differ on purpose: docs/compatibility.md,
    "Rate limits refuse instead of waiting"), for the cases that attest agents."""
    directory = tmp_path_factory.mktemp("attesting")
    unlimited = "ratelimit {\n        attestation = false\n    }"
    spire = start_server(directory / "spire", executable=spire_server_bin, log_level="WARN", extra=unlimited)
    try:
        pyspire = start_server(directory / "pyspire", log_level="WARN", extra=unlimited)
    except BaseException:
        spire.stop()
        raise
    yield {"spire": spire, "pyspire": pyspire}
    pyspire.stop()
    spire.stop()


def _cases() -> list[Any]:
    return [pytest.param(function, id=name) for name, function in CASES.items()]


@pytest.mark.parametrize("corpus_case", _cases())
async def test_agent_api_answers_as_spire_does(
    corpus_case: Callable[[Side], Any], server_pair: dict[str, ServerDaemon]
) -> None:
    await assert_same_answers(corpus_case, {name: daemon.socket_path for name, daemon in server_pair.items()})

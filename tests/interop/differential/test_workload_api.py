"""The Workload API and the agent's admin APIs, differentially: spire-agent on spire-server beside
pyspire-agent on pyspire-server, with the same entries for this test process.

Each case is one request (with its security header, without it, or with a wrong one) to both
agents. SVIDs and keys are each side's own: what is compared is what the request decides (the
SPIFFE IDs and hints served, chain and bundle sizes, a JWT's claims and header fields other
than its key ID, the refusals).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError
from h2.exceptions import StreamClosedError
from pyspire.proto.spiffe.workload import workload_pb2 as pb
from pyspire.proto.spiffe.workload.service import METHODS, path
from pyspire.proto.spire.api.agent.debug.v1 import debug_pb2 as agent_debug_pb2
from pyspire.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2
from pyspire.proto.spire.api.agent.logger.v1 import logger_pb2 as agent_logger_pb2
from pyspire.proto.spire.api.types import types_pb2 as types

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent
from tests.support.differential import Side, assert_sides_answer_alike, documented_sections
from tests.support.server_callers import call_method
from tests.support.waiting import eventually

TD = "example.org"
ALIAS = f"spiffe://{TD}/node/workload-corpus"
HEADER = {"workload.spiffe.io": "true"}
ENTRIES = {
    "first": ["-hint", "first", "-dns", "first.example.org"],
    "second": ["-hint", "second", "-jwtSVIDTTL", "120"],
}


@pytest.fixture(scope="module")
def agents(
    server_pair: dict[str, ServerDaemon], spire_agent_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AgentDaemon]]:
    directory = tmp_path_factory.mktemp("workload")
    started: dict[str, AgentDaemon] = {}
    try:
        for name, server in server_pair.items():
            for entry, flags in ENTRIES.items():
                server.cli(
                    "entry", "create", "-parentID", ALIAS, "-spiffeID", f"spiffe://{TD}/wl/{entry}",
                    "-selector", f"unix:uid:{os.getuid()}", *flags,
                )  # fmt: skip
            admin = directory / f"{name}-admin" / "admin.sock"  # as _admin_socket finds it
            started[name] = start_agent(
                directory / name,
                server,
                server.join_token(ALIAS),
                executable=spire_agent_bin if name == "spire" else None,
                extra=f'admin_socket_path = "{admin}"',
                log_level="WARN",
            )
        for agent in started.values():
            eventually(lambda agent=agent: _serves_both(agent), timeout=60, interval=0.5)
        yield started
    finally:
        for agent in started.values():
            agent.stop()


def _admin_socket(agent: AgentDaemon, name: str) -> Path:
    return agent.directory.parent / f"{name}-admin" / "admin.sock"


def _ders(blob: bytes) -> list[bytes]:
    """The DER certificates of a concatenation (the Workload API's chains and bundles)."""
    found = []
    while blob:
        size, start = blob[1], 2
        if size & 0x80:
            count = size & 0x7F
            size, start = int.from_bytes(blob[2 : 2 + count], "big"), 2 + count
        found.append(blob[: start + size])
        blob = blob[start + size :]
    return found


def _serves_both(agent: AgentDaemon) -> bool:
    """True once ``agent`` serves this process both entries' SVIDs; raises (saying what it serves) until then."""

    async def fetch() -> list[str]:
        channel = Channel(path=str(agent.socket_path))
        try:
            reply = await _first(channel, "FetchX509SVID", pb.X509SVIDRequest(), HEADER)
        finally:
            channel.close()
        assert isinstance(reply, pb.X509SVIDResponse)
        return [svid.spiffe_id.removeprefix(f"spiffe://{TD}") for svid in reply.svids]

    served = asyncio.run(fetch())
    assert sorted(served) == ["/wl/first", "/wl/second"], f"{agent.command} serves {served}"
    return True


async def _first(channel: Channel, method: str, request: Message, metadata: dict[str, str] | None) -> Message | None:
    """Call a Workload API method; its (first) reply. A stream is ended after the first reply."""
    cardinality, request_type, reply_type = METHODS[method]
    async with channel.request(
        path(method), cardinality, request_type, reply_type, timeout=15, metadata=metadata
    ) as stream:
        await stream.send_message(request, end=True)
        reply = await stream.recv_message()
        if cardinality is Cardinality.UNARY_STREAM:
            with contextlib.suppress(StreamClosedError):  # the agent may have ended it already
                await stream.cancel()
    return reply


def _claims(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, claims = (
        json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in token.split(".")[:2]
    )
    return header, claims


def _jwt_shape(token: str) -> dict[str, Any]:
    header, claims = _claims(token)
    return {
        "header": sorted(header),
        "alg": header.get("alg"),
        "typ": header.get("typ"),
        "claims": sorted(claims),
        "sub": claims.get("sub"),
        "aud": claims.get("aud"),
        "lifetime minutes": round((claims["exp"] - claims["iat"]) / 60) if "iat" in claims else None,
    }


def _shape(reply: Message) -> Any:
    """What a reply says that the request decides (not the keys, serials or signatures)."""
    # The SVIDs are compared by SPIFFE ID: spire-agent lists them by entry ID, which is random,
    # pyspire-agent oldest first (docs/workload-library.md).
    if isinstance(reply, pb.X509SVIDResponse):
        return {
            "svids": sorted(
                (
                    {
                        "spiffe_id": s.spiffe_id,
                        "hint": s.hint,
                        "chain": len(_ders(s.x509_svid)),
                        "dns": x509.load_der_x509_certificate(_ders(s.x509_svid)[0])
                        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
                        .value.get_values_for_type(x509.DNSName),
                        "key": bool(s.x509_svid_key),
                        "bundle": len(_ders(s.bundle)),
                    }
                    for s in reply.svids
                ),
                key=lambda svid: svid["spiffe_id"],
            ),
            "crl": len(reply.crl),
            "federated": sorted(reply.federated_bundles),
        }
    if isinstance(reply, pb.X509BundlesResponse):
        return {td: len(_ders(der)) for td, der in reply.bundles.items()}
    if isinstance(reply, pb.JWTBundlesResponse):
        shown = {}
        for td, jwks in reply.bundles.items():
            keys = json.loads(jwks)["keys"]
            shown[td] = [
                {k: v for k, v in key.items() if k in ("kty", "crv", "use")} | {"kid": bool(key.get("kid"))}
                for key in keys
            ]
        return shown
    if isinstance(reply, pb.JWTSVIDResponse):
        shown = [{"spiffe_id": s.spiffe_id, "hint": s.hint, "token": _jwt_shape(s.svid)} for s in reply.svids]
        return sorted(shown, key=lambda svid: svid["spiffe_id"])
    if isinstance(reply, pb.ValidateJWTSVIDResponse):
        claims = dict(reply.claims)
        return {
            "spiffe_id": reply.spiffe_id,
            "claims": sorted(claims),
            "aud": claims.get("aud"),
            "sub": claims.get("sub"),
        }
    return type(reply).__name__


async def record(
    side: Side, label: str, method: str, request: Message, metadata: dict[str, str] | None = HEADER
) -> Message | None:
    try:
        reply = await _first(side.channel, method, request, metadata)
    except GRPCError as err:
        side.records.append({"call": label, "code": err.status.name, "message": err.message or ""})
        return None
    side.records.append({"call": label, "code": "OK", "reply": _shape(reply) if reply is not None else None})
    return reply


async def _token(side: Side, audience: str = "aud-1", spiffe_id: str = f"spiffe://{TD}/wl/first") -> str:
    reply = await _first(
        side.channel, "FetchJWTSVID", pb.JWTSVIDRequest(audience=[audience], spiffe_id=spiffe_id), HEADER
    )
    assert isinstance(reply, pb.JWTSVIDResponse)
    return reply.svids[0].svid


def _foreign_token() -> str:
    """A well-formed ES256 JWT-SVID signed by a key no bundle holds."""
    key = ec.generate_private_key(ec.SECP256R1())

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'ES256', 'kid': 'stranger', 'typ': 'JWT'})}.{part({'sub': f'spiffe://{TD}/wl/first', 'aud': ['aud-1'], 'exp': int(time.time()) + 300})}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    signature = base64.urlsafe_b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).rstrip(b"=").decode()
    return f"{signing_input}.{signature}"


def _unsigned_token() -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': f'spiffe://{TD}/wl/first', 'aud': ['aud-1'], 'exp': int(time.time()) + 300})}."


Call = Callable[[Side], Awaitable[None]]


def one(label: str, method: str, request: Message, metadata: dict[str, str] | None = HEADER) -> Call:
    async def case(side: Side) -> None:
        await record(side, label, method, request, metadata)

    return case


def validate(label: str, audience: str, token: Callable[[Side], Awaitable[str]] | str) -> Call:
    async def case(side: Side) -> None:
        value = token if isinstance(token, str) else await token(side)
        await record(side, label, "ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience=audience, svid=value))

    return case


async def _first_of_two(side: Side) -> str:
    request = pb.JWTSVIDRequest(audience=["aud-1", "aud-2"], spiffe_id=f"spiffe://{TD}/wl/first")
    reply = await _first(side.channel, "FetchJWTSVID", request, HEADER)
    assert isinstance(reply, pb.JWTSVIDResponse)
    return reply.svids[0].svid


async def _validate_without_header(side: Side) -> None:
    token = await _token(side)
    await record(
        side, "ValidateJWTSVID", "ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience="aud-1", svid=token), None
    )


CASES: dict[str, Call] = {
    "x509 svid": one("FetchX509SVID", "FetchX509SVID", pb.X509SVIDRequest()),
    "x509 svid, no header": one("FetchX509SVID", "FetchX509SVID", pb.X509SVIDRequest(), None),
    "x509 svid, header false": one(
        "FetchX509SVID", "FetchX509SVID", pb.X509SVIDRequest(), {"workload.spiffe.io": "false"}
    ),
    "x509 svid, header TRUE": one(
        "FetchX509SVID", "FetchX509SVID", pb.X509SVIDRequest(), {"workload.spiffe.io": "TRUE"}
    ),
    "x509 bundles": one("FetchX509Bundles", "FetchX509Bundles", pb.X509BundlesRequest()),
    "x509 bundles, no header": one("FetchX509Bundles", "FetchX509Bundles", pb.X509BundlesRequest(), None),
    "jwt bundles": one("FetchJWTBundles", "FetchJWTBundles", pb.JWTBundlesRequest()),
    "jwt bundles, no header": one("FetchJWTBundles", "FetchJWTBundles", pb.JWTBundlesRequest(), None),
    "jwt svid": one("FetchJWTSVID", "FetchJWTSVID", pb.JWTSVIDRequest(audience=["aud-1"])),
    "jwt svid, two audiences": one("FetchJWTSVID", "FetchJWTSVID", pb.JWTSVIDRequest(audience=["aud-1", "aud-2"])),
    "jwt svid, no audience": one("FetchJWTSVID", "FetchJWTSVID", pb.JWTSVIDRequest()),
    "jwt svid, empty audience": one("FetchJWTSVID", "FetchJWTSVID", pb.JWTSVIDRequest(audience=[""])),
    "jwt svid, by id": one(
        "FetchJWTSVID", "FetchJWTSVID", pb.JWTSVIDRequest(audience=["a"], spiffe_id=f"spiffe://{TD}/wl/second")
    ),
    "jwt svid, id not entitled": one(
        "FetchJWTSVID", "FetchJWTSVID", pb.JWTSVIDRequest(audience=["a"], spiffe_id=f"spiffe://{TD}/wl/other")
    ),
    "jwt svid, id malformed": one(
        "FetchJWTSVID", "FetchJWTSVID", pb.JWTSVIDRequest(audience=["a"], spiffe_id="not-an-id")
    ),
    "jwt svid, id of another trust domain": one(
        "FetchJWTSVID", "FetchJWTSVID", pb.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://other.org/wl/first")
    ),
    "jwt svid, no header": one("FetchJWTSVID", "FetchJWTSVID", pb.JWTSVIDRequest(audience=["a"]), None),
    "validate": validate("ValidateJWTSVID", "aud-1", _token),
    "validate, second audience": validate("ValidateJWTSVID", "aud-2", _first_of_two),
    "validate, wrong audience": validate("ValidateJWTSVID", "someone-else", _token),
    "validate, no audience": validate("ValidateJWTSVID", "", _token),
    "validate, no token": validate("ValidateJWTSVID", "aud-1", ""),
    "validate, garbage": validate("ValidateJWTSVID", "aud-1", "not.a.jwt"),
    "validate, unknown key": validate("ValidateJWTSVID", "aud-1", _foreign_token()),
    "validate, alg none": validate("ValidateJWTSVID", "aud-1", _unsigned_token()),
    "validate, no header": _validate_without_header,
    "wit svid": one("FetchWITSVID", "FetchWITSVID", pb.WITSVIDRequest()),
    "wit bundles": one("FetchWITBundles", "FetchWITBundles", pb.WITBundlesRequest()),
}


NO_IDENTITY = 'Workload API: "no identity issued" says why'
DOCUMENTED: dict[str, str] = {
    "jwt svid, empty audience": "Minting: a negative TTL or an empty audience",
    "jwt svid, id not entitled": NO_IDENTITY,
    "jwt svid, id of another trust domain": NO_IDENTITY,
}
"""Cases answered differently on purpose: the section of docs/compatibility.md that says why."""


@pytest.mark.parametrize("name", CASES)
async def test_workload_api_answers_as_spire_agent_does(name: str, agents: dict[str, AgentDaemon]) -> None:
    sides = {side: Side(side, agent.socket_path) for side, agent in agents.items()}
    case = CASES[name]
    if name in DOCUMENTED:
        assert DOCUMENTED[name] in documented_sections()
        case = _documented(case, DOCUMENTED[name])
    await assert_sides_answer_alike(case, sides)


def _documented(case: Call, section: str) -> Call:
    """``case`` with its answers replaced by the section explaining why they differ (the call is still made)."""

    async def documented(side: Side) -> None:
        await case(side)
        side.records[:] = [{"call": record["call"], "documented": section} for record in side.records]

    return documented


# --- the agent's admin socket: Debug, Logger, DelegatedIdentity (no delegate authorized) ---------

ADMIN_METHODS = {
    f"{service.name}.{method.name}": method
    for module in (agent_debug_pb2, agent_logger_pb2, delegatedidentity_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}
UNIX = [types.Selector(type="unix", value=f"uid:{os.getuid()}")]
ADMIN_CASES: dict[str, tuple[str, Message | None]] = {
    "debug info": ("Debug.GetInfo", None),
    "logger get": ("Logger.GetLogger", None),
    "logger set debug": ("Logger.SetLogLevel", agent_logger_pb2.SetLogLevelRequest(new_level=types.LogLevel.DEBUG)),
    "logger set trace": ("Logger.SetLogLevel", agent_logger_pb2.SetLogLevelRequest(new_level=types.LogLevel.TRACE)),
    "logger set unspecified": ("Logger.SetLogLevel", None),
    "logger reset": ("Logger.ResetLogLevel", None),
    **{
        f"delegated {name}, {form}": (f"DelegatedIdentity.{name}", request)
        for name, requests in {
            "SubscribeToX509SVIDs": {
                "empty": None,
                "selectors": delegatedidentity_pb2.SubscribeToX509SVIDsRequest(selectors=UNIX),
                "pid": delegatedidentity_pb2.SubscribeToX509SVIDsRequest(pid=os.getpid()),
            },
            "FetchJWTSVIDs": {
                "empty": None,
                "selectors": delegatedidentity_pb2.FetchJWTSVIDsRequest(audience=["a"], selectors=UNIX),
            },
            "SubscribeToX509Bundles": {"empty": None},
            "SubscribeToJWTBundles": {"empty": None},
        }.items()
        for form, request in requests.items()
    },
}


AGENT_LOGGER = "The agent's Logger API"
assert AGENT_LOGGER in documented_sections()


def _admin_shape(reply: Message) -> Any:
    if isinstance(reply, agent_debug_pb2.GetInfoResponse):
        return {
            "chain": [
                f"spiffe://{c.id.trust_domain}{c.id.path}" if c.HasField("id") else None for c in reply.svid_chain
            ],
            "expiries set": [c.expires_at > 0 for c in reply.svid_chain],
            "synced": reply.last_sync_success > 0,
            "cached x509 svids": reply.cached_x509_svids_count,
        }
    return MessageToDict(reply, preserving_proto_field_name=True)


@pytest.mark.parametrize("name", ADMIN_CASES)
async def test_agent_admin_api_answers_as_spire_agent_does(name: str, agents: dict[str, AgentDaemon]) -> None:
    method, request = ADMIN_CASES[name]

    async def case(side: Side) -> None:
        code, message, reply = await call_method(side.channel, ADMIN_METHODS[method], request)
        if method.startswith("Logger."):
            side.records.append({"call": method, "documented": AGENT_LOGGER})
            await call_method(side.channel, ADMIN_METHODS["Logger.ResetLogLevel"])
            return
        shown = {"reply": _admin_shape(reply)} if reply is not None else {"message": message}
        side.records.append({"call": method, "code": code, **shown})

    sides = {side: Side(side, _admin_socket(agent, side)) for side, agent in agents.items()}
    await assert_sides_answer_alike(case, sides)

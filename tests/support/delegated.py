"""A DelegatedIdentity client built from the protos, for pyspire's agent and SPIRE's alike.

Each call returns an Outcome: the responses (the first ``count`` of a stream) or the gRPC
status and message it ended with, so one sequence of calls can be run against both agents
and the outcomes compared.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from pyspire.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_grpc
from pyspire.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as pb
from pyspire.proto.spire.api.types import types_pb2

from tests.support.waiting import eventually


@dataclass
class Outcome:
    """What one call gave: ``responses``, or the ``status`` name and ``message`` it failed with."""

    responses: list[Any] = field(default_factory=list)
    status: str = "OK"
    message: str = ""

    @property
    def code(self) -> tuple[str, str]:
        return self.status, self.message


def selectors(*pairs: str) -> list[types_pb2.Selector]:
    """``"unix:uid:1000"`` strings as Selector messages."""
    found = []
    for pair in pairs:
        kind, _, value = pair.partition(":")
        found.append(types_pb2.Selector(type=kind, value=value))
    return found


async def _call(admin: Path, method: str, request: Any, count: int, timeout: float) -> Outcome:
    channel = Channel(path=str(admin))
    stub = delegatedidentity_grpc.DelegatedIdentityStub(channel)
    outcome = Outcome()
    try:
        if method == "FetchJWTSVIDs":
            outcome.responses.append(await getattr(stub, method)(request, timeout=timeout))
            return outcome
        async with getattr(stub, method).open(timeout=timeout) as stream:
            await stream.send_message(request, end=True)
            while len(outcome.responses) < count:
                response = await stream.recv_message()
                if response is None:
                    break
                outcome.responses.append(response)
            if len(outcome.responses) < count:
                await stream.recv_trailing_metadata()
            else:
                await stream.cancel()
    except GRPCError as err:
        outcome.status, outcome.message = err.status.name, err.message or ""
    finally:
        channel.close()
    return outcome


def call(admin: Path, method: str, request: Any, *, count: int = 1, timeout: float = 15.0) -> Outcome:
    """Call ``method`` on the agent's admin socket ``admin``: its first ``count`` responses, or its error."""
    return asyncio.run(_call(admin, method, request, count, timeout))


def x509_svids(admin: Path, *pairs: str, pid: int = 0, count: int = 1) -> Outcome:
    return call(
        admin, "SubscribeToX509SVIDs", pb.SubscribeToX509SVIDsRequest(selectors=selectors(*pairs), pid=pid), count=count
    )


def jwt_svids(admin: Path, audience: list[str], *pairs: str, pid: int = 0) -> Outcome:
    request = pb.FetchJWTSVIDsRequest(audience=audience, selectors=selectors(*pairs), pid=pid)
    return call(admin, "FetchJWTSVIDs", request)


def x509_bundles(admin: Path) -> Outcome:
    return call(admin, "SubscribeToX509Bundles", pb.SubscribeToX509BundlesRequest())


def jwt_bundles(admin: Path) -> Outcome:
    return call(admin, "SubscribeToJWTBundles", pb.SubscribeToJWTBundlesRequest())


# --- one scenario, run against either agent ------------------------------------------

DELEGATE = "spiffe://example.org/delegate"
PARTNER = "spiffe://partner.test"
WORKLOAD = "unix:uid:4242"
"""The workload the delegate asks for: no such process is needed, the delegate vouches for it."""


def _x509_summary(outcome: Outcome) -> Any:
    if outcome.status != "OK":
        return outcome.code
    response = outcome.responses[0]
    return {
        "svids": sorted(
            (
                f"spiffe://{s.x509_svid.id.trust_domain}{s.x509_svid.id.path}",
                s.x509_svid.hint,
                len(s.x509_svid.cert_chain),
                bool(s.x509_svid_key),
            )
            for s in response.x509_svids
        ),
        "federates_with": list(response.federates_with),
    }


def _jwt_summary(outcome: Outcome) -> Any:
    if outcome.status != "OK":
        return outcome.code
    return sorted(
        (f"spiffe://{s.id.trust_domain}{s.id.path}", s.hint, s.expires_at > s.issued_at > 0)
        for s in outcome.responses[0].svids
    )


def scenario(server: Any, admin: Path, parent_id: str, caller_uid: int, partner_pem: Path) -> dict[str, Any]:
    """Drive an agent's DelegatedIdentity API through SPIRE's cases; the outcomes, normalised.

    The agent (of ``server``, attested as ``parent_id``) lists DELEGATE in its
    ``authorized_delegates``; the caller is this process (``caller_uid``). Entries are made
    as the calls go, so the authorization cases come first.
    """

    def entry(spiffe_id: str, selector: str, *flags: str) -> None:
        server.cli("entry", "create", "-parentID", parent_id, "-spiffeID", spiffe_id, "-selector", selector, *flags)

    found: dict[str, Any] = {}
    server.cli("bundle", "set", "-format", "pem", "-id", PARTNER, "-path", str(partner_pem))
    entry("spiffe://example.org/workload", WORKLOAD, "-hint", "primary", "-federatesWith", PARTNER)
    entry("spiffe://example.org/admin-workload", WORKLOAD, "-admin")
    entry("spiffe://example.org/downstream-workload", WORKLOAD, "-downstream")
    found["caller without entry"] = x509_svids(admin, WORKLOAD).code

    entry("spiffe://example.org/not-a-delegate", f"unix:uid:{caller_uid}")

    def once_the_entry_arrived() -> tuple[str, str] | None:
        code = x509_svids(admin, WORKLOAD).code
        return code if code[1] != "no identity issued" else None

    found["caller not listed"] = eventually(once_the_entry_arrived)
    entry(DELEGATE, f"unix:uid:{caller_uid}")
    eventually(lambda: x509_svids(admin, WORKLOAD).status == "OK")

    def with_federated_bundle() -> Any:
        summary = _x509_summary(x509_svids(admin, WORKLOAD))
        return summary if summary["federates_with"] else None

    found["x509 by selectors"] = eventually(with_federated_bundle)
    found["x509 matching nothing"] = _x509_summary(x509_svids(admin, "unix:uid:9999"))
    found["x509 neither selectors nor pid"] = x509_svids(admin).code
    found["x509 selectors and pid"] = x509_svids(admin, WORKLOAD, pid=1).code
    empty_type = call(
        admin,
        "SubscribeToX509SVIDs",
        pb.SubscribeToX509SVIDsRequest(selectors=[types_pb2.Selector(type="", value="x")]),
    )
    found["x509 selector without type"] = empty_type.code
    found["x509 by pid"] = _x509_summary(x509_svids(admin, pid=os.getpid()))
    found["jwt without audience"] = jwt_svids(admin, [], WORKLOAD).code
    found["jwt by selectors"] = _jwt_summary(jwt_svids(admin, ["delegated-aud"], WORKLOAD))
    found["jwt matching nothing"] = jwt_svids(admin, ["delegated-aud"], "unix:uid:9999").code
    bundles = x509_bundles(admin)
    found["x509 bundles"] = sorted(bundles.responses[0].ca_certificates) if bundles.status == "OK" else bundles.code
    jwks = jwt_bundles(admin)
    found["jwt bundles"] = sorted(jwks.responses[0].bundles) if jwks.status == "OK" else jwks.code
    return found

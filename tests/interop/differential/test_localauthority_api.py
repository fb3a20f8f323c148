"""The LocalAuthority API, differentially: each server's own X.509 and JWT authorities, rotated by hand.

The authority IDs are each server's own (key IDs, subject key IDs): a case names every one it
learns (``<active>``, ``<prepared>``) so answers that quote them compare; states are compared
by which slots are filled and whether an expiry is set.
"""

from __future__ import annotations

from typing import Any

import pytest
from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_grpc
from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_pb2 as pb

from tests.support.daemons import ServerDaemon
from tests.support.differential import Case, Side, assert_same_answers

KINDS = ("X509", "JWT")


def stub(side: Side) -> localauthority_grpc.LocalAuthorityStub:
    return localauthority_grpc.LocalAuthorityStub(side.channel)


def _slot(state: pb.AuthorityState) -> dict[str, Any]:
    return {
        "expires_at set": state.expires_at > 0,
        "upstream": state.upstream_authority_subject_key_id,
    }


async def states(side: Side, kind: str, label: str) -> dict[str, str]:
    """Note which slots of ``kind`` are filled; name their IDs after the slots; return them by slot."""
    reply = await side.call(
        getattr(stub(side), f"Get{kind}AuthorityState"), getattr(pb, f"Get{kind}AuthorityStateRequest")(), record=False
    )
    assert reply is not None
    found = {}
    for slot in ("active", "prepared", "old"):
        if reply.HasField(slot):
            state = getattr(reply, slot)
            found[slot] = state.authority_id
            side.known_ids.setdefault(state.authority_id, f"<{kind} {label} {slot}>")
    side.note(f"{kind} {label}", {slot: _slot(getattr(reply, slot)) for slot in found})
    return found


REVOKED = "LocalAuthority: what a revoked authority leaves"


async def act(side: Side, kind: str, verb: str, authority_id: str, label: str = "", documented: str = "") -> None:
    """Call <verb><kind>Authority with ``authority_id``; its answer recorded (IDs named by the case)."""
    request = getattr(pb, f"{verb}{kind}AuthorityRequest")(authority_id=authority_id)
    if documented:
        await side.call(getattr(stub(side), f"{verb}{kind}Authority"), request, label, documented=documented)
        return
    reply = await side.call(
        getattr(stub(side), f"{verb}{kind}Authority"), request, label or f"{verb} {kind}", record=False
    )
    if reply is None:
        await side.call(getattr(stub(side), f"{verb}{kind}Authority"), request, label or f"{verb} {kind}")
        return
    (field,) = [f.name for f, _ in reply.ListFields()] or [""]
    shown = getattr(reply, field) if field else None
    side.note(
        label or f"{verb} {kind}",
        {field: _slot(shown) if shown is not None else None, "id": shown.authority_id if shown is not None else None},
    )


CASES: dict[str, Case] = {}


def case(function: Case) -> Case:
    CASES[function.__name__] = function
    return function


@case
async def authority_states_at_start(side: Side) -> None:
    for kind in KINDS:
        await states(side, kind, "at start")


@case
async def unknown_and_wrong_authority_ids(side: Side) -> None:
    for kind in KINDS:
        found = await states(side, kind, "now")
        for verb in ("Activate", "Taint", "Revoke"):
            await act(side, kind, verb, "no-such-authority", f"{verb} {kind} unknown")
            await act(side, kind, verb, found["active"], f"{verb} {kind} the active one")


@case
async def prepare_activate_taint_revoke(side: Side) -> None:
    for kind in KINDS:
        await states(side, kind, "before")
        prepare = getattr(stub(side), f"Prepare{kind}Authority")
        prepared = await side.call(prepare, getattr(pb, f"Prepare{kind}AuthorityRequest")(), record=False)
        assert prepared is not None
        side.known_ids.setdefault(prepared.prepared_authority.authority_id, f"<{kind} prepared>")
        side.note(f"prepared {kind}", _slot(prepared.prepared_authority))
        found = await states(side, kind, "prepared")
        await act(side, kind, "Taint", found["prepared"], f"taint the prepared {kind}")
        await act(side, kind, "Revoke", found["prepared"], f"revoke the prepared {kind}")
        await act(side, kind, "Activate", found["prepared"], f"activate the prepared {kind}")
        found = await states(side, kind, "activated")
        await act(side, kind, "Activate", found["old"], f"activate the old {kind} again")
        await act(side, kind, "Revoke", found["old"], f"revoke the untainted old {kind}")
        await act(side, kind, "Taint", found["old"], f"taint the old {kind}", REVOKED if kind == "JWT" else "")
        await act(side, kind, "Taint", found["old"], f"taint the old {kind} twice")
        await act(side, kind, "Revoke", found["old"], f"revoke the tainted old {kind}", REVOKED)
        await act(side, kind, "Revoke", found["old"], f"revoke the revoked {kind}", REVOKED)


@case
async def upstream_calls_without_an_upstream_authority(side: Side) -> None:
    for verb in ("Taint", "Revoke"):
        method = getattr(stub(side), f"{verb}X509UpstreamAuthority")
        request = getattr(pb, f"{verb}X509UpstreamAuthorityRequest")
        await side.call(method, request(subject_key_id="0123456789abcdef"), f"{verb} upstream")
        await side.call(method, request(), f"{verb} upstream, no key")


@pytest.mark.parametrize("corpus_case", [pytest.param(function, id=name) for name, function in CASES.items()])
async def test_localauthority_api_answers_as_spire_does(
    corpus_case: Case, server_pair: dict[str, ServerDaemon]
) -> None:
    await assert_same_answers(corpus_case, {name: daemon.socket_path for name, daemon in server_pair.items()})

"""Answers pyspire-server gives as SPIRE v1.13 does, where the differential corpus found them apart.

Each row is one call from one kind of caller (tests/support/server_callers.py) and SPIRE's
status and message for it, as tests/interop/differential recorded them from spire-server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.message import Message
from pyspire.proto.spire.api.server.bundle.v1 import bundle_pb2
from pyspire.proto.spire.api.server.debug.v1 import debug_pb2
from pyspire.proto.spire.api.server.logger.v1 import logger_pb2
from pyspire.proto.spire.api.server.svid.v1 import svid_pb2
from pyspire.proto.spire.api.types import types_pb2

from tests.support.daemons import ServerDaemon, start_server
from tests.support.server_callers import METHODS, Callers, call_method, make_callers

DENIED = "authorization denied for method /spire.api.server.entry.v1.Entry/ListEntries"
ANSWERS = [
    ("Entry.ListEntries", "nobody", "PERMISSION_DENIED", DENIED),
    ("Entry.ListEntries", "agent", "PERMISSION_DENIED", DENIED),
    ("Entry.ListEntries", "downstream", "PERMISSION_DENIED", DENIED),
    ("Debug.GetInfo", "admin", "UNIMPLEMENTED", "unknown service spire.api.server.debug.v1.Debug"),
    ("Logger.GetLogger", "agent", "UNIMPLEMENTED", "unknown service spire.api.server.logger.v1.Logger"),
    (
        "SVID.MintWITSVID",
        "nobody",
        "UNIMPLEMENTED",
        "unknown method MintWITSVID for service spire.api.server.svid.v1.SVID",
    ),
    (
        "SVID.MintWITSVID",
        "local",
        "UNIMPLEMENTED",
        "unknown method MintWITSVID for service spire.api.server.svid.v1.SVID",
    ),
    (
        "LocalAuthority.GetWITAuthorityState",
        "admin",
        "UNIMPLEMENTED",
        "unknown method GetWITAuthorityState for service spire.api.server.localauthority.v1.LocalAuthority",
    ),
    ("LocalAuthority.ActivateX509Authority", "local", "INVALID_ARGUMENT", "no authority ID provided"),
    ("LocalAuthority.TaintJWTAuthority", "local", "INVALID_ARGUMENT", "no authority ID provided"),
    (
        "LocalAuthority.RevokeX509Authority",
        "local",
        "INVALID_ARGUMENT",
        "invalid authority ID: no authority ID provided",
    ),
    (
        "LocalAuthority.TaintX509UpstreamAuthority",
        "local",
        "FAILED_PRECONDITION",
        "upstream authority is not configured",
    ),
    (
        "LocalAuthority.RevokeX509UpstreamAuthority",
        "admin",
        "FAILED_PRECONDITION",
        "upstream authority is not configured",
    ),
    ("Agent.AttestAgent", "nobody", "INVALID_ARGUMENT", "malformed param: missing params"),
    ("Agent.RenewAgent", "agent", "INVALID_ARGUMENT", "params cannot be nil"),
    ("Bundle.AppendBundle", "local", "INVALID_ARGUMENT", "no authorities to append"),
    ("Bundle.PublishJWTAuthority", "downstream", "INVALID_ARGUMENT", "missing JWT authority"),
    ("SVID.BatchNewX509SVID", "agent", "INVALID_ARGUMENT", "missing parameters"),
    ("SVID.NewJWTSVID", "agent", "NOT_FOUND", "entry not found or not authorized"),
    ("Logger.SetLogLevel", "local", "INVALID_ARGUMENT", "newLevel value cannot be LogLevel_UNSPECIFIED"),
]

KEY = ec.generate_private_key(ec.SECP256R1())


def _mint(*uris: str, common_name: str = "") -> svid_pb2.MintX509SVIDRequest:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if uris:
        names = [x509.UniformResourceIdentifier(uri) for uri in uris]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return svid_pb2.MintX509SVIDRequest(csr=builder.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


MINT_REFUSALS = {
    "no URI SAN": (_mint(), "CSR URI SAN is required"),
    "two URI SANs": (_mint("spiffe://example.org/a", "spiffe://example.org/b"), "only one URI SAN is expected"),
    "not spiffe": (_mint("https://example.org/a"), "CSR URI SAN is invalid: scheme is missing or invalid"),
    "other trust domain": (
        _mint("spiffe://other.org/a"),
        'CSR URI SAN is invalid: "spiffe://other.org/a" is not a member of trust domain "example.org"',
    ),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory: Path = tmp_path_factory.mktemp("server")
    daemon = start_server(directory, log_level="WARN", extra="ratelimit {\n attestation = false\n }")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def callers(server: ServerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Callers:
    return asyncio.run(make_callers(server.socket_path, server.port, tmp_path_factory.mktemp("callers")))


async def _answer(callers: Callers, method: str, kind: str) -> tuple[str, str, Message | None]:
    channel = callers.channel(kind)
    try:
        return await call_method(channel, METHODS[method])
    finally:
        channel.close()


@pytest.mark.parametrize(("method", "kind", "code", "message"), ANSWERS, ids=[f"{m}-{k}" for m, k, _, _ in ANSWERS])
async def test_answers_as_spire_does(callers: Callers, method: str, kind: str, code: str, message: str) -> None:
    assert (await _answer(callers, method, kind))[:2] == (code, message)


@pytest.mark.parametrize("name", MINT_REFUSALS)
async def test_mint_x509_svid_refuses_a_csr_in_spires_words(callers: Callers, name: str) -> None:
    request, message = MINT_REFUSALS[name]
    channel = callers.channel("local")
    try:
        answer = await call_method(channel, METHODS["SVID.MintX509SVID"], request)
    finally:
        channel.close()
    assert answer[:2] == ("INVALID_ARGUMENT", message)


async def test_mint_x509_svid_signs_the_subject_of_the_csr(callers: Callers) -> None:
    channel = callers.channel("local")
    try:
        code, _, reply = await call_method(
            channel, METHODS["SVID.MintX509SVID"], _mint("spiffe://example.org/cn", common_name="workload")
        )
    finally:
        channel.close()
    assert code == "OK"
    assert isinstance(reply, svid_pb2.MintX509SVIDResponse)
    assert x509.load_der_x509_certificate(reply.svid.cert_chain[0]).subject.rfc4514_string() == "CN=workload"


async def test_debug_info_counts_the_servers_own_bundle(callers: Callers) -> None:
    """SPIRE's federated_bundles_count counts every bundle the server holds, its own too."""
    code, _, reply = await _answer(callers, "Debug.GetInfo", "local")
    assert code == "OK"
    assert isinstance(reply, debug_pb2.GetInfoResponse)
    assert reply.federated_bundles_count == 1


async def test_debug_info_shows_the_chain_up_to_the_root(callers: Callers) -> None:
    """SPIRE shows the server SVID's verified chain, its root included, subjects in Go's words."""
    code, _, reply = await _answer(callers, "Debug.GetInfo", "local")
    assert code == "OK"
    assert isinstance(reply, debug_pb2.GetInfoResponse)
    assert [f"spiffe://{c.id.trust_domain}{c.id.path}" for c in reply.svid_chain] == [
        "spiffe://example.org/spire/server",
        "spiffe://example.org",
    ]
    assert reply.svid_chain[1].subject.startswith("SERIALNUMBER=")


@pytest.mark.parametrize("level", ["TRACE", "PANIC"])
async def test_log_levels_beyond_pythons_read_back_as_set(callers: Callers, level: str) -> None:
    channel = callers.channel("local")
    try:
        request = logger_pb2.SetLogLevelRequest(new_level=types_pb2.LogLevel.Value(level))
        code, _, reply = await call_method(channel, METHODS["Logger.SetLogLevel"], request)
        await call_method(channel, METHODS["Logger.ResetLogLevel"])
    finally:
        channel.close()
    assert code == "OK"
    assert isinstance(reply, types_pb2.Logger)
    assert types_pb2.LogLevel.Name(reply.current_level) == level


async def test_append_bundle_names_what_it_could_not_convert(callers: Callers) -> None:
    request = bundle_pb2.AppendBundleRequest(jwt_authorities=[types_pb2.JWTKey(public_key=b"key")])
    channel = callers.channel("local")
    try:
        answer = await call_method(channel, METHODS["Bundle.AppendBundle"], request)
    finally:
        channel.close()
    assert answer[:2] == ("INVALID_ARGUMENT", "failed to convert JWT authority: missing key ID")

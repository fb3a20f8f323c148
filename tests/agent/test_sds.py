"""Envoy SDS v3 on a real agent, driven as Envoy drives it: grpcio with xds-protos' own stubs.

The secrets are checked for what Envoy would do with them: the certificate chain verifies
against the trust domain's bundle, the key is the leaf's, the validation contexts carry the
bundle that the server shows. Streams are walked through request, ACK, NACK, stale nonces and
a rotation push.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_spiffe_validator_config_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from envoy.type.v3 import semantic_version_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2
from pyspire.spiffe import Bundle, TrustDomain, X509Svid, verify_x509_svid
from pyspire.spiffe.bundleset import BundleSet

from tests.support.daemons import AgentDaemon, ServerDaemon, agent_config, start_agent, start_server
from tests.support.pki import make_ca
from tests.support.waiting import eventually
from tests.support.workloads import fetched_spiffe_id, x509_context

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
TD = TrustDomain.parse("example.org")
UID = os.getuid()
WEB = "spiffe://example.org/web"
DB = "spiffe://example.org/db"
PARTNER = TrustDomain.parse("partner.org")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    yield daemon
    daemon.stop()


def _entry(server: ServerDaemon, parent: str, spiffe_id: str, *extra: str) -> str:
    out = server.cli(
        "entry", "create", "-parentID", parent, "-spiffeID", spiffe_id, "-selector", f"unix:uid:{UID}", *extra
    ).stdout
    return out.split("Entry ID         : ", 1)[1].split()[0]


def _attested_agent(server: ServerDaemon, directory: Path, **kwargs: object) -> tuple[AgentDaemon, str]:
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    agent = start_agent(directory, server, server.join_token(alias), **kwargs)
    return agent, alias


@pytest.fixture(scope="module")
def partner_bundle(server: ServerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """partner.org's bundle, set on the server as a federated bundle."""
    partner = make_ca("partner.org", name="partner root")
    path = tmp_path_factory.mktemp("partner") / "bundle.pem"
    path.write_bytes(partner.certificate.public_bytes(serialization.Encoding.PEM))
    server.cli("bundle", "set", "-id", "spiffe://partner.org", "-path", str(path))
    return Bundle.parse_x509(TrustDomain.parse("partner.org"), path.read_bytes())


@pytest.fixture(scope="module")
def agent(
    server: ServerDaemon, partner_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentDaemon]:
    daemon, alias = _attested_agent(server, tmp_path_factory.mktemp("agent"))
    _entry(server, alias, WEB)
    time.sleep(1.1)  # creation times are in seconds: web is the first identity, not a tie broken by ID
    _entry(server, alias, DB, "-federatesWith", "spiffe://partner.org")

    def ready() -> bool:
        context = x509_context(daemon)
        return {str(s.spiffe_id) for s in context.svids} == {WEB, DB} and PARTNER in context.bundles

    # Ready when both SVIDs and partner.org's bundle have reached the agent (tests may run in any order).
    eventually(ready, timeout=30)
    yield daemon
    daemon.stop()


def _own_bundle(server: ServerDaemon) -> Bundle:
    return Bundle.parse_x509(TD, server.bundle_pem().encode())


def _secret(resource: object) -> secret_pb2.Secret:
    secret = secret_pb2.Secret()
    assert resource.Unpack(secret)  # type: ignore[attr-defined]
    return secret


def _secrets(response: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    assert all(r.type_url == SECRET for r in response.resources)
    return {s.name: s for s in map(_secret, response.resources)}


def _node(version: tuple[int, int] | None = None, **metadata: object) -> base_pb2.Node:
    node = base_pb2.Node(id="envoy-1", cluster="test")
    if version is not None:
        node.user_agent_build_version.version.CopyFrom(
            semantic_version_pb2.SemanticVersion(major_number=version[0], minor_number=version[1])
        )
    if metadata:
        node.metadata.CopyFrom(struct_pb2.Struct())
        node.metadata.update(metadata)
    return node


def _request(*names: str, node: base_pb2.Node | None = None, **fields: object) -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(type_url=SECRET, resource_names=list(names), node=node or _node(), **fields)


HEADER = (("workload.spiffe.io", "true"),)
"""What contrib/envoy/envoy.yaml has Envoy send (initial_metadata)."""


def fetch(
    agent: AgentDaemon, request: discovery_pb2.DiscoveryRequest, metadata: tuple[tuple[str, str], ...] = HEADER
) -> discovery_pb2.DiscoveryResponse:
    with grpc.insecure_channel(f"unix:{agent.socket_path}") as channel:
        return sds_pb2_grpc.SecretDiscoveryServiceStub(channel).FetchSecrets(request, timeout=20, metadata=metadata)


def _fetch_when_synced(
    agent: AgentDaemon,
    request: discovery_pb2.DiscoveryRequest,
    timeout: float = 30.0,
    metadata: tuple[tuple[str, str], ...] = HEADER,
) -> discovery_pb2.DiscoveryResponse:
    """FetchSecrets, retried while the agent has not yet synced the entry just created."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fetch(agent, request, metadata)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.INVALID_ARGUMENT or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise
            time.sleep(0.3)


def _certificate(server: ServerDaemon, secret: secret_pb2.Secret, spiffe_id: str) -> x509.Certificate:
    """Check a TLS certificate secret as Envoy would use it (an SVID for ``spiffe_id``); its leaf."""
    chain = secret.tls_certificate.certificate_chain.inline_bytes
    key = secret.tls_certificate.private_key.inline_bytes
    assert b"BEGIN PRIVATE KEY" in key
    svid = X509Svid.parse(chain, key)
    verified, _ = verify_x509_svid(svid.chain, BundleSet([_own_bundle(server)]))
    assert str(verified) == spiffe_id
    private = serialization.load_pem_private_key(key, None)
    assert private.public_key().public_numbers() == svid.chain[0].public_key().public_numbers()  # type: ignore[union-attr]
    return svid.chain[0]


# --- FetchSecrets ------------------------------------------------------------------------


def test_a_named_svid_is_a_tls_certificate_that_verifies(server: ServerDaemon, agent: AgentDaemon) -> None:
    secrets = _secrets(fetch(agent, _request(WEB)))
    assert list(secrets) == [WEB]
    _certificate(server, secrets[WEB], WEB)


def test_the_default_names_serve_the_first_svid_and_the_bundle(server: ServerDaemon, agent: AgentDaemon) -> None:
    secrets = _secrets(fetch(agent, _request("default", "ROOTCA", WEB)))
    assert set(secrets) == {"default", "ROOTCA", WEB}
    _certificate(server, secrets["default"], WEB)  # entries in creation order: web first
    validator = secrets["ROOTCA"].validation_context.custom_validator_config
    assert validator.name == "envoy.tls.cert_validator.spiffe"
    config = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig()
    assert validator.typed_config.Unpack(config)
    assert [td.name for td in config.trust_domains] == ["example.org"]
    served = Bundle.parse_x509(TD, config.trust_domains[0].trust_bundle.inline_bytes)
    assert served.x509_authorities == _own_bundle(server).x509_authorities


def test_old_envoys_and_opted_out_nodes_get_trusted_ca(server: ServerDaemon, agent: AgentDaemon) -> None:
    for node in (_node((1, 17)), _node((1, 30), disable_spiffe_cert_validation="true")):
        context = _secrets(fetch(agent, _request("ROOTCA", node=node)))["ROOTCA"].validation_context
        assert not context.HasField("custom_validator_config")
        served = Bundle.parse_x509(TD, context.trusted_ca.inline_bytes)
        assert served.x509_authorities == _own_bundle(server).x509_authorities
    spiffe = _secrets(fetch(agent, _request("ROOTCA", node=_node((1, 30), disable_spiffe_cert_validation=False))))
    assert spiffe["ROOTCA"].validation_context.HasField("custom_validator_config")


def test_federated_bundles_by_name_and_all_bundles_in_one_validator(
    server: ServerDaemon, agent: AgentDaemon, partner_bundle: Bundle
) -> None:
    secrets = _secrets(fetch(agent, _request("ALL", "spiffe://partner.org")))
    config = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig()
    assert secrets["ALL"].validation_context.custom_validator_config.typed_config.Unpack(config)
    served = {
        td.name: Bundle.parse_x509(TrustDomain.parse(td.name), td.trust_bundle.inline_bytes)
        for td in config.trust_domains
    }
    assert list(served) == ["example.org", "partner.org"]
    assert served["partner.org"].x509_authorities == partner_bundle.x509_authorities
    assert served["example.org"].x509_authorities == _own_bundle(server).x509_authorities
    partner = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig()
    assert secrets["spiffe://partner.org"].validation_context.custom_validator_config.typed_config.Unpack(partner)
    assert [td.name for td in partner.trust_domains] == ["partner.org"]


def test_all_bundles_need_the_spiffe_validator(agent: AgentDaemon) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        fetch(agent, _request("ALL", node=_node((1, 16))))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "SPIFFE certificate validator" in str(refused.value.details())


def test_an_empty_request_gets_everything_the_caller_may_have(agent: AgentDaemon) -> None:
    secrets = _secrets(fetch(agent, _request()))
    assert set(secrets) == {"spiffe://example.org", "spiffe://partner.org", WEB, DB}
    assert secrets["spiffe://example.org"].HasField("validation_context")


def test_a_name_the_caller_has_no_right_to_is_refused(agent: AgentDaemon) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        fetch(agent, _request(WEB, "spiffe://example.org/admin"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spiffe://example.org/admin" in str(refused.value.details())
    with pytest.raises(grpc.RpcError) as foreign:
        fetch(agent, _request("spiffe://stranger.org"))  # no entry federates with it
    assert foreign.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_other_resource_types_and_delta_are_refused(agent: AgentDaemon) -> None:
    wrong = discovery_pb2.DiscoveryRequest(
        type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster", resource_names=[WEB]
    )
    with pytest.raises(grpc.RpcError) as refused:
        fetch(agent, wrong)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "envoy.config.cluster.v3.Cluster" in str(refused.value.details())
    with grpc.insecure_channel(f"unix:{agent.socket_path}") as channel:
        delta = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).DeltaSecrets(
            iter([discovery_pb2.DeltaDiscoveryRequest(type_url=SECRET)]), timeout=10, metadata=HEADER
        )
        with pytest.raises(grpc.RpcError) as unimplemented:
            list(delta)
    assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_security_header_is_required_unless_turned_off(
    server: ServerDaemon, agent: AgentDaemon, tmp_path: Path
) -> None:
    for metadata in ((), (("workload.spiffe.io", "false"),), HEADER + HEADER):
        with pytest.raises(grpc.RpcError) as refused:
            fetch(agent, _request(WEB), metadata)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "security header missing from request" in str(refused.value.details())
        assert "initial_metadata" in str(refused.value.details())
    relaxed, alias = _attested_agent(server, tmp_path / "relaxed", extra="sds {\n require_security_header = false\n}")
    spiffe_id = f"spiffe://example.org/spire-style-envoy/{uuid.uuid4()}"
    _entry(server, alias, spiffe_id)
    try:
        assert spiffe_id in _secrets(_fetch_when_synced(relaxed, _request(spiffe_id), metadata=()))
    finally:
        relaxed.stop()


# --- StreamSecrets -----------------------------------------------------------------------


class Envoy:
    """One StreamSecrets call, written to and read from as Envoy does."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self.call = call
        self.responses: asyncio.Queue[object] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while (response := await self.call.read()) is not grpc.aio.EOF:
                await self.responses.put(response)
        except grpc.aio.AioRpcError as err:
            await self.responses.put(err)

    async def send(self, request: discovery_pb2.DiscoveryRequest) -> None:
        await self.call.write(request)

    async def receive(self, timeout: float = 20.0) -> discovery_pb2.DiscoveryResponse:
        response = await asyncio.wait_for(self.responses.get(), timeout)
        assert isinstance(response, discovery_pb2.DiscoveryResponse), response
        return response

    async def ended(self, timeout: float = 20.0) -> grpc.aio.AioRpcError:
        error = await asyncio.wait_for(self.responses.get(), timeout)
        assert isinstance(error, grpc.aio.AioRpcError), error
        return error

    async def quiet(self, seconds: float = 2.0) -> bool:
        """Whether nothing arrives for ``seconds``."""
        await asyncio.sleep(seconds)
        return self.responses.empty()

    def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()


async def _stream(agent: AgentDaemon) -> AsyncIterator[Envoy]:
    async with grpc.aio.insecure_channel(f"unix:{agent.socket_path}") as channel:
        envoy = Envoy(sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets(metadata=HEADER))
        try:
            yield envoy
        finally:
            envoy.close()


def test_stream_acks_nacks_stale_nonces_and_new_names(agent: AgentDaemon) -> None:
    async def scenario() -> None:
        async for envoy in _stream(agent):
            await envoy.send(_request(WEB))
            first = await envoy.receive()
            assert first.version_info
            assert first.nonce
            assert first.type_url == SECRET
            assert list(_secrets(first)) == [WEB]

            # ACK: nothing new to say.
            await envoy.send(_request(WEB, version_info=first.version_info, response_nonce=first.nonce))
            assert await envoy.quiet()

            # A stale nonce asking for other names is ignored...
            await envoy.send(_request(DB, version_info=first.version_info, response_nonce="stale"))
            assert await envoy.quiet()

            # ...while new names under the current nonce are answered at once.
            await envoy.send(_request(WEB, DB, version_info=first.version_info, response_nonce=first.nonce))
            second = await envoy.receive()
            assert set(_secrets(second)) == {WEB, DB}
            assert second.nonce != first.nonce
            assert second.version_info != first.version_info

            # NACK: Envoy keeps the previous version and says why; the agent logs it.
            await envoy.send(
                _request(
                    WEB,
                    DB,
                    version_info=first.version_info,
                    response_nonce=second.nonce,
                    error_detail=status_pb2.Status(code=3, message="bad certificate for listener x"),
                )
            )
            assert await envoy.quiet()

    asyncio.run(scenario())
    log = agent.log()
    assert "Received unexpected nonce; ignoring request" in log
    assert "Client rejected expected version and rolled back" in log
    assert "bad certificate for listener x" in log


def test_a_new_svid_is_pushed_with_a_new_version(server: ServerDaemon, tmp_path: Path) -> None:
    agent, alias = _attested_agent(server, tmp_path / "agent")
    spiffe_id = f"spiffe://example.org/rotating/{uuid.uuid4()}"
    entry_id = _entry(server, alias, spiffe_id)
    _fetch_when_synced(agent, _request(spiffe_id))

    async def scenario() -> None:
        async for envoy in _stream(agent):
            await envoy.send(_request(spiffe_id))
            first = await envoy.receive()
            await envoy.send(_request(spiffe_id, version_info=first.version_info, response_nonce=first.nonce))
            before = _certificate(server, _secrets(first)[spiffe_id], spiffe_id)
            # A new revision of the entry makes the agent mint a new SVID: Envoy gets it unasked.
            server.cli(
                "entry",
                "update",
                "-entryID",
                entry_id,
                "-parentID",
                alias,
                "-spiffeID",
                spiffe_id,
                "-selector",
                f"unix:uid:{UID}",
                "-x509SVIDTTL",
                "1800",
            )
            pushed = await envoy.receive(timeout=30)
            after = _certificate(server, _secrets(pushed)[spiffe_id], spiffe_id)
            assert after.serial_number != before.serial_number
            assert pushed.version_info != first.version_info
            assert pushed.nonce != first.nonce

            # The agent stops: the stream ends with UNAVAILABLE, never OK.
            assert agent.stop() == 0
            error = await envoy.ended()
            assert error.code() == grpc.StatusCode.UNAVAILABLE

    try:
        asyncio.run(scenario())
    finally:
        agent.stop()


def test_either_api_can_be_turned_off_in_the_config_or_on_the_command_line(
    server: ServerDaemon, tmp_path: Path
) -> None:
    no_sds, alias = _attested_agent(server, tmp_path / "no-sds", extra="disable_sds_api = true")
    _entry(server, alias, f"spiffe://example.org/only-workload-api/{uuid.uuid4()}")
    try:
        fetched_spiffe_id(no_sds)
        with pytest.raises(grpc.RpcError) as refused:
            fetch(no_sds, _request())
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        no_sds.stop()
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    text, socket_path = agent_config(tmp_path / "only-sds", server)
    flags = ["-joinToken", server.join_token(alias), "-disableWorkloadAPI"]
    only_sds = AgentDaemon("pyspire-agent", tmp_path / "only-sds", socket_path, text, flags).start()
    assert isinstance(only_sds, AgentDaemon)
    spiffe_id = f"spiffe://example.org/only-sds/{uuid.uuid4()}"
    _entry(server, alias, spiffe_id)
    try:
        assert spiffe_id in _secrets(_fetch_when_synced(only_sds, _request(spiffe_id)))
        with grpc.insecure_channel(f"unix:{only_sds.socket_path}") as channel:
            fetch_x509 = channel.unary_stream("/SpiffeWorkloadAPI/FetchX509SVID")
            with pytest.raises(grpc.RpcError) as off:
                list(fetch_x509(b"", metadata=[("workload.spiffe.io", "true")], timeout=10))
        assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        only_sds.stop()

"""The built-in x509pop NodeAttestor: chain verification, proof of possession, refusals."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID
from pyspire.plugin.agent_path import AgentPathTemplate
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Internal, InvalidArgument, PermissionDenied, PluginConfigError
from pyspire.plugin.facades import AgentNodeAttestor, ServerNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from tests.support.pki import Issued, make_ca


def node_certificate(
    issuer: Issued,
    common_name: str = "node-1",
    lifetime: timedelta = timedelta(days=1),
    sans: tuple[str, ...] = (),
    *,
    ips: tuple[str, ...] = (),
    serial: int | None = None,
    key: Any = None,
    digital_signature: bool | None = True,
) -> Issued:
    """A node certificate; ``digital_signature=None`` leaves keyUsage out."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = datetime.now(UTC) - timedelta(minutes=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    )
    if digital_signature is not None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=not digital_signature,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in sans]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Pki:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.root = make_ca(name="node root")
        self.intermediate = make_ca(issuer=self.root, name="node intermediate")
        (tmp_path / "roots.pem").write_bytes(pem(self.root.certificate))

    def server(self, **plugin_data: Any) -> ServerNodeAttestor:
        data = {"ca_bundle_path": str(self.tmp_path / "roots.pem"), **plugin_data}
        handle = load_plugin("server", "NodeAttestor", "x509pop", data, make_core_config(self.tmp_path / "s"))
        assert isinstance(handle, ServerNodeAttestor)
        return handle

    def agent(self, node: Issued, *, with_intermediate: bool = True) -> AgentNodeAttestor:
        (self.tmp_path / "node.pem").write_bytes(pem(node.certificate))
        (self.tmp_path / "node.key").write_bytes(key_pem(node.key))
        data = {
            "private_key_path": str(self.tmp_path / "node.key"),
            "certificate_path": str(self.tmp_path / "node.pem"),
        }
        if with_intermediate:
            (self.tmp_path / "intermediates.pem").write_bytes(pem(self.intermediate.certificate))
            data["intermediates_path"] = str(self.tmp_path / "intermediates.pem")
        handle = load_plugin("agent", "NodeAttestor", "x509pop", data, make_core_config(self.tmp_path / "a"))
        assert isinstance(handle, AgentNodeAttestor)
        return handle


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def test_node_with_chain_attests_with_spire_path_and_selectors(pki: Pki) -> None:
    node = node_certificate(
        pki.intermediate,
        sans=(
            "x509pop://example.org/datacenter/us-east-1",
            "x509pop://example.org/rack/a%2Fb",  # percent-decoded, as Go's url.URL.Path is
            "x509pop://example.org/lonely",  # no value: no selector
            "x509pop://other.org/datacenter/eu-west-1",  # another trust domain: ignored
            "spiffe://example.org/node",
        ),
        serial=0xABC,
    )
    agent = pki.agent(node)
    result = pki.server().attest(agent.payload(), agent.answer_challenge)
    fingerprint = hashlib.sha1(node.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert result.agent_path == f"/x509pop/{fingerprint}"
    assert result.can_reattest
    selectors = set(result.selector_values)
    assert "subject:cn:node-1" in selectors
    assert "serialnumber:0abc" in selectors  # SPIRE pads to an even number of digits
    assert {s for s in selectors if s.startswith("san:")} == {"san:datacenter:us-east-1", "san:rack:a/b"}
    for ca in (pki.intermediate, pki.root):
        digest = hashlib.sha1(ca.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        assert f"ca:fingerprint:{digest}" in selectors


def test_agent_path_template_uses_the_common_name(pki: Pki) -> None:
    agent = pki.agent(node_certificate(pki.intermediate, common_name="web-7"))
    server = pki.server(agent_path_template="/cn/{{ .Subject.CommonName }}")
    assert server.attest(agent.payload(), agent.answer_challenge).agent_path == "/cn/web-7"


def test_agent_path_template_uses_san_selectors_and_the_padded_serial(pki: Pki) -> None:
    node = node_certificate(pki.intermediate, sans=("x509pop://example.org/host/web-7",), serial=0x1F)
    agent = pki.agent(node)
    server = pki.server(agent_path_template="/x509pop/{{ .URISanSelectors.host }}/{{ .SerialNumberHex }}")
    assert server.attest(agent.payload(), agent.answer_challenge).agent_path == "/x509pop/web-7/1f"


def test_node_cas_need_basic_constraints_not_key_usage(pki: Pki, tmp_path: Path) -> None:
    root = make_ca(name="root without keyUsage", key_usage=False)
    intermediate = make_ca(issuer=root, name="intermediate without keyUsage", key_usage=False)
    (tmp_path / "roots.pem").write_bytes(pem(root.certificate))
    pki.intermediate = intermediate
    agent = pki.agent(node_certificate(intermediate))
    assert pki.server().attest(agent.payload(), agent.answer_challenge).can_reattest


def test_a_leaf_must_allow_digital_signature(pki: Pki) -> None:
    for usage, message in ((False, "must allow digitalSignature"), (None, r"keyUsage \(2\.5\.29\.15\)")):
        agent = pki.agent(node_certificate(pki.intermediate, digital_signature=usage))
        with pytest.raises(PermissionDenied, match=message):
            pki.server().attest(agent.payload(), agent.answer_challenge)


def test_max_intermediates_and_max_rsa_key_size(pki: Pki) -> None:
    agent = pki.agent(node_certificate(pki.intermediate))
    payload = agent.payload()
    with pytest.raises(CatalogError, match="max_intermediates"):
        pki.server(max_intermediates=0)
    with pytest.raises(InvalidArgument, match="too many intermediate certificates"):
        pki.server(max_intermediates=1).attest(
            json.dumps({"certificates": json.loads(payload)["certificates"] * 2}).encode(), agent.answer_challenge
        )
    rsa_node = node_certificate(pki.intermediate, key=rsa.generate_private_key(public_exponent=65537, key_size=3072))
    agent = pki.agent(rsa_node)
    with pytest.raises(InvalidArgument, match=r"leaf certificate key size too large \(3072 bits"):
        pki.server(max_rsa_key_size=2048).attest(agent.payload(), agent.answer_challenge)
    assert pki.server(max_rsa_key_size=3072).attest(agent.payload(), agent.answer_challenge).can_reattest


def test_verify_client_ip_needs_the_agents_address_among_the_ip_sans(pki: Pki) -> None:
    agent = pki.agent(node_certificate(pki.intermediate, ips=("192.0.2.7", "2001:db8::7")))
    server = pki.server(verify_client_ip=True)
    for address in ("192.0.2.7", "2001:db8::7", "::ffff:192.0.2.7"):
        assert server.attest(agent.payload(), agent.answer_challenge, address).can_reattest
    with pytest.raises(PermissionDenied, match=r"client IP 192\.0\.2\.8 does not match any certificate IP SAN"):
        server.attest(agent.payload(), agent.answer_challenge, "192.0.2.8")
    with pytest.raises(Internal, match="client IP not available"):
        server.attest(agent.payload(), agent.answer_challenge)


def test_certificate_of_another_ca_is_refused(pki: Pki) -> None:
    stranger = make_ca(name="stranger")
    agent = pki.agent(node_certificate(stranger), with_intermediate=False)
    with pytest.raises(PermissionDenied, match="certificate verification failed"):
        pki.server().attest(agent.payload(), agent.answer_challenge)


def test_expired_certificate_is_refused(pki: Pki) -> None:
    node = node_certificate(pki.intermediate, lifetime=timedelta(seconds=1))
    agent = pki.agent(node)
    payload = agent.payload()
    import time  # noqa: PLC0415

    time.sleep(1.5)
    with pytest.raises(PermissionDenied, match="certificate verification failed"):
        pki.server().attest(payload, agent.answer_challenge)


def test_a_replayed_answer_cannot_pass_a_new_nonce(pki: Pki) -> None:
    agent = pki.agent(node_certificate(pki.intermediate))
    server = pki.server()
    recorded: list[bytes] = []

    def record(challenge: bytes) -> bytes:
        recorded.append(agent.answer_challenge(challenge))
        return recorded[-1]

    payload = agent.payload()
    server.attest(payload, record)
    with pytest.raises(PermissionDenied, match="challenge response verification failed"):
        server.attest(payload, lambda _challenge: recorded[0])


def test_stolen_certificate_without_its_key_is_refused(pki: Pki) -> None:
    victim = node_certificate(pki.intermediate)
    thief_key = ec.generate_private_key(ec.SECP256R1())
    payload = json.dumps(
        {
            "certificates": [
                base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                for c in (victim.certificate, pki.intermediate.certificate)
            ]
        }
    ).encode()

    def thief_answer(challenge: bytes) -> bytes:
        nonce = base64.b64decode(json.loads(challenge)["ecdsa_signature"]["nonce"])
        own = b"\x01" * 32
        digest = hashlib.sha256(nonce + own).digest()
        r, s = decode_dss_signature(thief_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
        answer = {"nonce": own, "r": r.to_bytes(32, "big"), "s": s.to_bytes(32, "big")}
        return json.dumps(
            {"rsa_signature": None, "ecdsa_signature": {k: base64.b64encode(v).decode() for k, v in answer.items()}}
        ).encode()

    with pytest.raises(PermissionDenied, match="signature does not match"):
        pki.server().attest(payload, thief_answer)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"certificates": []}', "non-empty certificates"),
        (b'{"certificates": ["%%%"]}', "not valid base64"),
        (b'{"certificates": ["AAAA"]}', "cannot be parsed"),
        (json.dumps({"certificates": ["AAAA"] * 6}).encode(), r"too many intermediate certificates \(5; max_inter"),
        (json.dumps({"certificates": [base64.b64encode(b"x" * 70000).decode()]}).encode(), "larger than"),
    ],
)
def test_malformed_payloads_are_invalid_argument(pki: Pki, payload: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        pki.server().attest(payload, lambda _c: b"")


def test_the_challenge_and_answer_are_spires_wire_format(pki: Pki) -> None:
    """As SPIRE's x509pop: a keyed challenge, the agent's own nonce, a signature of SHA-256 of both nonces."""
    node = node_certificate(pki.intermediate)
    agent = pki.agent(node)
    server_nonce = b"\x07" * 32
    sent = json.dumps({"rsa_signature": None, "ecdsa_signature": {"nonce": base64.b64encode(server_nonce).decode()}})
    answer = json.loads(agent.answer_challenge(sent.encode()))
    assert answer["rsa_signature"] is None
    assert set(answer["ecdsa_signature"]) == {"nonce", "r", "s"}
    agent_nonce = base64.b64decode(answer["ecdsa_signature"]["nonce"])
    assert len(agent_nonce) == 32
    assert agent_nonce != server_nonce
    r, s = (int.from_bytes(base64.b64decode(answer["ecdsa_signature"][k]), "big") for k in ("r", "s"))
    digest = hashlib.sha256(server_nonce + agent_nonce).digest()
    node.key.public_key().verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    with pytest.raises(InvalidArgument, match="expecting ECDSA challenge"):
        agent.answer_challenge(
            json.dumps({"rsa_signature": {"nonce": base64.b64encode(server_nonce).decode()}}).encode()
        )


def test_rsa_nodes_answer_with_pss_signatures(pki: Pki) -> None:
    node = node_certificate(pki.intermediate, common_name="rsa-node", key=rsa.generate_private_key(65537, 2048))
    agent = pki.agent(node)
    seen: list[dict[str, Any]] = []

    def relay(challenge: bytes) -> bytes:
        seen.append(json.loads(challenge))
        return agent.answer_challenge(challenge)

    result = pki.server().attest(agent.payload(), relay)
    assert "subject:cn:rsa-node" in result.selector_values
    assert seen[0]["ecdsa_signature"] is None
    assert len(base64.b64decode(seen[0]["rsa_signature"]["nonce"])) == 32


def test_keys_spire_cannot_challenge_are_refused(pki: Pki) -> None:
    node = node_certificate(pki.intermediate, key=ed25519.Ed25519PrivateKey.generate())
    agent = pki.agent(node)
    with pytest.raises(PermissionDenied, match="unsupported key type"):
        pki.server().attest(agent.payload(), agent.answer_challenge)


def test_garbage_challenge_answer_is_invalid_argument(pki: Pki) -> None:
    agent = pki.agent(node_certificate(pki.intermediate))
    with pytest.raises(InvalidArgument, match="challenge response is not JSON"):
        pki.server().attest(agent.payload(), lambda _c: b"\xff")


def test_configuration_errors_name_the_key(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="mode"):
        pki.server(mode="spiffe")
    for key in ("svid_prefix", "spiffe_prefix"):
        with pytest.raises(CatalogError, match=f'{key}.*applies to mode "spiffe" only'):
            pki.server(**{key: "/spire-exchange"})
    with pytest.raises(CatalogError, match="only one of ca_bundle_path or ca_bundle_paths"):
        pki.server(ca_bundle_paths=[str(tmp_path / "roots.pem")])
    with pytest.raises(CatalogError, match="max_rsa_key_size"):
        pki.server(max_rsa_key_size=-1)
    with pytest.raises(CatalogError, match="ca_bundle_path"):
        pki.server(ca_bundle_path=str(tmp_path / "missing.pem"))
    with pytest.raises(CatalogError, match="agent_path_template"):
        pki.server(agent_path_template="{{ .Fingerprint | printf }}")
    other = node_certificate(pki.intermediate)
    mismatched = node_certificate(pki.intermediate)
    (tmp_path / "node.pem").write_bytes(pem(other.certificate))
    (tmp_path / "node.key").write_bytes(key_pem(mismatched.key))
    with pytest.raises(CatalogError, match="does not belong to the certificate"):
        load_plugin(
            "agent",
            "NodeAttestor",
            "x509pop",
            {"private_key_path": str(tmp_path / "node.key"), "certificate_path": str(tmp_path / "node.pem")},
            make_core_config(tmp_path / "a"),
        )


def test_template_subset() -> None:
    template = AgentPathTemplate("{{ .PluginName }}/{{.A.B}}-x")
    assert template.render({"PluginName": "p", "A": {"B": 7}}) == "/p/7-x"
    for bad in ("{{ printf .A }}", "{{ .A }", "{{ if .A }}x{{ end }}"):
        with pytest.raises(PluginConfigError):
            AgentPathTemplate(bad)

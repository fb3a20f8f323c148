"""sshpop: what the server accepts and refuses, and why, with certificates from ssh-keygen."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from pyspire.plugin.errors import CatalogError, ErrorCode, PluginError
from pyspire.plugin.facades import AgentNodeAttestor, ServerNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire_sshpop.agent import AgentSshPopConfig
from pyspire_sshpop.server import ServerSshPopConfig

from plugins.sshpop.tests.conftest import fingerprint_of
from plugins.sshpop.tests.keygen import KeyPair, certify, new_key, ssh_keygen

Loader = Callable[..., ServerNodeAttestor]


@pytest.fixture
def handles() -> Iterator[list[ServerNodeAttestor | AgentNodeAttestor]]:
    opened: list[ServerNodeAttestor | AgentNodeAttestor] = []
    yield opened
    for handle in opened:
        handle.close()


@pytest.fixture
def server_for(tmp_path: Path, handles: list, ca: KeyPair) -> Loader:
    """A configured server half; ``cert_authorities`` is the session CA unless given."""

    def load(**plugin_data: object) -> ServerNodeAttestor:
        plugin_data.setdefault("cert_authorities", [ca.public_line])
        handle = load_plugin("server", "NodeAttestor", "sshpop", plugin_data, make_core_config(tmp_path / "data"))
        assert isinstance(handle, ServerNodeAttestor)
        handles.append(handle)
        return handle

    return load


@pytest.fixture
def agent_for(tmp_path: Path, handles: list) -> Callable[[KeyPair, Path], AgentNodeAttestor]:
    def load(key: KeyPair, certificate: Path) -> AgentNodeAttestor:
        handle = load_plugin(
            "agent",
            "NodeAttestor",
            "sshpop",
            {"host_key_path": str(key.path), "host_cert_path": str(certificate)},
            make_core_config(tmp_path / "agent-data"),
        )
        assert isinstance(handle, AgentNodeAttestor)
        handles.append(handle)
        return handle

    return load


def refusal(
    server: ServerNodeAttestor, agent: AgentNodeAttestor, answer: Callable[[bytes], bytes] | None = None
) -> PluginError:
    with pytest.raises(PluginError) as raised:
        server.attest(agent.payload(), answer or agent.answer_challenge)
    assert str(raised.value).startswith("nodeattestor(sshpop): "), raised.value
    return raised.value


# --- accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize(("key_type", "bits"), [("rsa", 3072), ("ecdsa", 384), ("ecdsa", 521), ("ed25519", None)])
def test_host_keys_of_every_supported_type_attest(
    server_for: Loader, agent_for: Callable, ca: KeyPair, keys: Path, key_type: str, bits: int | None
) -> None:
    key = new_key(keys / "types", key_type, bits)
    certificate = certify(ca, key, "node1.example.com")
    agent = agent_for(key, certificate)
    result = server_for().attest(agent.payload(), agent.answer_challenge)
    assert result.agent_path == f"/sshpop/{fingerprint_of(certificate)}"
    assert result.selector_values == ()
    assert result.can_reattest is True


def test_an_ssh_rsa_sha1_answer_as_spire_agents_sign_is_accepted(
    server_for: Loader, agent_for: Callable, host_key: KeyPair, host_cert: Path
) -> None:
    """SPIRE's agent signs RSA challenges with ``ssh-rsa`` (SHA-1): its agents must attest to pyspire."""
    private = load_ssh_private_key(host_key.path.read_bytes(), None)
    assert isinstance(private, rsa.RSAPrivateKey)

    def spire_agent(challenge: bytes) -> bytes:
        server_nonce = base64.b64decode(json.loads(challenge)["Nonce"])
        nonce = os.urandom(32)
        digest = hashes.Hash(hashes.SHA256())
        digest.update(server_nonce + nonce)
        blob = private.sign(digest.finalize(), padding.PKCS1v15(), hashes.SHA1())
        signature = {"Format": "ssh-rsa", "Blob": base64.b64encode(blob).decode(), "Rest": None}
        return json.dumps({"Nonce": base64.b64encode(nonce).decode(), "Signature": signature}).encode()

    agent = agent_for(host_key, host_cert)
    assert server_for().attest(agent.payload(), spire_agent).agent_path == f"/sshpop/{fingerprint_of(host_cert)}"


def test_the_payload_is_spires(agent_for: Callable, host_key: KeyPair, host_cert: Path) -> None:
    payload = json.loads(agent_for(host_key, host_cert).payload())
    assert payload == {"Certificate": host_cert.read_text().split()[1]}


def test_canonical_domain_names_the_host_and_the_template_uses_it(
    server_for: Loader, agent_for: Callable, host_key: KeyPair, host_cert: Path
) -> None:
    server = server_for(
        canonical_domain="example.com",
        agent_path_template="/{{ .PluginName }}/{{ .Hostname }}/{{ .KeyId }}/{{ .Serial }}",
    )
    agent = agent_for(host_key, host_cert)
    assert server.attest(agent.payload(), agent.answer_challenge).agent_path == "/sshpop/node1/node1/7"
    # Without canonical_domain the host name is the whole first principal.
    plain = server_for(agent_path_template="{{ .Hostname }}")
    assert plain.attest(agent.payload(), agent.answer_challenge).agent_path == "/node1.example.com"


def test_cas_from_a_file_join_the_listed_ones(
    server_for: Loader, agent_for: Callable, tmp_path: Path, keys: Path, host_key: KeyPair, host_cert: Path
) -> None:
    other = new_key(keys / "other-ca")
    listed = tmp_path / "cas.pub"
    listed.write_text(f"# the fleet's CAs\n\n{other.public_line}\n")
    agent = agent_for(host_key, host_cert)  # certified by the listed CA
    from_file = agent_for(host_key, certify(other, host_key, "node1"))  # by the CA in the file
    server = server_for(cert_authorities_path=str(listed))
    for node in (agent, from_file):
        assert server.attest(node.payload(), node.answer_challenge).agent_path.startswith("/sshpop/")
    only_file = server_for(cert_authorities=[], cert_authorities_path=str(listed))
    assert only_file.attest(from_file.payload(), from_file.answer_challenge).can_reattest
    assert "not signed by a trusted CA" in str(refusal(only_file, agent))


def test_a_ca_line_with_authorized_keys_options_is_read(
    server_for: Loader, agent_for: Callable, ca: KeyPair, host_key: KeyPair, host_cert: Path
) -> None:
    server = server_for(cert_authorities=[f'cert-authority,principals="node1, node2" {ca.public_line}'])
    agent = agent_for(host_key, host_cert)
    assert server.attest(agent.payload(), agent.answer_challenge).can_reattest


def test_a_renewed_certificate_on_disk_is_presented_next_time(
    server_for: Loader, agent_for: Callable, ca: KeyPair, host_key: KeyPair, tmp_path: Path
) -> None:
    current = tmp_path / "host-cert.pub"
    current.write_bytes(certify(ca, host_key, "node1", validity="-2d:-1d").read_bytes())
    server = server_for()
    agent = agent_for(host_key, current)
    assert "expired" in str(refusal(server, agent))
    renewed = certify(ca, host_key, "node1")
    current.write_bytes(renewed.read_bytes())
    assert server.attest(agent.payload(), agent.answer_challenge).agent_path == f"/sshpop/{fingerprint_of(renewed)}"


# --- refused ----------------------------------------------------------------------------


def test_a_certificate_from_an_untrusted_ca_is_refused(
    server_for: Loader, agent_for: Callable, keys: Path, host_key: KeyPair
) -> None:
    rogue = new_key(keys / "rogue")
    error = refusal(server_for(), agent_for(host_key, certify(rogue, host_key, "node1.example.com")))
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert "the certificate is not signed by a trusted CA" in str(error)


def test_a_user_certificate_is_refused(server_for: Loader, agent_for: Callable, ca: KeyPair, host_key: KeyPair) -> None:
    error = refusal(server_for(), agent_for(host_key, certify(ca, host_key, "node1", host=False)))
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert "the certificate is a user certificate" in str(error)


@pytest.mark.parametrize(
    ("validity", "reason"),
    [("-2d:-1d", "the certificate has expired"), ("+1d:+2d", "the certificate is not valid yet")],
)
def test_a_certificate_outside_its_validity_is_refused(
    server_for: Loader, agent_for: Callable, ca: KeyPair, host_key: KeyPair, validity: str, reason: str
) -> None:
    error = refusal(server_for(), agent_for(host_key, certify(ca, host_key, "node1", validity=validity)))
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert reason in str(error)


def test_a_certificate_valid_forever_is_accepted(
    server_for: Loader, agent_for: Callable, ca: KeyPair, host_key: KeyPair
) -> None:
    agent = agent_for(host_key, certify(ca, host_key, "node1", validity="always:forever"))
    assert server_for().attest(agent.payload(), agent.answer_challenge).can_reattest


@pytest.mark.parametrize(
    ("principals", "reason"),
    [
        (("node1.other.org", "node1.example.com"), 'first principal "node1.other.org" is not in domain ".example.com"'),
        (("example.com",), 'first principal "example.com" is not in domain ".example.com"'),
        (("node1.badexample.com",), 'is not in domain ".example.com"'),
    ],
)
def test_a_first_principal_outside_the_canonical_domain_is_refused(
    server_for: Loader, agent_for: Callable, ca: KeyPair, host_key: KeyPair, principals: tuple[str, ...], reason: str
) -> None:
    """SPIRE looks at the first principal only, and it must end with ``.<canonical_domain>``."""
    error = refusal(server_for(canonical_domain="example.com"), agent_for(host_key, certify(ca, host_key, *principals)))
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert reason in str(error)


def test_a_certificate_without_principals_is_refused(
    server_for: Loader, agent_for: Callable, ca: KeyPair, host_key: KeyPair
) -> None:
    error = refusal(server_for(), agent_for(host_key, certify(ca, host_key)))
    assert "the certificate has no valid principals" in str(error)


def test_a_principal_that_is_no_host_name_is_refused(
    server_for: Loader, agent_for: Callable, ca: KeyPair, host_key: KeyPair
) -> None:
    error = refusal(server_for(), agent_for(host_key, certify(ca, host_key, "fe80::1")))
    assert 'the first principal "fe80::1" is not a host name' in str(error)


def test_a_critical_option_other_than_source_address_is_refused(
    server_for: Loader, agent_for: Callable, ca: KeyPair, host_key: KeyPair
) -> None:
    error = refusal(server_for(), agent_for(host_key, certify(ca, host_key, "node1", options=("force-command=ls",))))
    assert 'unsupported critical option "force-command"' in str(error)
    agent = agent_for(host_key, certify(ca, host_key, "node1", options=("source-address=10.0.0.0/8",)))
    assert server_for().attest(agent.payload(), agent.answer_challenge).can_reattest


def test_a_certificate_whose_ca_signature_is_broken_is_refused(
    server_for: Loader, agent_for: Callable, host_key: KeyPair, host_cert: Path
) -> None:
    agent = agent_for(host_key, host_cert)
    document = json.loads(agent.payload())
    wire = bytearray(base64.b64decode(document["Certificate"]))
    wire[-10] ^= 0x01  # inside the CA's Ed25519 signature
    payload = json.dumps({"Certificate": base64.b64encode(bytes(wire)).decode()}).encode()
    with pytest.raises(PluginError, match="the CA's signature on the certificate does not verify") as raised:
        server_for().attest(payload, agent.answer_challenge)
    assert raised.value.code is ErrorCode.PERMISSION_DENIED


def test_an_answer_signed_by_another_key_is_refused(
    server_for: Loader, agent_for: Callable, keys: Path, ca: KeyPair, host_key: KeyPair, host_cert: Path
) -> None:
    """The certificate can be copied; the host key cannot: an impostor's own key signs in vain."""
    impostor_key = new_key(keys / "impostor", "rsa", 2048)
    impostor = agent_for(impostor_key, certify(ca, impostor_key, "impostor"))
    impostor.payload()  # the impostor's agent has its own key at hand
    victim = agent_for(host_key, host_cert)
    with pytest.raises(PluginError) as raised:
        server_for().attest(victim.payload(), impostor.answer_challenge)
    assert raised.value.code is ErrorCode.PERMISSION_DENIED
    assert "challenge response verification failed: the signature is not the host key's" in str(raised.value)


def test_an_answer_for_another_challenge_is_refused(
    server_for: Loader, agent_for: Callable, host_key: KeyPair, host_cert: Path
) -> None:
    agent = agent_for(host_key, host_cert)
    other = json.dumps({"Nonce": base64.b64encode(os.urandom(32)).decode()}).encode()
    with pytest.raises(PluginError, match="the signature is not the host key's"):
        server_for().attest(agent.payload(), lambda challenge: agent.answer_challenge(other))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda answer: {**answer, "Nonce": base64.b64encode(b"short").decode()}, "the nonce must be 32 bytes, not 5"),
        (lambda answer: {**answer, "Signature": "ssh-rsa"}, '"Signature" must be an object'),
        (
            lambda answer: {**answer, "Signature": {**answer["Signature"], "Format": "ssh-ed25519"}},
            "a ssh-ed25519 signature for an ssh-rsa key",
        ),
        (lambda answer: {**answer, "Signature": {**answer["Signature"], "Blob": "%%%"}}, '"Blob" is not valid base64'),
        (lambda answer: {**answer, "Signature": {**answer["Signature"], "Rest": "AAAA"}}, "security-key signatures"),
    ],
)
def test_malformed_answers_are_refused_with_their_reason(
    server_for: Loader, agent_for: Callable, host_key: KeyPair, host_cert: Path, change: Callable, reason: str
) -> None:
    agent = agent_for(host_key, host_cert)

    def tampered(challenge: bytes) -> bytes:
        return json.dumps(change(json.loads(agent.answer_challenge(challenge)))).encode()

    with pytest.raises(PluginError) as raised:
        server_for().attest(agent.payload(), tampered)
    assert reason in str(raised.value)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (lambda key, cert: {"Certificate": key.public_line.split()[1]}, "is a plain key, not a certificate"),
        (lambda key, cert: {"Certificate": ""}, "no certificate"),
        (lambda key, cert: {"certificate": cert.read_text().split()[1]}, '"Certificate" must be a base64 string'),
        (
            lambda key, cert: {
                "Certificate": base64.b64encode(base64.b64decode(cert.read_text().split()[1]) + b"x").decode()
            },
            "cannot be parsed",
        ),
    ],
)
def test_malformed_payloads_are_refused_with_their_reason(
    server_for: Loader, host_key: KeyPair, host_cert: Path, payload: Callable, reason: str
) -> None:
    with pytest.raises(PluginError) as raised:
        server_for().attest(json.dumps(payload(host_key, host_cert)).encode(), lambda challenge: b"")
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT
    assert reason in str(raised.value)


# --- configuration ----------------------------------------------------------------------


def test_server_configuration_errors_name_the_key(
    server_for: Loader, tmp_path: Path, ca: KeyPair, host_cert: Path
) -> None:
    comments = tmp_path / "comments.pub"
    comments.write_text("# nothing here\n\n")
    cases = [
        ({"cert_authorities": []}, 'key "cert_authorities": at least one CA key is required'),
        ({"cert_authorities": ["ssh-ed25519 not-base64!"]}, 'key "cert_authorities": entry 1 is not a CA key'),
        ({"cert_authorities": [host_cert.read_text()]}, "a certificate is not a CA key"),
        ({"cert_authorities_path": str(tmp_path / "absent")}, 'key "cert_authorities_path": cannot read'),
        ({"cert_authorities_path": str(comments)}, f'key "cert_authorities_path": {comments} holds no CA key'),
        (
            {"agent_path_template": "{{ index .ValidPrincipals 0 }}"},
            'key "agent_path_template": unsupported template action',
        ),
        ({"cert_authorities": "ssh-ed25519 AAAA"}, 'key "cert_authorities"'),
    ]
    for plugin_data, message in cases:
        with pytest.raises(CatalogError) as raised:
            server_for(**plugin_data)
        assert message in str(raised.value), plugin_data
    bad_line = tmp_path / "bad.pub"
    bad_line.write_text(f"{ca.public_line}\nssh-rsa AAAAB3NzaC1yc2E\n")
    with pytest.raises(CatalogError, match=f'key "cert_authorities_path": {bad_line} line 2 is not a CA key'):
        server_for(cert_authorities=[], cert_authorities_path=str(bad_line))


def test_agent_configuration_errors_name_the_key(
    agent_for: Callable, keys: Path, host_key: KeyPair, host_cert: Path, tmp_path: Path
) -> None:
    other = new_key(keys / "other-host")
    encrypted = KeyPair(tmp_path / "encrypted")
    ssh_keygen("-t", "ed25519", "-N", "secret", "-f", str(encrypted.path))
    cases = [
        (KeyPair(tmp_path / "absent"), host_cert, 'key "host_key_path": cannot read'),
        (host_key, tmp_path / "absent-cert.pub", 'key "host_cert_path": cannot read'),
        (encrypted, host_cert, f'key "host_key_path": {encrypted.path} is encrypted'),
        (KeyPair(host_cert), host_cert, f'key "host_key_path": {host_cert} is not a readable private key'),
        (host_key, host_key.path.with_name(host_key.path.name + ".pub"), "is a plain key, not a certificate"),
        (other, host_cert, 'key "host_key_path": ' + f"{other.path} is not the key {host_cert} certifies"),
    ]
    for key, certificate, message in cases:
        with pytest.raises(CatalogError) as raised:
            agent_for(key, certificate)
        assert message in str(raised.value), (key, certificate)


def test_the_agent_defaults_are_openssh_host_rsa_files(tmp_path: Path) -> None:
    if Path("/etc/ssh/ssh_host_rsa_key-cert.pub").exists():
        pytest.skip("this machine has an RSA host certificate")
    with pytest.raises(CatalogError) as raised:
        load_plugin("agent", "NodeAttestor", "sshpop", {}, make_core_config(tmp_path))
    message = str(raised.value)
    assert (
        'key "host_key_path": cannot read /etc/ssh/ssh_host_rsa_key:' in message
        or 'key "host_cert_path": cannot read /etc/ssh/ssh_host_rsa_key-cert.pub:' in message
    ), message


def test_the_answer_is_spires(agent_for: Callable, host_key: KeyPair, host_cert: Path) -> None:
    """A SPIRE server reads Go's encoding of ``ssh.Signature``: exactly these names."""
    agent = agent_for(host_key, host_cert)
    agent.payload()
    answer = json.loads(agent.answer_challenge(json.dumps({"Nonce": base64.b64encode(bytes(32)).decode()}).encode()))
    assert set(answer) == {"Nonce", "Signature"}
    assert len(base64.b64decode(answer["Nonce"])) == 32
    assert answer["Signature"]["Format"] == "rsa-sha2-256"
    assert answer["Signature"]["Rest"] is None
    assert len(base64.b64decode(answer["Signature"]["Blob"])) == 256


@pytest.mark.parametrize(("section", "config_class"), [("Agent", AgentSshPopConfig), ("Server", ServerSshPopConfig)])
def test_the_readme_documents_every_key_with_its_default(section: str, config_class: type) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split(f"## {section} configuration", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("`")[1]: line for line in table.splitlines() if line.startswith("| `")}
    assert set(rows) == {f.name for f in dataclasses.fields(config_class)}
    for name, default in [(f.name, f.default) for f in dataclasses.fields(config_class)]:
        if isinstance(default, str) and default:
            assert f"`{default}`" in rows[name], name

"""tpm_devid's checks, each against evidence a real swtpm produced: what attests, and what is refused and why."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from pyspire.plugin.attestation import AttestationResult
from pyspire.plugin.errors import CatalogError, Internal, InvalidArgument, PluginError
from pyspire.plugin.facades import AgentNodeAttestor, ServerNodeAttestor
from pyspire.plugin.testing.loading import load_plugin, make_core_config
from pyspire_tpm_devid.server import fingerprint
from pyspire_tpm_devid.structures import parse_public

from plugins.tpm_devid.tests.conftest import agent_data, server_data
from plugins.tpm_devid.tests.provisioning import (
    Authority,
    DevId,
    SoftwareTpm,
    new_authority,
    provision_devid,
    provision_ek,
    tpm2_tools,
)


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Callable[[str, Mapping[str, Any]], Any]]:
    handles: list[Any] = []

    def loader(role: str, data: Mapping[str, Any]) -> Any:
        handle = load_plugin(role, "NodeAttestor", "tpm_devid", data, make_core_config(tmp_path / "data"))  # type: ignore[arg-type]
        handles.append(handle)
        return handle

    yield loader
    for handle in handles:
        handle.close()


@pytest.fixture
def server(load: Callable[[str, Mapping[str, Any]], Any], ca_files: Path) -> ServerNodeAttestor:
    return load("server", server_data(ca_files))


@pytest.fixture
def agent(load: Callable[[str, Mapping[str, Any]], Any], software_tpm: SoftwareTpm, devid: DevId) -> AgentNodeAttestor:
    return load("agent", agent_data(software_tpm, devid))


def attest(
    server: ServerNodeAttestor,
    agent: AgentNodeAttestor,
    payload: bytes | None = None,
    answer: Callable[[bytes], bytes] | None = None,
) -> AttestationResult:
    return server.attest(agent.payload() if payload is None else payload, answer or agent.answer_challenge)


def edited(payload: bytes, **fields: bytes | list[bytes]) -> bytes:
    """The payload with fields replaced (bytes as Go's base64)."""
    message = json.loads(payload)
    for key, value in fields.items():
        message[key] = (
            [base64.b64encode(item).decode() for item in value]
            if isinstance(value, list)
            else base64.b64encode(value).decode()
        )
    return json.dumps(message).encode()


def field(payload: bytes, key: str) -> bytes:
    return base64.b64decode(json.loads(payload)[key])


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def test_a_node_attests_as_its_devid_certificate_with_spires_selectors(
    server: ServerNodeAttestor, agent: AgentNodeAttestor, devid: DevId, devid_ca: Authority
) -> None:
    result = attest(server, agent)
    assert result.agent_path == f"/tpm_devid/{fingerprint(devid.certificate)}"
    assert result.selector_values == (
        "subject:cn:node1.example.org",
        "issuer:cn:Test DevID Root CA",
        f"ca:fingerprint:{fingerprint(devid_ca.certificate)}",
    )
    assert result.can_reattest
    # What SPIRE's server reads: Go's field names and base64, the blobs TPM structures without a size.
    payload = json.loads(agent.payload())
    assert set(payload) == {
        "DevIDCert",
        "DevIDPub",
        "EKCert",
        "EKPub",
        "AKPub",
        "CertifiedDevID",
        "CertificationSignature",
    }
    assert base64.b64decode(payload["DevIDPub"]) == devid.public_path.read_bytes()
    assert base64.b64decode(payload["CertifiedDevID"])[:4] == b"\xffTCG"


def test_an_intermediate_ca_in_the_devid_file_is_used_and_every_ca_is_a_selector(
    load: Callable[[str, Mapping[str, Any]], Any],
    server: ServerNodeAttestor,
    software_tpm: SoftwareTpm,
    devid_ca: Authority,
    tmp_path: Path,
) -> None:
    intermediate = new_authority("Test DevID Issuing CA", devid_ca)
    chained = provision_devid(
        software_tpm, intermediate, tmp_path / "chained", common_name="node2", chain=(intermediate.certificate,)
    )
    result = attest(server, load("agent", agent_data(software_tpm, chained)))
    assert result.selector_values == (
        "subject:cn:node2",
        "issuer:cn:Test DevID Issuing CA",
        f"ca:fingerprint:{fingerprint(intermediate.certificate)}",
        f"ca:fingerprint:{fingerprint(devid_ca.certificate)}",
    )


def test_an_ecc_devid_key_with_a_password_attests(
    load: Callable[[str, Mapping[str, Any]], Any],
    server: ServerNodeAttestor,
    software_tpm: SoftwareTpm,
    devid_ca: Authority,
    tmp_path: Path,
) -> None:
    ecc = provision_devid(software_tpm, devid_ca, tmp_path / "ecc", key_type="ecc", password=b"s3cret")
    result = attest(server, load("agent", agent_data(software_tpm, ecc, devid_password="s3cret")))
    assert result.agent_path == f"/tpm_devid/{fingerprint(ecc.certificate)}"
    wrong = load("agent", agent_data(software_tpm, ecc, devid_password="guess"))
    with pytest.raises(Internal, match=r"unable to certify DevID key: tpm2\.Certify failed"):
        wrong.payload()


def test_a_devid_key_made_with_tpm2_tools_attests(
    load: Callable[[str, Mapping[str, Any]], Any],
    server: ServerNodeAttestor,
    software_tpm: SoftwareTpm,
    devid_ca: Authority,
    tmp_path: Path,
) -> None:
    """Provisioned by hand as an operator would: the SRK from tpm2_createprimary (the TCG's H-1 template),
    the key from tpm2_create, whose blobs carry their 16-bit size (SPIRE's carry none)."""
    storage = "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda"
    tpm2_tools(
        software_tpm,
        "tpm2_createprimary",
        "-C",
        "o",
        "-g",
        "sha256",
        "-G",
        "rsa2048:aes128cfb",
        "-a",
        storage,
        "-c",
        "srk.ctx",
        cwd=tmp_path,
    )
    signing = "sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth"
    tpm2_tools(
        software_tpm,
        "tpm2_create",
        "-C",
        "srk.ctx",
        "-G",
        "rsa2048:rsassa-sha256",
        "-a",
        signing,
        "-u",
        "key.pub",
        "-r",
        "key.priv",
        cwd=tmp_path,
    )
    tpm2_tools(software_tpm, "tpm2_flushcontext", "-t", cwd=tmp_path)
    public = (tmp_path / "key.pub").read_bytes()
    assert struct.unpack(">H", public[:2])[0] == len(public) - 2  # TPM2B_PUBLIC
    certificate = devid_ca.issue(parse_public(public[2:]).key, "hand-made")
    (tmp_path / "devid.pem").write_bytes(certificate.public_bytes(Encoding.PEM))
    agent = load(
        "agent",
        {
            "tpm_device_path": str(software_tpm.socket),
            "devid_cert_path": str(tmp_path / "devid.pem"),
            "devid_pub_path": str(tmp_path / "key.pub"),
            "devid_priv_path": str(tmp_path / "key.priv"),
        },
    )
    assert field(agent.payload(), "DevIDPub") == public[2:]  # sent as SPIRE sends it
    assert attest(server, agent).agent_path == f"/tpm_devid/{fingerprint(certificate)}"


def test_a_devid_certificate_from_another_ca_is_refused(
    server: ServerNodeAttestor,
    load: Callable[[str, Mapping[str, Any]], Any],
    software_tpm: SoftwareTpm,
    tmp_path: Path,
) -> None:
    rogue = provision_devid(software_tpm, new_authority("Test DevID Root CA"), tmp_path / "rogue")
    with pytest.raises(
        InvalidArgument,
        match="unable to verify DevID signature: verification failed: certificate signed by unknown authority",
    ):
        attest(server, load("agent", agent_data(software_tpm, rogue)))


def test_an_ek_certificate_from_another_manufacturer_is_refused(
    load: Callable[[str, Mapping[str, Any]], Any], agent: AgentNodeAttestor, ca_files: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-manufacturer.pem"
    other.write_bytes(new_authority("Test TPM Manufacturer Root CA").pem())
    server = load("server", {**server_data(ca_files), "endorsement_ca_path": str(other)})
    with pytest.raises(
        InvalidArgument,
        match="cannot verify EK signature: endorsement certificate verification failed: certificate signed by unknown authority",
    ):
        attest(server, agent)


def test_an_ek_certificate_for_another_key_is_refused(
    server: ServerNodeAttestor, agent: AgentNodeAttestor, endorsement_ca: Authority
) -> None:
    stranger = endorsement_ca.issue(rsa.generate_private_key(65537, 2048).public_key(), "")
    with pytest.raises(
        InvalidArgument, match="public key in EK certificate differs from public key created via EK template"
    ):
        attest(server, agent, edited(agent.payload(), EKCert=der(stranger)))


def test_a_wrong_credential_activation_answer_is_refused(server: ServerNodeAttestor, agent: AgentNodeAttestor) -> None:
    def tampered(challenge: bytes) -> bytes:
        answer = json.loads(agent.answer_challenge(challenge))  # a genuine DevID signature...
        answer["CredActivation"] = base64.b64encode(bytes(32)).decode()  # ...and a guessed credential
        return json.dumps(answer).encode()

    with pytest.raises(InvalidArgument, match="credential activation failed: nonces are different"):
        attest(server, agent, answer=tampered)


def test_a_devid_key_resident_in_another_tpm_is_refused(
    server: ServerNodeAttestor,
    agent: AgentNodeAttestor,
    devid_ca: Authority,
    endorsement_ca: Authority,
    tmp_path: Path,
) -> None:
    """A genuine DevID (trusted certificate, key in a trusted TPM) presented with another TPM's EK and AK."""
    elsewhere = SoftwareTpm(tmp_path / "elsewhere")
    try:
        provision_ek(elsewhere, endorsement_ca)
        other = provision_devid(elsewhere, devid_ca, tmp_path / "other", common_name="node9")
    finally:
        elsewhere.stop()
    payload = edited(agent.payload(), DevIDCert=[der(other.certificate)], DevIDPub=other.public_path.read_bytes())
    with pytest.raises(InvalidArgument, match="cannot verify that DevID is in the same TPM than AK: certify failed"):
        attest(server, agent, payload)


def test_a_devid_certificate_for_a_software_key_is_refused_though_it_signs_the_nonce(
    server: ServerNodeAttestor, agent: AgentNodeAttestor, devid_ca: Authority
) -> None:
    """SPIRE never compares the certificate's key with the TPM-certified one: a trusted certificate
    for a key kept outside the TPM, beside any genuine TPM key, would attest (docs/compatibility.md)."""
    software_key = rsa.generate_private_key(65537, 2048)
    certificate = devid_ca.issue(software_key.public_key(), "stolen")

    def signed_by_software(challenge: bytes) -> bytes:
        answer = json.loads(agent.answer_challenge(challenge))  # the TPM activates the credential
        nonce = base64.b64decode(json.loads(challenge)["DevID"])
        answer["DevID"] = base64.b64encode(software_key.sign(nonce, padding.PKCS1v15(), hashes.SHA256())).decode()
        return json.dumps(answer).encode()

    with pytest.raises(InvalidArgument, match="the DevID certificate does not certify the DevID key public blob"):
        attest(server, agent, edited(agent.payload(), DevIDCert=[der(certificate)]), signed_by_software)


def test_an_attestation_key_that_is_not_restricted_is_refused(
    server: ServerNodeAttestor, agent: AgentNodeAttestor
) -> None:
    """An unrestricted key can sign any bytes, a forged certification among them."""
    payload = agent.payload()
    ak = bytearray(field(payload, "AKPub"))
    attributes = struct.unpack(">I", ak[4:8])[0] & ~0x00010000
    ak[4:8] = struct.pack(">I", attributes)
    with pytest.raises(InvalidArgument, match="not a restricted signing key fixed to its TPM"):
        attest(server, agent, edited(payload, AKPub=bytes(ak)))


def test_a_nonce_signed_by_another_key_is_refused(server: ServerNodeAttestor, agent: AgentNodeAttestor) -> None:
    def forged(challenge: bytes) -> bytes:
        answer = json.loads(agent.answer_challenge(challenge))
        key = rsa.generate_private_key(65537, 2048)
        answer["DevID"] = base64.b64encode(key.sign(b"nonce", padding.PKCS1v15(), hashes.SHA256())).decode()
        return json.dumps(answer).encode()

    with pytest.raises(InvalidArgument, match="devID challenge verification failed"):
        attest(server, agent, answer=forged)


def test_payloads_that_are_not_spires_shape_are_refused_with_spires_messages(
    server: ServerNodeAttestor, agent: AgentNodeAttestor
) -> None:
    with pytest.raises(InvalidArgument, match="missing attestation payload"):
        attest(server, agent, b"")
    with pytest.raises(InvalidArgument, match="unable to unmarshall attestation data: not a JSON object"):
        attest(server, agent, b"[]")
    with pytest.raises(InvalidArgument, match="no DevID certificate to attest"):
        attest(server, agent, edited(agent.payload(), DevIDCert=[]))
    with pytest.raises(InvalidArgument, match="unable to parse DevID intermediate certificate 0"):
        attest(server, agent, edited(agent.payload(), DevIDCert=[field(agent.payload(), "EKCert"), b"\x30\x03junk"]))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("AKPub", "missing attestation key public blob"),
        ("DevIDPub", "missing DevID key public blob"),
        ("EKCert", "missing endorsement certificate"),
        ("EKPub", "missing endorsement key public blob"),
    ],
)
def test_missing_residency_evidence_is_refused_by_name(
    server: ServerNodeAttestor, agent: AgentNodeAttestor, key: str, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        attest(server, agent, edited(agent.payload(), **{key: b""}))


def test_plugin_data_is_checked_at_start(
    load: Callable[[str, Mapping[str, Any]], Any],
    ca_files: Path,
    software_tpm: SoftwareTpm,
    devid: DevId,
    tmp_path: Path,
) -> None:
    with pytest.raises(CatalogError, match="devid_ca_path is required"):
        load("server", {"endorsement_ca_path": str(ca_files / "endorsement-ca.pem")})
    with pytest.raises(CatalogError, match="endorsement_ca_path is required"):
        load("server", {"devid_ca_path": str(ca_files / "devid-ca.pem")})
    with pytest.raises(CatalogError, match="cannot read /nonexistent"):
        load("server", {**server_data(ca_files), "devid_ca_path": "/nonexistent"})
    for key in ("devid_cert_path", "devid_priv_path", "devid_pub_path"):
        data = agent_data(software_tpm, devid)
        del data[key]
        with pytest.raises(CatalogError, match=f"{key} is required"):
            load("agent", data)
    for key in ("devid_cert_path", "devid_priv_path", "devid_pub_path"):
        with pytest.raises(
            CatalogError, match=f"{key}.*unable to load DevID files: cannot read /nonexistent: No such file"
        ) as raised:
            load("agent", agent_data(software_tpm, devid, **{key: "/nonexistent"}))
        assert "cannot load certificate" not in str(raised.value)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x23garbage")
    with pytest.raises(CatalogError, match=r"devid_pub_path.*not a TPM public area"):
        load("agent", agent_data(software_tpm, devid, devid_pub_path=str(garbage)))
    with pytest.raises(CatalogError, match=r"devid_cert_path.*cannot load certificate"):
        load("agent", agent_data(software_tpm, devid, devid_cert_path=str(garbage)))


def test_an_agent_whose_tpm_is_gone_says_so(
    load: Callable[[str, Mapping[str, Any]], Any], devid: DevId, software_tpm: SoftwareTpm, tmp_path: Path
) -> None:
    agent = load("agent", agent_data(software_tpm, devid, tpm_device_path=str(tmp_path / "no-tpm")))
    with pytest.raises(PluginError, match="unable to start a new TPM session: cannot open TPM"):
        agent.payload()


def test_intermediates_that_all_sign_one_another_are_refused_quickly(
    server: ServerNodeAttestor, agent: AgentNodeAttestor, devid: DevId
) -> None:
    """Thirty CA certificates of one name and one key: 30^7 paths to try without Go's signature-check budget."""
    loop = new_authority("Loop CA")
    intermediates = [loop.issue(loop.key.public_key(), "Loop CA", ca=True) for _ in range(30)]
    leaf = loop.issue(rsa.generate_private_key(65537, 2048).public_key(), "node")
    payload = edited(agent.payload(), DevIDCert=[der(leaf)] + [der(item) for item in intermediates])
    with pytest.raises(InvalidArgument, match="signature check attempts limit reached"):
        attest(server, agent, payload)

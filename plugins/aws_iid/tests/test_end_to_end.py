"""A real server and agent attesting with aws_iid: moto for EC2, an IMDS on loopback.

The server starts while "AWS" (moto) is down: the agent's attempts fail inside the server
(Internal), the agent retries (within SPIRE's minute) and nothing is stored; a metadata service
answering 503 is waited out the same way. Once AWS answers the agent is attested, a workload
gets its SVID (through an entry selecting an empty tag value, as SPIRE's selectors allow), and
the same document presented by another agent is refused as a replay. A document AWS really
signed passes the server's signature check with the certificate the plugin ships. An instance
whose root volume was detached, or replaced after launch, is refused by the block-device check
(reliability case 10) with no node record, while an untouched one attests on the same server.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.exceptions import GRPCError
from pyspire.agent.client import ServerUnavailable
from pyspire.crypto import LocalSigner, build_csr
from pyspire.spiffe.x509svid import leaf_spiffe_id

from plugins.aws_iid.tests.fakes import (
    GENUINE,
    ImdsServer,
    RegionSigner,
    RewrittenEc2,
    identity_document,
    launch_instance,
    payload,
)
from tests.server.test_api_security import attested_agent_id, new_client, no_challenge
from tests.support.daemons import ServerDaemon, start_agent, start_server
from tests.support.free_port import free_port
from tests.support.moto import ACCOUNT, MotoServer, aws_environment
from tests.support.waiting import eventually
from tests.support.workloads import fetched_spiffe_id, register_this_process, x509_context


def wait_for(condition: str, read_log: Callable[[], str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while condition not in read_log():
        assert time.monotonic() < deadline, f"{condition!r} not logged:\n{read_log()}"
        time.sleep(0.2)


def test_agent_attests_with_aws_iid_and_a_replay_is_refused(
    tmp_path: Path, us_west_2: RegionSigner, imds: ImdsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    aws_env = aws_environment(f"http://127.0.0.1:{port}")
    certificate = us_west_2.write(tmp_path)
    server = start_server(
        tmp_path / "server",
        env=aws_env,
        plugins=(
            'NodeAttestor "aws_iid" {\n plugin_data {\n'
            f'  region_certificates = {{ "us-west-2" = "{certificate}" }}\n'
            " }\n }"
        ),
    )
    attestor = f'NodeAttestor "aws_iid" {{\n plugin_data {{\n ec2_metadata_endpoint = "{imds.endpoint}"\n }}\n }}'
    moto: MotoServer | None = None
    agent = second = None
    try:
        imds.document = identity_document("i-0123456789abcdef0")
        imds.rsa2048 = us_west_2.sign(imds.document)
        agent = start_agent(tmp_path / "agent", server, node_attestor=attestor, wait=False)
        wait_for("The server could not complete attestation; retrying", agent.log)
        assert "failed to describe the instance" in agent.log()
        assert "aws_iid" not in server.cli("agent", "list").stdout

        # AWS comes back and knows the instance: the next attempt succeeds. Meanwhile the
        # metadata service is briefly unavailable too, which the agent also waits out.
        imds.down = True
        moto = MotoServer(port)
        for name, value in aws_env.items():
            monkeypatch.setenv(name, value)
        instance = launch_instance({"role": "frontend", "spare": ""})
        imds.document = identity_document(instance.instance_id)
        imds.rsa2048 = us_west_2.sign(imds.document)
        wait_for("cannot gather evidence yet", agent.log)
        imds.down = False
        agent.wait_ready(timeout=60)
        agent_id = f"spiffe://example.org/spire/agent/aws_iid/{ACCOUNT}/us-west-2/{instance.instance_id}"
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Attestation type  : aws_iid" in shown
        assert "Can re-attest     : false" in shown
        assert "Selectors         : aws_iid:tag:role:frontend" in shown
        assert "Selectors         : aws_iid:tag:spare:\n" in shown

        server.cli(
            "entry", "create", "-node", "-spiffeID", "spiffe://example.org/node/spare",
            "-selector", "aws_iid:tag:spare:",
        )  # fmt: skip
        register_this_process(server, "spiffe://example.org/node/spare", "spiffe://example.org/frontend")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/frontend"

        # Another agent presenting the same (genuine) document is a replay.
        second = start_agent(tmp_path / "second", server, node_attestor=attestor, wait=False)
        assert second.process is not None
        assert second.process.wait(30) == 1
        assert "the server refused attestation (PERMISSION_DENIED)" in second.log()
        assert "attestation data has already been used to attest an agent" in second.log()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
        # Reliability case 7: the server logs the incident, and the first agent is unaffected.
        assert "possible replay" in server.log()
        register_this_process(server, agent_id, "spiffe://example.org/after-replay")
        assert eventually(
            lambda: "spiffe://example.org/after-replay" in {str(s.spiffe_id) for s in x509_context(agent).svids},
            timeout=30,
        )
        # SPIRE purges only agents that can attest again: purging this one would open its
        # spent evidence to a replay. Its SVID (1 h) expires before "now + 2 h": selected but for that.
        assert agent_id not in server.cli("agent", "purge", "-expiredFor=-2h", "-dryRun").stdout
        server.cli("agent", "purge", "-expiredFor=-2h")
        assert agent_id in server.cli("agent", "list").stdout
    finally:
        for daemon in (second, agent, server):
            if daemon is not None:
                daemon.stop()
        if moto is not None:
            moto.stop()


def test_a_genuine_aws_document_passes_the_signature_check_with_the_shipped_certificate(
    tmp_path: Path, imds: ImdsServer, moto_server: MotoServer
) -> None:
    """AWS's own signature verifies with the shipped us-west-2 certificate; EC2 then decides.

    moto does not know the (long gone) instance, so the node is refused by the instance
    lookup that comes after the signature check, with PERMISSION_DENIED. The same document
    with one bit of its signature changed is refused by the signature check itself.
    """
    genuine = next(g for g in GENUINE if g["region"] == "us-west-2")
    moto_server.reset()
    server = start_server(
        tmp_path / "server",
        env=moto_server.environment(),
        plugins='NodeAttestor "aws_iid" {\n plugin_data {}\n }',  # no region_certificates: the shipped ones
    )
    attestor = f'NodeAttestor "aws_iid" {{\n plugin_data {{\n ec2_metadata_endpoint = "{imds.endpoint}"\n }}\n }}'
    try:
        imds.document = genuine["document"]
        imds.rsa2048 = genuine["rsa2048"]
        agent = start_agent(tmp_path / "agent", server, node_attestor=attestor, wait=False)
        assert agent.process is not None
        assert agent.process.wait(60) == 1, agent.log()
        assert "(PERMISSION_DENIED): nodeattestor(aws_iid): instance " in agent.log()
        assert f"{genuine['instance_id']} does not exist" in agent.log()

        signature = bytearray(base64.b64decode("".join(genuine["rsa2048"].split())))
        signature[-40] ^= 0x01
        imds.rsa2048 = base64.b64encode(bytes(signature)).decode()
        tampered = start_agent(tmp_path / "tampered", server, node_attestor=attestor, wait=False)
        assert tampered.process is not None
        assert tampered.process.wait(60) == 1, tampered.log()
        assert "the signature does not verify with the region's AWS certificate" in tampered.log()
        assert server.cli("agent", "count").stdout.strip() == "0 attested agents"
    finally:
        server.stop()


def _resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_forged_documents_attest_nothing_on_a_real_server(
    tmp_path: Path, aws: MotoServer, us_west_2: RegionSigner, eu_west_1: RegionSigner
) -> None:
    """Reliability case 8 through the server's AttestAgent: every forgery is refused as
    INVALID_ARGUMENT (as SPIRE refuses a signature that does not verify), no node record is made, and a
    10 MB payload does not grow the server. Then the genuine document attests, with the identity
    of the instance that was signed, not the one a forgery named."""
    mine, victim = launch_instance(), launch_instance()
    genuine = identity_document(mine.instance_id)
    signature = base64.b64decode(us_west_2.sign(genuine))
    forgeries = {
        "document-swapped-under-a-valid-signature": payload(
            identity_document(victim.instance_id), us_west_2.sign(genuine)
        ),
        "no-signature": payload(genuine, ""),
        "truncated-signature": payload(genuine, base64.b64encode(signature[:-40]).decode()),
        "rsa1024-signature-only": payload(
            genuine, "", signature=base64.b64encode(b"an RSA-1024 signature over another document").decode()
        ),
        "signed-by-another-regions-certificate": payload(genuine, eu_west_1.sign(genuine)),
        "ten-megabytes": b"{" + b" " * (10 * 1024 * 1024) + b"}",
    }
    expected = {
        "document-swapped-under-a-valid-signature": ("INVALID_ARGUMENT", "does not match the signed document"),
        "no-signature": ("INVALID_ARGUMENT", "has no signature"),
        "truncated-signature": ("INVALID_ARGUMENT", "the signature cannot be parsed"),
        "rsa1024-signature-only": ("INVALID_ARGUMENT", "only RSA-2048 (PKCS #7) signatures are accepted"),
        "signed-by-another-regions-certificate": (
            "INVALID_ARGUMENT",
            "does not verify with the region's AWS certificate",
        ),
        # Refused by gRPC's 4 MiB message limit before any of it reaches the plugin.
        "ten-megabytes": ("refused by the transport", "received message larger than max"),
    }
    server = start_server(
        tmp_path / "server",
        env=aws.environment(),
        extra="ratelimit {\n attestation = false\n }",
        plugins=(
            'NodeAttestor "aws_iid" {\n plugin_data {\n region_certificates = {'
            f' "us-west-2" = "{us_west_2.write(tmp_path)}", "eu-west-1" = "{eu_west_1.write(tmp_path)}"'
            " }\n }\n }"
        ),
    )

    async def attest(data: bytes) -> str:
        client = new_client(server)
        try:
            chain, _ = await client.attest(
                "aws_iid", data, build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1()))), no_challenge
            )
        finally:
            client.close()
        return str(leaf_spiffe_id(chain[0]))

    try:
        assert server.process is not None
        with pytest.raises(GRPCError):  # the first attestation loads what the server loads lazily
            asyncio.run(attest(payload(genuine, "")))
        resident = _resident_bytes(server.process.pid)
        for name, data in forgeries.items():
            with pytest.raises((GRPCError, ServerUnavailable)) as raised:
                asyncio.run(attest(data))
            status, reason = expected[name]
            got = raised.value.status.name if isinstance(raised.value, GRPCError) else "refused by the transport"
            assert (got, reason in str(raised.value)) == (status, True), (name, raised.value)
            assert server.cli("agent", "count").stdout.strip() == "0 attested agents", name
        assert _resident_bytes(server.process.pid) - resident < 64 * 1024 * 1024
        assert "Traceback" not in server.log()

        agent_id = asyncio.run(attest(payload(genuine, us_west_2.sign(genuine))))
        assert agent_id == f"spiffe://example.org/spire/agent/aws_iid/{ACCOUNT}/us-west-2/{mine.instance_id}"
        assert victim.instance_id not in server.cli("agent", "list").stdout
    finally:
        server.stop()


def test_a_tag_in_the_agent_path_template_cannot_name_the_server_or_another_path(
    tmp_path: Path, aws: MotoServer, us_west_2: RegionSigner
) -> None:
    """Reliability case 9 with EC2 tags, which whoever runs the instance chooses: a value that is
    no clean path segment fails attestation with no node record; a valid one is kept verbatim
    under the agent namespace, never normalised into the server's ID."""
    refused = ["../../server", ".", "..", "%2e%2e", "a//b", "x/../../../spire/server"]
    verbatim = ["A/B", "spire/server"]
    instances = {value: launch_instance({"name": value}) for value in refused + verbatim}
    server = start_server(
        tmp_path / "server",
        env=aws.environment(),
        extra="ratelimit {\n attestation = false\n }",
        plugins=(
            'NodeAttestor "aws_iid" {\n plugin_data {\n'
            f'  region_certificates = {{ "us-west-2" = "{us_west_2.write(tmp_path)}" }}\n'
            '  agent_path_template = "/{{ .PluginName }}/{{ .Tags.name }}"\n'
            " }\n }"
        ),
    )

    async def attest(instance_id: str) -> str:
        document = identity_document(instance_id)
        client = new_client(server)
        try:
            chain, _ = await client.attest(
                "aws_iid",
                payload(document, us_west_2.sign(document)),
                build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1()))),
                no_challenge,
            )
        finally:
            client.close()
        return str(leaf_spiffe_id(chain[0]))

    try:
        for value in refused:
            with pytest.raises(GRPCError) as raised:
                asyncio.run(attest(instances[value].instance_id))
            # SPIRE: Internal "invalid agent ID" (the attestor, not the caller, produced it).
            assert raised.value.status.name == "INTERNAL", (value, raised.value)
            assert server.cli("agent", "count").stdout.strip() == "0 attested agents", value
        for value in verbatim:
            agent_id = asyncio.run(attest(instances[value].instance_id))
            assert agent_id == f"spiffe://example.org/spire/agent/aws_iid/{value}"
        listed = server.cli("agent", "list").stdout
        assert "spiffe://example.org/spire/server\n" not in listed
        assert server.cli("agent", "count").stdout.strip() == "2 attested agents"
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def _attached_later(volumes: set[str], delay: timedelta, rewritten: list[str]) -> Callable[[str], str]:
    """A DescribeInstances rewrite that moves the attach time of each of ``volumes`` ``delay`` later.

    It reads as it would had those volumes been swapped in that long after launch; nothing else
    (the volume IDs, which device is the root) is touched. Each volume rewritten is recorded.
    """

    def aged(ebs: re.Match[str]) -> str:
        block = ebs.group(0)
        volume = re.search(r"<volumeId>([^<]+)</volumeId>", block)
        if volume is None or volume.group(1) not in volumes:
            return block
        rewritten.append(volume.group(1))

        def later(stamp: re.Match[str]) -> str:
            moved = datetime.fromisoformat(stamp.group(1).replace("Z", "+00:00")) + delay
            return f"<attachTime>{moved.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</attachTime>"

        return re.sub(r"<attachTime>([^<]+)</attachTime>", later, block)

    return lambda answer: re.sub(r"<ebs>.*?</ebs>", aged, answer, flags=re.S)


def _attest_signed(server: ServerDaemon, signer: RegionSigner, instance_id: str) -> str:
    """AttestAgent with ``instance_id``'s genuinely signed document; the agent ID issued."""
    document = identity_document(instance_id)
    return attested_agent_id(server, "aws_iid", payload(document, signer.sign(document)))


def test_a_tampered_root_volume_attests_nothing_on_a_real_server(
    tmp_path: Path, aws: MotoServer, us_west_2: RegionSigner
) -> None:
    """Reliability case 10 through the server's AttestAgent, with documents the region really signed.

    In moto, one instance's root volume is detached, and another's is replaced: detached, and a
    fresh volume attached at the root device name (the relay shows that swap five minutes after
    launch). Both are refused by the block-device check with PERMISSION_DENIED and no node record;
    an untouched instance on the same server attests, so the record check can fail."""
    ec2 = boto3.client("ec2", region_name="us-west-2")

    def root_of(instance_id: str) -> tuple[str, str, str]:
        described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        root = next(m for m in described["BlockDeviceMappings"] if m["DeviceName"] == described["RootDeviceName"])
        return described["RootDeviceName"], root["Ebs"]["VolumeId"], described["Placement"]["AvailabilityZone"]

    detached, replaced, untouched = launch_instance(), launch_instance(), launch_instance()
    device, volume, _ = root_of(detached.instance_id)
    ec2.detach_volume(VolumeId=volume, InstanceId=detached.instance_id)
    device, volume, zone = root_of(replaced.instance_id)
    ec2.detach_volume(VolumeId=volume, InstanceId=replaced.instance_id)
    swapped_in = ec2.create_volume(Size=8, AvailabilityZone=zone)["VolumeId"]
    ec2.attach_volume(VolumeId=swapped_in, InstanceId=replaced.instance_id, Device=device)
    assert root_of(replaced.instance_id)[:2] == (device, swapped_in)  # moto's own state shows the swap

    rewritten: list[str] = []
    relay = RewrittenEc2(aws.endpoint, _attached_later({swapped_in}, timedelta(minutes=5), rewritten))
    server = None
    try:
        server = start_server(
            tmp_path / "server",
            env={**aws.environment(), "AWS_ENDPOINT_URL": relay.endpoint},
            extra="ratelimit {\n attestation = false\n }",
            plugins=(
                'NodeAttestor "aws_iid" {\n plugin_data {\n'
                f'  region_certificates = {{ "us-west-2" = "{us_west_2.write(tmp_path)}" }}\n'
                " }\n }"
            ),
        )
        refusals = {
            detached.instance_id: re.escape(f"the root device {device} is not attached to the instance"),
            replaced.instance_id: (
                r"the root volume and primary network interface were attached 30\d s apart"
                r" \(more than 60 s\): the root volume may have been replaced"
            ),
        }
        for instance_id, reason in refusals.items():
            with pytest.raises(GRPCError) as raised:
                _attest_signed(server, us_west_2, instance_id)
            # SPIRE answers Internal ("failed aws ec2 attestation: ..."); pyspire PermissionDenied.
            assert raised.value.status.name == "PERMISSION_DENIED", (instance_id, raised.value)
            assert re.search(rf"nodeattestor\(aws_iid\): {reason}", str(raised.value.message)), raised.value
            assert server.cli("agent", "count").stdout.strip() == "0 attested agents", instance_id
            assert instance_id not in server.cli("agent", "list").stdout
            assert re.search(rf'msg="Node attestation failed" attestation_type=aws_iid error=".*{reason}', server.log())
        assert set(rewritten) == {swapped_in}  # the relay aged the swapped-in volume, and only it

        agent_id = _attest_signed(server, us_west_2, untouched.instance_id)
        assert agent_id == f"spiffe://example.org/spire/agent/aws_iid/{ACCOUNT}/us-west-2/{untouched.instance_id}"
        listed = server.cli("agent", "list").stdout
        assert agent_id in listed
        assert detached.instance_id not in listed
        assert replaced.instance_id not in listed
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
        assert "Traceback" not in server.log()
    finally:
        if server is not None:
            server.stop()
        relay.stop()

"""A real server and agent attesting with gcp_iit against Google's endpoints on loopback.

The agent fetches its token from the metadata server, the server verifies it against the
published certificates and reads the instance from the Compute Engine API with a service
account; a workload then gets its SVID. A second agent on the same instance is refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.crypto import LocalSigner, build_csr

from plugins.gcp_iit.tests.fakes import GoogleFake, SigningKey, sign_token
from plugins.gcp_iit.tests.test_properties import signed_token
from tests.server.test_api_security import attested_agent_id, new_client, no_challenge
from tests.support.daemons import ServerDaemon, start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process


def test_agent_attests_with_gcp_iit_and_a_second_attestation_is_refused(tmp_path: Path, google: GoogleFake) -> None:
    service_account = google.service_account_file(tmp_path)
    server = start_server(
        tmp_path / "server",
        plugins=(
            'NodeAttestor "gcp_iit" {\n plugin_data {\n'
            '  projectid_allow_list = ["project-123"]\n'
            "  use_instance_metadata = true\n"
            '  allowed_label_keys = ["env"]\n'
            f'  service_account_file = "{service_account}"\n'
            f'  google_certs_url = "{google.certs_url}"\n'
            f'  compute_endpoint = "{google.base}"\n'
            " }\n }"
        ),
    )
    attestor = f'NodeAttestor "gcp_iit" {{\n plugin_data {{\n identity_token_host = "{google.host}"\n }}\n }}'
    agent = second = None
    try:
        agent = start_agent(tmp_path / "agent", server, node_attestor=attestor)
        agent_id = f"spiffe://example.org/spire/agent/gcp_iit/project-123/{google.instance.instance_id}"
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Attestation type  : gcp_iit" in shown
        assert "Selectors         : gcp_iit:label:env:prod" in shown
        assert "Selectors         : gcp_iit:tag:http-server" in shown

        register_this_process(server, agent_id, "spiffe://example.org/blog")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/blog"

        second = start_agent(tmp_path / "second", server, node_attestor=attestor, wait=False)
        assert second.process is not None
        assert second.process.wait(30) == 1
        assert "attestation data has already been used to attest an agent" in second.log()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
        # SPIRE purges only agents that can attest again: purging this one would open its
        # spent evidence to a replay. Its SVID (1 h) expires before "now + 2 h": selected but for that.
        assert agent_id not in server.cli("agent", "purge", "-expiredFor=-2h", "-dryRun").stdout
        server.cli("agent", "purge", "-expiredFor=-2h")
        assert agent_id in server.cli("agent", "list").stdout
    finally:
        for daemon in (second, agent, server):
            if daemon is not None:
                daemon.stop()


def test_a_google_signed_token_with_a_null_iat_is_refused_not_a_crash(tmp_path: Path, google: GoogleFake) -> None:
    """Regression: google-auth raised TypeError on {"iat": null}; the server answered INTERNAL with a traceback."""
    server = start_server(
        tmp_path / "server",
        plugins=(
            'NodeAttestor "gcp_iit" {\n plugin_data {\n  projectid_allow_list = ["project-123"]\n'
            f'  google_certs_url = "{google.certs_url}"\n }}\n }}'
        ),
    )
    try:
        claims = {**google.instance.claims(), "iat": None}
        token = signed_token(google.signing_keys[0], claims)
        csr = build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))

        async def run() -> None:
            client = new_client(server)
            try:
                await client.attest("gcp_iit", token, csr, no_challenge)
            finally:
                client.close()

        with pytest.raises(GRPCError) as raised:
            asyncio.run(run())
        assert raised.value.status is Status.PERMISSION_DENIED
        assert "iat or exp is not a number" in (raised.value.message or "")
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def _attest(server: ServerDaemon, token: str | bytes) -> str:
    """One AttestAgent call with ``token``; the agent ID the server issued."""
    return attested_agent_id(server, "gcp_iit", token.encode() if isinstance(token, str) else token)


def _refused(server: ServerDaemon, token: str | bytes) -> GRPCError:
    with pytest.raises(GRPCError) as raised:
        _attest(server, token)
    return raised.value


def _count(server: ServerDaemon) -> str:
    return server.cli("agent", "count").stdout.strip()


def test_an_instance_name_in_the_agent_path_template_cannot_name_the_server_or_another_path(
    tmp_path: Path, google: GoogleFake
) -> None:
    """Reliability case 9: the instance name is whatever the instance's owner chose, and Google
    signs it as given. A name that is no clean path segment fails attestation (Internal, as the
    attestor produced the bad ID) with no node record; a valid one is kept verbatim under the
    agent namespace, never normalised into the server's ID.

    The template cannot reach instance labels (only the token's fields are template values, as
    in SPIRE), so the owner-chosen value that can reach the agent path is the instance name."""
    dots, characters = "path cannot contain dot segments", "path segment characters are limited to"
    refused = {
        "../../server": dots,
        ".": dots,
        "..": dots,
        "%2e%2e": characters,
        "a//b": "path cannot contain empty segments",
        "x/../../../spire/server": dots,
        "line\nbreak": characters,
        "trailing/": "path cannot have a trailing slash",
    }
    verbatim = ["A/B", "spire/server"]
    server = start_server(
        tmp_path / "server",
        extra="ratelimit {\n attestation = false\n }",
        plugins=(
            'NodeAttestor "gcp_iit" {\n plugin_data {\n  projectid_allow_list = ["project-123"]\n'
            f'  google_certs_url = "{google.certs_url}"\n'
            '  agent_path_template = "/{{ .PluginName }}/{{ .InstanceName }}"\n'
            " }\n }"
        ),
    )
    try:
        for value, reason in refused.items():
            google.instance.name = value
            error = _refused(server, google.token())
            # SPIRE: Internal "failed to create agent ID" (the attestor, not the caller, produced it).
            assert error.status is Status.INTERNAL, (value, error)
            message = error.message or ""
            assert "nodeattestor(gcp_iit) produced an invalid agent ID" in message, (value, error)
            assert reason in message, (value, error)
            assert _count(server) == "0 attested agents", value
        for value in verbatim:
            google.instance.name = value
            assert _attest(server, google.token()) == f"spiffe://example.org/spire/agent/gcp_iit/{value}"
        listed = server.cli("agent", "list").stdout
        assert "spiffe://example.org/spire/server\n" not in listed
        assert _count(server) == "2 attested agents"
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_hostile_identity_tokens_attest_nothing_on_a_real_server(tmp_path: Path, google: GoogleFake) -> None:
    """Reliability case 11 through the server's AttestAgent: each bad token is refused with its
    status and reason and leaves no node record; then a genuine token attests the instance."""
    claims = google.instance.claims
    forgeries: dict[str, tuple[str | bytes, Status, str]] = {
        "wrong-audience": (google.token(audience="https://example.com"), Status.PERMISSION_DENIED, "audience"),
        "expired": (google.token(lifetime=-120), Status.PERMISSION_DENIED, "Token expired"),
        "other-issuer": (google.token(iss="https://evil.example"), Status.PERMISSION_DENIED, "not issued by Google"),
        "no-compute-engine-claim": (google.token(full=False), Status.PERMISSION_DENIED, "format=full"),
        "same-key-id-other-key": (
            sign_token(SigningKey("key-1"), claims()),
            Status.INVALID_ARGUMENT,
            "signature does not verify with Google's key 'key-1'",
        ),
        "unpublished-key-id": (
            sign_token(SigningKey("key-9"), claims()),
            Status.INVALID_ARGUMENT,
            "'key-9', which Google does not publish",
        ),
        "hs256": (
            jwt.encode(claims(), "s" * 32, algorithm="HS256", headers={"kid": "key-1"}),
            Status.INVALID_ARGUMENT,
            "must be signed with RS256",
        ),
        "alg-none": (
            jwt.encode(claims(), "", algorithm="none", headers={"kid": "key-1"}),
            Status.INVALID_ARGUMENT,
            "must be signed with RS256",
        ),
        "not-a-jwt": (b"\xff\xfe not a token", Status.INVALID_ARGUMENT, "not a JWT"),
    }
    service_account = google.service_account_file(tmp_path)
    server = start_server(
        tmp_path / "server",
        extra="ratelimit {\n attestation = false\n }",
        plugins=(
            'NodeAttestor "gcp_iit" {\n plugin_data {\n'
            '  projectid_allow_list = ["project-123"]\n'
            "  use_instance_metadata = true\n"
            '  allowed_metadata_keys = ["role", "startup-script"]\n'
            f'  service_account_file = "{service_account}"\n'
            f'  google_certs_url = "{google.certs_url}"\n'
            f'  compute_endpoint = "{google.base}"\n'
            " }\n }"
        ),
    )
    agent_id = f"spiffe://example.org/spire/agent/gcp_iit/project-123/{google.instance.instance_id}"
    try:
        for name, (token, status, reason) in forgeries.items():
            error = _refused(server, token)
            assert (error.status, reason in (error.message or "")) == (status, True), (name, error)
            assert _count(server) == "0 attested agents", name

        # Google signs a token for an instance of a project that is not on the allow-list.
        google.instance.project_id = "someone-elses"
        error = _refused(server, google.token())
        assert error.status is Status.PERMISSION_DENIED, error
        assert 'project ID "someone-elses" is not in the allow list' in (error.message or "")
        google.instance.project_id = "project-123"
        # A genuine token, but the instance's allowed metadata holds a value over the limit.
        error = _refused(server, google.token())
        assert error.status is Status.INTERNAL, error
        assert 'metadata "startup-script" exceeded value limit (500 > 128)' in (error.message or "")
        assert _count(server) == "0 attested agents"
        assert "Traceback" not in server.log()

        google.instance.metadata["startup-script"] = "echo ok"
        assert _attest(server, google.token()) == agent_id
        assert _count(server) == "1 attested agent"
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Selectors         : gcp_iit:metadata:startup-script:echo ok" in shown
    finally:
        server.stop()

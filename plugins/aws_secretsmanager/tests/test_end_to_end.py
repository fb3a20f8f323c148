"""A real server and agent keeping a stored SVID in moto's Secrets Manager with aws_secretsmanager.

An entry created with ``-storeSVID`` and an ``aws_secretsmanager:secretname`` selector gets
its secret: created, tagged, holding SPIRE's document with an SVID that chains to the server's
bundle; rotated SVIDs replace it; deleting the entry schedules the secret for deletion. An
entry naming a secret the agent did not create is refused and the secret left alone. An agent
whose plugin configuration is wrong does not start.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pyspire.spiffe import Bundle, BundleSet, TrustDomain, verify_x509_svid

from plugins.aws_secretsmanager.tests.stored import (
    REGION,
    bundles_of,
    described,
    secrets_manager,
    stored_document,
    svid_of,
)
from tests.support.daemons import AgentDaemon, ServerDaemon, agent_config, start_server
from tests.support.moto import MotoServer
from tests.support.waiting import eventually

TD = TrustDomain("example.org")
STORE = f'SVIDStore "aws_secretsmanager" {{\n        plugin_data {{ region = "{REGION}" }}\n    }}'


def stored_agent(directory: Path, server: ServerDaemon, moto: MotoServer, store: str = STORE) -> AgentDaemon:
    """An agent with the SVIDStore, reaching moto through boto3's AWS_ENDPOINT_URL, not started."""
    text, socket_path = agent_config(directory, server)
    text = text.replace("plugins {", f"plugins {{\n    {store}", 1)
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    env = moto.environment()
    agent = AgentDaemon(
        "pyspire-agent", directory, socket_path, text, ["-joinToken", server.join_token(alias)], env=env
    )
    agent.alias = alias  # type: ignore[attr-defined]
    return agent


def create_stored(server: ServerDaemon, agent: AgentDaemon, spiffe_id: str, secret: str, ttl: int = 0) -> str:
    args = ["entry", "create", "-parentID", agent.alias, "-spiffeID", spiffe_id, "-storeSVID"]  # type: ignore[attr-defined]
    args += ["-selector", f"aws_secretsmanager:secretname:{secret}"]
    if ttl:
        args += ["-x509SVIDTTL", str(ttl)]
    return server.cli(*args).stdout.split("Entry ID         : ", 1)[1].split()[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def agent(
    server: ServerDaemon, moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentDaemon]:
    daemon = stored_agent(tmp_path_factory.mktemp("agent"), server, moto_server)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.mark.slow
def test_a_stored_svid_appears_rotates_and_goes_with_its_entry(
    server: ServerDaemon, agent: AgentDaemon, aws: MotoServer
) -> None:
    entry_id = create_stored(server, agent, "spiffe://example.org/billing", "billing-svid", ttl=8)

    document = eventually(lambda: stored_document("billing-svid"), timeout=30)
    assert document["spiffeID"] == "spiffe://example.org/billing"
    assert {"Key": "spire-svid", "Value": "true"} in (described("billing-svid") or {})["Tags"]
    svid = svid_of(document)
    bundles = bundles_of(document)
    assert list(bundles) == [TD]
    assert bundles[TD].x509_authorities == Bundle.parse_x509(TD, server.bundle_pem().encode()).x509_authorities
    # Checked at a moment inside its 8-second life: on a loaded machine the first document read
    # can hold an SVID already past its end, which is the rotation below, not a fault.
    inside = svid.leaf.not_valid_before_utc + timedelta(seconds=1)
    verified_id, _ = verify_x509_svid(list(svid.chain), BundleSet(list(bundles.values())), now=inside)
    assert str(verified_id) == "spiffe://example.org/billing"

    # Rotated at half its 8-second life: the secret holds the new SVID.
    first_serial = svid.leaf.serial_number
    rotated = eventually(
        lambda: (d := stored_document("billing-svid")) and svid_of(d).leaf.serial_number != first_serial and d,
        timeout=30,
    )
    assert svid_of(rotated).spiffe_id == svid.spiffe_id

    server.cli("entry", "delete", "-entryID", entry_id)
    eventually(lambda: (described("billing-svid") or {}).get("DeletedDate") is not None, timeout=30)


def test_a_secret_the_agent_did_not_create_is_left_alone(
    server: ServerDaemon, agent: AgentDaemon, aws: MotoServer
) -> None:
    secrets_manager().create_secret(Name="payroll-db-password", SecretString="hunter2")
    create_stored(server, agent, "spiffe://example.org/intruder", "payroll-db-password")
    eventually(lambda: "secret does not contain the 'spire-svid' tag" in agent.log(), timeout=30)
    assert "Failed to put X509-SVID" in agent.log()
    assert secrets_manager().get_secret_value(SecretId="payroll-db-password")["SecretString"] == "hunter2"


def test_an_agent_with_a_store_it_cannot_configure_does_not_start(tmp_path: Path, agent: AgentDaemon) -> None:
    """The running agent's configuration with a store missing its region, in a directory of its own."""
    shutil.copy(agent.directory / "bootstrap.pem", tmp_path / "bootstrap.pem")
    store = 'SVIDStore "aws_secretsmanager" {\n        plugin_data { access_key_id = "AKIDEXAMPLE" }\n    }'
    text = agent.config_text.replace(str(agent.directory), str(tmp_path)).replace(STORE, store)
    refused = AgentDaemon("pyspire-agent", tmp_path, tmp_path / "public" / "api.sock", text, env=agent.env)
    refused.start(wait=False)
    assert refused.process is not None
    assert refused.process.wait(30) != 0
    expected = 'SVIDStore "aws_secretsmanager": plugin_data: key "region": region is required'
    assert refused.log().splitlines()[-1] == f"Error: pyspire-agent.conf: plugins: {expected}"
    assert not (tmp_path / "public" / "api.sock").exists()
    assert not (tmp_path / "data" / "agent-data.json").exists(), "no SVID was ever obtained"

"""A real server and agent keeping a stored SVID in moto's Secrets Manager with aws_secretsmanager.

An entry created with ``-storeSVID`` and an ``aws_secretsmanager:secretname`` selector gets
its secret: created, tagged, holding SPIRE's document with an SVID that chains to the server's
bundle; rotated SVIDs replace it; deleting the entry schedules the secret for deletion. An
entry naming a secret the agent did not create is refused and the secret left alone. An agent
whose plugin configuration is wrong does not start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.aws_secretsmanager.tests.stored import REGION, described, secrets_manager, stored_document
from tests.support import svid_stores
from tests.support.daemons import ServerDaemon, start_server
from tests.support.moto import MotoServer
from tests.support.svid_stores import StoringAgent
from tests.support.waiting import eventually

STORE = f'SVIDStore "aws_secretsmanager" {{\n        plugin_data {{ region = "{REGION}" }}\n    }}'


def create_stored(server: ServerDaemon, agent: StoringAgent, spiffe_id: str, secret: str, ttl: int = 0) -> str:
    return svid_stores.create_stored(server, agent, spiffe_id, [f"aws_secretsmanager:secretname:{secret}"], ttl)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def agent(
    server: ServerDaemon, moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoringAgent]:
    # boto3 in the agent reaches moto through AWS_ENDPOINT_URL.
    daemon = svid_stores.storing_agent(tmp_path_factory.mktemp("agent"), server, STORE, moto_server.environment())
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.mark.slow
def test_a_stored_svid_appears_rotates_and_goes_with_its_entry(
    server: ServerDaemon, agent: StoringAgent, aws: MotoServer
) -> None:
    entry_id = create_stored(server, agent, "spiffe://example.org/billing", "billing-svid", ttl=8)

    document = eventually(lambda: stored_document("billing-svid"), timeout=30)
    svid = svid_stores.check_document(document, server, "spiffe://example.org/billing")
    assert {"Key": "spire-svid", "Value": "true"} in (described("billing-svid") or {})["Tags"]

    # Rotated at half its 8-second life: the secret holds the new SVID.
    first_serial = svid.leaf.serial_number
    rotated = eventually(
        lambda: (
            (d := stored_document("billing-svid")) and svid_stores.svid_of(d).leaf.serial_number != first_serial and d
        ),
        timeout=30,
    )
    assert svid_stores.svid_of(rotated).spiffe_id == svid.spiffe_id

    server.cli("entry", "delete", "-entryID", entry_id)
    eventually(lambda: (described("billing-svid") or {}).get("DeletedDate") is not None, timeout=30)


def test_a_secret_the_agent_did_not_create_is_left_alone(
    server: ServerDaemon, agent: StoringAgent, aws: MotoServer
) -> None:
    secrets_manager().create_secret(Name="payroll-db-password", SecretString="hunter2")
    create_stored(server, agent, "spiffe://example.org/intruder", "payroll-db-password")
    eventually(lambda: "secret does not contain the 'spire-svid' tag" in agent.log(), timeout=30)
    assert "Failed to put X509-SVID" in agent.log()
    assert secrets_manager().get_secret_value(SecretId="payroll-db-password")["SecretString"] == "hunter2"


def test_an_agent_with_a_store_it_cannot_configure_does_not_start(tmp_path: Path, agent: StoringAgent) -> None:
    """The running agent's configuration with a store missing its region, in a directory of its own."""
    store = 'SVIDStore "aws_secretsmanager" {\n        plugin_data { access_key_id = "AKIDEXAMPLE" }\n    }'
    expected = 'SVIDStore "aws_secretsmanager": plugin_data: key "region": region is required'
    assert svid_stores.refused_start(agent, tmp_path, store) == f"Error: pyspire-agent.conf: plugins: {expected}"

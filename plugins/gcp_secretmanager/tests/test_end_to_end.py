"""A real server and agent keeping a stored SVID in the fake Secret Manager with gcp_secretmanager.

An entry created with ``-storeSVID`` and ``gcp_secretmanager`` selectors gets its secret:
created, labelled with the trust domain's hash, bound to the service account named, its latest
version holding SPIRE's document with an SVID that chains to the server's bundle; rotated SVIDs
are added as new versions; deleting the entry deletes the secret. An entry naming a secret
this deployment did not create is refused and the secret left alone. An agent whose plugin
configuration is wrong does not start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.gcp_secretmanager.tests.stored import reader, secret_name, stored_document
from tests.support import svid_stores
from tests.support.daemons import ServerDaemon, start_server
from tests.support.gcp_secret_manager import FakeSecretManager
from tests.support.svid_stores import StoringAgent
from tests.support.waiting import eventually

SA = "billing@test-project.iam.gserviceaccount.com"
ACCESSOR = "roles/secretmanager.secretAccessor"


def store_block(fake: FakeSecretManager, directory: Path) -> str:
    account = fake.service_account_file(directory, "spire-agent@test-project.iam.gserviceaccount.com")
    return (
        'SVIDStore "gcp_secretmanager" {\n        plugin_data {\n'
        f'            service_account_file = "{account}"\n'
        f'            secret_manager_endpoint = "{fake.url}"\n'
        "        }\n    }"
    )


def create_stored(server: ServerDaemon, agent: StoringAgent, spiffe_id: str, selectors: list[str], ttl: int = 0) -> str:
    return svid_stores.create_stored(server, agent, spiffe_id, [f"gcp_secretmanager:{s}" for s in selectors], ttl)


@pytest.fixture(scope="module")
def module_fake() -> Iterator[FakeSecretManager]:
    fake = FakeSecretManager()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def agent(
    server: ServerDaemon, module_fake: FakeSecretManager, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoringAgent]:
    directory = tmp_path_factory.mktemp("agent")
    daemon = svid_stores.storing_agent(directory, server, store_block(module_fake, tmp_path_factory.mktemp("account")))
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.mark.slow
def test_a_stored_svid_appears_rotates_and_goes_with_its_entry(
    server: ServerDaemon, agent: StoringAgent, module_fake: FakeSecretManager, tmp_path: Path
) -> None:
    client = reader(module_fake, tmp_path)
    selectors = ["name:billing-svid", "projectid:test-project", f"role:{ACCESSOR}", f"serviceaccount:{SA}"]
    entry_id = create_stored(server, agent, "spiffe://example.org/billing", selectors, ttl=8)

    document = eventually(lambda: stored_document(client, "billing-svid"), timeout=30)
    svid = svid_stores.check_document(document, server, "spiffe://example.org/billing")
    secret = module_fake.secrets[secret_name("billing-svid")]
    assert secret.labels == {"spire-svid": hashlib.sha1(b"example.org").hexdigest()}
    assert secret.bindings == [{"role": ACCESSOR, "members": [f"serviceAccount:{SA}"]}]

    # Rotated at half its 8-second life: a new version holds the new SVID.
    first_serial = svid.leaf.serial_number
    rotated = eventually(
        lambda: (
            (d := stored_document(client, "billing-svid"))
            and svid_stores.svid_of(d).leaf.serial_number != first_serial
            and d
        ),
        timeout=30,
    )
    assert svid_stores.svid_of(rotated).spiffe_id == svid.spiffe_id
    assert len(secret.versions) >= 2

    server.cli("entry", "delete", "-entryID", entry_id)
    eventually(lambda: secret_name("billing-svid") not in module_fake.secrets, timeout=30)
    assert stored_document(client, "billing-svid") is None


def test_a_secret_this_deployment_did_not_create_is_left_alone(
    server: ServerDaemon, agent: StoringAgent, module_fake: FakeSecretManager
) -> None:
    module_fake.create_secret(secret_name("payroll-db-password"), {"team": "payroll"}, b"hunter2")
    create_stored(
        server, agent, "spiffe://example.org/intruder", ["name:payroll-db-password", "projectid:test-project"]
    )
    eventually(lambda: "secret is not managed by this SPIRE deployment" in agent.log(), timeout=30)
    assert "Failed to put X509-SVID" in agent.log()
    assert module_fake.latest_payload(secret_name("payroll-db-password")) == b"hunter2"
    assert len(module_fake.secrets[secret_name("payroll-db-password")].versions) == 1


def test_an_agent_with_a_store_it_cannot_configure_does_not_start(tmp_path: Path, agent: StoringAgent) -> None:
    """The running agent's configuration with unknown store keys, in a directory of its own."""
    store = 'SVIDStore "gcp_secretmanager" {\n        plugin_data { project_id = "p"\n region = "r" }\n    }'
    expected = (
        'SVIDStore "gcp_secretmanager": plugin_data: key "project_id": '
        "unknown configurations detected: project_id,region"
    )
    assert svid_stores.refused_start(agent, tmp_path, store) == f"Error: pyspire-agent.conf: plugins: {expected}"

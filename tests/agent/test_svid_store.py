"""SVIDStore on real daemons: store_svid entries are put into, rotated in and deleted from the
plugin their selector type names, and never served on the Workload API.

The plugin is written here and installed as a real entry point (``SVIDStore.recording``); it
keeps each SVID as a JSON file named by its ``name:`` metadata.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe import Bundle, BundleSet, TrustDomain, verify_x509_svid
from pyspire.spiffe.workloadapi import WorkloadApiClient

from tests.support.daemons import AgentDaemon, ServerDaemon, agent_config, start_server
from tests.support.plugins_in_tests import install_plugins
from tests.support.waiting import eventually
from tests.support.workloads import fetched_spiffe_id, register_this_process

TD = TrustDomain.parse("example.org")

PLUGIN = '''
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from pyspire.plugin import InvalidArgument, hookimpl


def _where(directory, metadata):
    names = [item.split(":", 1)[1] for item in metadata if item.startswith("name:")]
    if len(names) != 1:
        raise InvalidArgument(f"metadata {metadata!r} names no single store entry")
    return directory / f"{names[0]}.json"


class RecordingStore:
    """Keeps SVIDs as JSON files in a directory."""

    @hookimpl
    def configure(self, plugin_data, core):
        self.directory = Path(plugin_data["directory"])
        self.directory.mkdir(parents=True, exist_ok=True)

    @hookimpl
    def put_x509_svid(self, svid, bundle, federated_bundles, metadata):
        pem = serialization.Encoding.PEM
        document = {
            "spiffe_id": str(svid.spiffe_id),
            "chain": [c.public_bytes(pem).decode() for c in svid.chain],
            "key": svid.private_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            "bundle": bundle.marshal_x509_pem().decode(),
            "federated": sorted(td.name for td in federated_bundles),
            "metadata": list(metadata),
        }
        _where(self.directory, metadata).write_text(json.dumps(document))
        with (self.directory / "puts.log").open("a") as log:
            log.write(json.dumps({"metadata": list(metadata), "serial": svid.leaf.serial_number}) + "\\n")

    @hookimpl
    def delete_x509_svid(self, metadata):
        _where(self.directory, metadata).unlink(missing_ok=True)
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def agent(server: ServerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentDaemon]:
    directory = tmp_path_factory.mktemp("agent")
    env = install_plugins(
        directory / "site", "recording_store", PLUGIN, {"agent": {"SVIDStore.recording": "RecordingStore"}}
    )
    text, socket_path = agent_config(directory, server)
    text = text.replace(
        "plugins {",
        f'plugins {{\n    SVIDStore "recording" {{\n        plugin_data {{ directory = "{directory / "store"}" }}\n    }}',
        1,
    )
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    daemon = AgentDaemon(
        "pyspire-agent", directory, socket_path, text, ["-joinToken", server.join_token(alias)], env=env
    )
    daemon.alias = alias  # type: ignore[attr-defined]
    daemon.start()
    yield daemon
    daemon.stop()


def stored(agent: AgentDaemon, name: str) -> dict[str, Any] | None:
    path = agent.directory / "store" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def puts(agent: AgentDaemon) -> list[dict[str, Any]]:
    path = agent.directory / "store" / "puts.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def create_stored(server: ServerDaemon, agent: AgentDaemon, spiffe_id: str, *selectors: str, ttl: int = 0) -> str:
    args = ["entry", "create", "-parentID", agent.alias, "-spiffeID", spiffe_id, "-storeSVID"]  # type: ignore[attr-defined]
    if ttl:
        args += ["-x509SVIDTTL", str(ttl)]
    for selector in selectors:
        args += ["-selector", selector]
    return server.cli(*args).stdout.split("Entry ID         : ", 1)[1].split()[0]


def test_a_stored_svid_is_put_into_the_store_its_selector_type_names(server: ServerDaemon, agent: AgentDaemon) -> None:
    create_stored(server, agent, "spiffe://example.org/stored/db", "recording:name:db", "recording:team:blue")
    document = eventually(lambda: stored(agent, "db"), timeout=30)

    assert document["spiffe_id"] == "spiffe://example.org/stored/db"
    assert sorted(document["metadata"]) == ["name:db", "team:blue"]
    chain = [x509.load_pem_x509_certificate(pem.encode()) for pem in document["chain"]]
    leaf = chain[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/stored/db"]
    key = serialization.load_pem_private_key(document["key"].encode(), None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, public) == leaf.public_key().public_bytes(
        serialization.Encoding.DER, public
    )
    bundle = Bundle.parse_x509(TD, document["bundle"].encode())
    assert bundle.x509_authorities == Bundle.parse_x509(TD, server.bundle_pem().encode()).x509_authorities
    verified_id, _ = verify_x509_svid(chain, BundleSet([bundle]))
    assert str(verified_id) == "spiffe://example.org/stored/db"


def test_a_stored_svid_is_never_served_on_the_workload_api(server: ServerDaemon, agent: AgentDaemon) -> None:
    # One selector type, so the server takes it, and one this very process has.
    create_stored(server, agent, "spiffe://example.org/stored/not-served", f"unix:uid:{os.getuid()}")
    register_this_process(server, agent.alias, "spiffe://example.org/served")  # type: ignore[attr-defined]
    assert fetched_spiffe_id(agent) == "spiffe://example.org/served"
    eventually(
        # As logrus writes it: a plain value unquoted.
        lambda: 'msg="Error storing SVID: SVIDStore not found"' in agent.log() and "svid_store=unix" in agent.log()
    )

    async def ids() -> set[str]:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            context = await client.fetch_x509_context()
        return {str(svid.spiffe_id) for svid in context.svids}

    assert asyncio.run(ids()) == {"spiffe://example.org/served"}


def test_changed_selectors_move_the_stored_svid_and_deletion_removes_it(
    server: ServerDaemon, agent: AgentDaemon
) -> None:
    spiffe_id = "spiffe://example.org/stored/moving"
    entry_id = create_stored(server, agent, spiffe_id, "recording:name:before")
    eventually(lambda: stored(agent, "before"), timeout=30)

    server.cli(
        "entry", "update", "-entryID", entry_id, "-parentID", agent.alias, "-spiffeID", spiffe_id,  # type: ignore[attr-defined]
        "-storeSVID", "-selector", "recording:name:after",
    )  # fmt: skip
    eventually(lambda: stored(agent, "after") and stored(agent, "before") is None, timeout=30)

    server.cli("entry", "delete", "-entryID", entry_id)
    eventually(lambda: stored(agent, "after") is None, timeout=30)


@pytest.mark.slow
def test_a_rotated_stored_svid_is_put_again(server: ServerDaemon, agent: AgentDaemon) -> None:
    create_stored(server, agent, "spiffe://example.org/stored/rotating", "recording:name:rotating", ttl=6)
    serials = eventually(
        lambda: len(found := {p["serial"] for p in puts(agent) if "name:rotating" in p["metadata"]}) >= 2 and found,
        timeout=30,
    )
    assert len(serials) >= 2

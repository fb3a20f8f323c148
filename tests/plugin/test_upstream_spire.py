"""UpstreamAuthority "spire": what goes wrong before the nested tree works (tests/server/test_nested.py runs it)."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.crypto import LocalSigner, build_csr
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Unavailable
from pyspire.plugin.facades import UpstreamAuthority
from pyspire.plugin.testing import load_plugin, make_core_config

from tests.plugin.test_x509pop import key_pem, pem
from tests.support.daemons import ServerDaemon, server_config, start_agent, start_server
from tests.support.pki import make_ca
from tests.support.waiting import eventually


def load(tmp_path: Path, data: dict[str, object]) -> UpstreamAuthority:
    handle = load_plugin("server", "UpstreamAuthority", "spire", data, make_core_config(tmp_path / "d"))
    assert isinstance(handle, UpstreamAuthority)
    return handle


def _csr() -> bytes:
    return build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())), None, "spiffe://example.org")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server_port": "8081", "workload_api_socket": "/s"}, "server_address"),
        ({"server_address": "upstream"}, 'workload_api_socket": is required'),
        (
            {"server_address": "u", "workload_api_socket": "/s", "experimental": {"workload_api_named_pipe_name": "p"}},
            "named pipes exist on Windows only",
        ),
        ({"server_address": "u", "server_port": "0", "workload_api_socket": "/s"}, "0 is not a TCP port"),
    ],
)
def test_configuration_errors_name_the_key(tmp_path: Path, data: dict[str, object], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        load(tmp_path, data)


def test_no_workload_api_is_unavailable_and_names_the_socket(tmp_path: Path) -> None:
    socket = tmp_path / "missing" / "api.sock"
    upstream = load(tmp_path, {"server_address": "127.0.0.1", "server_port": "1", "workload_api_socket": str(socket)})
    with pytest.raises(Unavailable, match=f"no X509-SVID from the Workload API at {socket}"):
        upstream.mint_x509_ca(_csr(), timedelta(hours=1))


def test_a_downstream_server_without_a_downstream_entry_stops_with_the_reason(tmp_path: Path) -> None:
    root = start_server(tmp_path / "root")
    agent = None
    try:
        alias = f"spiffe://example.org/node/{uuid.uuid4()}"
        agent = start_agent(tmp_path / "agent", root, root.join_token(alias))
        root.cli(
            "entry",
            "create",
            "-parentID",
            alias,
            "-spiffeID",
            "spiffe://example.org/not-downstream",
            "-selector",
            f"unix:uid:{os.getuid()}",
        )
        # Wait for the entry to reach the agent: before, the refusal would be "no identity issued".
        eventually(lambda: agent.cli("api", "fetch", "x509", check=False).returncode == 0, timeout=30)
        plugins = (
            'UpstreamAuthority "spire" {\n plugin_data {\n  server_address = "127.0.0.1"\n'
            f'  server_port = "{root.port}"\n  workload_api_socket = "{agent.socket_path}"\n }}\n}}'
        )
        text, socket_path, _ = server_config(tmp_path / "downstream", plugins=plugins)
        downstream = ServerDaemon("pyspire-server", tmp_path / "downstream", socket_path, text).start(wait=False)
        assert downstream.process is not None
        assert downstream.process.wait(90) == 1
        log = downstream.log()
        assert "Server failed to start" in log
        assert "refused spiffe://example.org/not-downstream" in log
        assert "must be marked downstream" in log
    finally:
        if agent is not None:
            agent.stop()
        root.stop()


def test_no_svid_of_a_downstream_server_outlives_the_root_above_its_upstream(tmp_path: Path) -> None:
    # The upstream server's CA sits under a 24 h intermediate of a 2 h root (disk): the CA it
    # gives the downstream server, and every SVID that one signs, end with that root.
    short_root = make_ca(name="short root", lifetime=timedelta(hours=2))
    intermediate = make_ca(issuer=short_root, name="long intermediate", lifetime=timedelta(hours=24))
    (tmp_path / "int.pem").write_bytes(pem(intermediate.certificate))
    (tmp_path / "int.key").write_bytes(key_pem(intermediate.key))
    (tmp_path / "root.pem").write_bytes(pem(short_root.certificate))
    disk = (
        'UpstreamAuthority "disk" {\n plugin_data {\n'
        f' cert_file_path = "{tmp_path / "int.pem"}"\n key_file_path = "{tmp_path / "int.key"}"\n'
        f' bundle_file_path = "{tmp_path / "root.pem"}"\n }}\n}}'
    )
    root = start_server(tmp_path / "root", plugins=disk, ca_ttl="24h")
    agent = downstream = None
    try:
        alias = f"spiffe://example.org/node/{uuid.uuid4()}"
        agent = start_agent(tmp_path / "agent", root, root.join_token(alias))
        root.cli("entry", "create", "-parentID", alias, "-spiffeID", "spiffe://example.org/downstream",
                 "-selector", f"unix:uid:{os.getuid()}", "-downstream")  # fmt: skip
        # The downstream server gives up at start when the agent has no SVID for it yet: wait
        # until the entry has reached the agent (under load that takes more than a sync).
        eventually(lambda: agent.cli("api", "fetch", "x509", check=False).returncode == 0, timeout=30)
        spire = (
            'UpstreamAuthority "spire" {\n plugin_data {\n  server_address = "127.0.0.1"\n'
            f'  server_port = "{root.port}"\n  workload_api_socket = "{agent.socket_path}"\n }}\n}}'
        )
        downstream = start_server(tmp_path / "downstream", plugins=spire, ca_ttl="24h")
        out = tmp_path / "minted"
        downstream.cli("x509", "mint", "-spiffeID", "spiffe://example.org/long", "-ttl", "10h", "-write", str(out))
        chain = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
        assert all(c.not_valid_after_utc <= short_root.certificate.not_valid_after_utc for c in chain[:2])
    finally:
        for daemon in (downstream, agent):
            if daemon is not None:
                daemon.stop()
        root.stop()

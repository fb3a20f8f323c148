"""Scenario 5: a SPIRE trust domain and a pyspire trust domain federated through their bundle endpoints.

``spire.test`` is served by spire-server (a spire-agent below it), ``pyspire.test`` by
pyspire-server (a pyspire-agent below it). One side serves its bundle endpoint with the
``https_web`` profile (a WebPKI certificate the other side trusts through SSL_CERT_FILE, as
an operator's system roots would), the other with ``https_spiffe``; each learns the other
through ``federation create`` on its CLI. A go-spiffe workload in each trust domain then
completes mutual TLS with the other, in both directions, each authorizing the other's
SPIFFE ID from the federated bundle its agent handed it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.free_port import free_port
from tests.support.peer_workloads import PeerWorkload
from tests.support.pki import make_ca, make_tls_certificate, write_pem
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

SPIRE_TD, PYSPIRE_TD = "spire.test", "pyspire.test"


def _endpoint(port: int, web: tuple[Path, Path] | None) -> str:
    profile = (
        f'profile "https_web" {{\n   serving_cert_file {{\n    cert_file_path = "{web[0]}"\n'
        f'    key_file_path = "{web[1]}"\n    file_sync_interval = "1h"\n   }}\n  }}'
        if web
        else 'profile "https_spiffe" {}'
    )
    return f'federation {{\n bundle_endpoint {{\n  address = "127.0.0.1"\n  port = {port}\n  {profile}\n }}\n}}'


def _federate(server: ServerDaemon, partner: ServerDaemon, partner_td: str, port: int, web: bool, pem: Path) -> None:
    """``federation create`` on ``server`` for ``partner``'s endpoint, as an operator types it."""
    args = ["federation", "create", "-trustDomain", partner_td, "-bundleEndpointURL", f"https://127.0.0.1:{port}"]
    if web:
        args += ["-bundleEndpointProfile", "https_web"]
    else:
        pem.write_text(partner.bundle_pem())
        args += [
            "-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", f"spiffe://{partner_td}/spire/server",
            "-trustDomainBundlePath", str(pem), "-trustDomainBundleFormat", "pem",
        ]  # fmt: skip
    server.cli(*args)


@pytest.mark.parametrize("web_side", ["pyspire", "spire"], ids=["pyspire-serves-https_web", "spire-serves-https_web"])
def test_workloads_of_federated_spire_and_pyspire_trust_domains_complete_mtls(
    tmp_path: Path,
    web_side: str,
    spire_server_bin: Path,
    spire_agent_bin: Path,
    workload_clients: dict[str, PeerWorkload],
) -> None:
    web_ca = make_ca("web.test", name="interop web CA")
    write_pem(web_ca, tmp_path / "web-ca.pem", tmp_path / "web-ca.key")
    web_files = write_pem(make_tls_certificate(web_ca, "127.0.0.1"), tmp_path / "web.pem", tmp_path / "web.key")
    trust_web = {"SSL_CERT_FILE": str(tmp_path / "web-ca.pem")}  # the WebPKI roots both servers see
    ports = {"spire": free_port(), "pyspire": free_port()}
    servers: dict[str, ServerDaemon] = {}
    agents: dict[str, AgentDaemon] = {}
    go = workload_clients["go-spiffe"]
    try:
        for side, td, executable in (("spire", SPIRE_TD, spire_server_bin), ("pyspire", PYSPIRE_TD, None)):
            servers[side] = start_server(
                tmp_path / f"{side}-server",
                env=trust_web,
                executable=executable,
                trust_domain=td,
                extra=_endpoint(ports[side], web_files if side == web_side else None),
            )
        for side, td in (("spire", SPIRE_TD), ("pyspire", PYSPIRE_TD)):
            other, other_td = ("pyspire", PYSPIRE_TD) if side == "spire" else ("spire", SPIRE_TD)
            _federate(
                servers[side], servers[other], other_td, ports[other], other == web_side, tmp_path / f"{other}.pem"
            )
            alias = f"spiffe://{td}/node/{side}"
            agents[side] = start_agent(
                tmp_path / f"{side}-agent",
                servers[side],
                servers[side].join_token(alias),
                executable=spire_agent_bin if side == "spire" else None,
                trust_domain=td,
            )
            # An entry may federate only with a trust domain whose bundle the server has (both
            # implementations refuse it before): over https_web that takes the first refresh.
            eventually(
                lambda s=servers[side], td=other_td: (
                    s.cli("bundle", "list", "-id", f"spiffe://{td}", check=False).returncode == 0
                ),
                timeout=60,
            )
            servers[side].cli(
                "entry", "create", "-parentID", alias, "-spiffeID", f"spiffe://{td}/workload",
                "-selector", f"unix:uid:{os.getuid()}", "-federatesWith", f"spiffe://{other_td}",
            )  # fmt: skip

        for serving, dialing in (("spire", "pyspire"), ("pyspire", "spire")):
            server_id = f"spiffe://{SPIRE_TD if serving == 'spire' else PYSPIRE_TD}/workload"
            client_id = f"spiffe://{SPIRE_TD if dialing == 'spire' else PYSPIRE_TD}/workload"

            def exchange(serving: str = serving, dialing: str = dialing, server_id: str = server_id,
                         client_id: str = client_id) -> tuple[dict[str, object], dict[str, object]]:  # fmt: skip
                listener = go.start(agents[serving], "serve", "-authorize", client_id)
                try:
                    ready = listener.next_line(60)
                    dialed = go.run(
                        agents[dialing], "dial", "-address", str(ready["listening"]), "-authorize", server_id
                    )
                    return dialed, listener.next_line(30)
                finally:
                    listener.stop()

            # Until both agents hold the partner's bundle, the handshake fails: retry.
            dialed, served = eventually(exchange, timeout=90, interval=2)
            assert dialed["server"] == server_id
            assert served["client"] == client_id
            assert dialed["reply"] == f"{server_id} answers {client_id}: ping"
    finally:
        for daemon in [*agents.values(), *servers.values()]:
            daemon.stop()

"""contrib/systemd's provider unit and config fit each other and the server's, and the config serves.

tests/test_contrib_systemd.py verifies the unit itself (``systemd-analyze verify`` and its
exposure score) with the other units.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from pyspire.config.reader import parse_config_text
from pyspire_oidc_discovery.config import parse_config

from plugins.oidc_discovery.tests.deployment import Deployment
from plugins.oidc_discovery.tests.provider import Provider
from tests.support.waiting import eventually

SYSTEMD = Path(__file__).resolve().parents[3] / "contrib" / "systemd"
CONF = "oidc-discovery-provider.conf"


def _service(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser["Service"]


def test_the_units_config_uses_the_units_directories_and_the_servers_socket() -> None:
    text = (SYSTEMD / CONF).read_text()
    config = parse_config(parse_config_text(text, CONF), CONF)
    service = _service("pyspire-oidc-discovery.service")
    assert Path(config.listen_socket_path).parent == Path("/run") / service["RuntimeDirectory"]
    assert f"-config /etc/{service['ConfigurationDirectory']}/{CONF}" in service["ExecStart"]
    server_socket = re.search(r'socket_path = "([^"]+)"', (SYSTEMD / "server.conf").read_text())
    assert server_socket is not None
    assert config.server_api is not None
    assert config.server_api.socket_path == Path(server_socket.group(1))
    # The admin socket is the pyspire user's: the provider runs as that user.
    assert service["User"] == _service("pyspire-server.service")["User"]


@pytest.mark.slow
def test_the_units_config_serves_the_servers_keys(tmp_path: Path, deployment: Deployment) -> None:
    socket_path = tmp_path / "server.sock"
    text = (
        (SYSTEMD / CONF)
        .read_text()
        .replace("/run/spire-server/private/api.sock", str(deployment.server.socket_path))
        .replace("/run/pyspire-oidc/server.sock", str(socket_path))
    )
    provider = Provider(tmp_path / "provider", text, socket_path).start()
    try:
        with provider.client() as client:
            keys = eventually(lambda: client.get("/keys") if client.get("/keys").status_code == 200 else None)
            assert keys.json()["keys"]
            document = client.get("/.well-known/openid-configuration", headers={"Host": "oidc.example.org"}).json()
            assert document["issuer"] == "https://oidc.example.org"  # TLS is the proxy's
    finally:
        assert provider.stop() == 0

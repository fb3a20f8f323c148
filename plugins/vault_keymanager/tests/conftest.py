"""Fixtures for the hashicorp_vault key manager tests: the vault UpstreamAuthority's OpenBao server, with transit mounts."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from plugins.vault_upstream.tests.openbao import OpenBao

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_policy(mount: str) -> str:
    """The minimal policy the README gives, for a transit engine mounted at ``mount``."""
    policy = README.read_text().split("```hcl\n", 1)[1].split("```", 1)[0]
    return policy.replace('"transit/', f'"{mount}/')


class Transit:
    """One test's transit mount on the server, and the README's policy for it."""

    def __init__(self, bao: OpenBao) -> None:
        self.bao = bao
        self.name = "t" + secrets.token_hex(4)
        self.mount = f"transit-{self.name}"
        self.policy = f"spire-km-{self.name}"
        admin = self.admin()
        admin.sys.enable_secrets_engine("transit", path=self.mount)
        admin.sys.create_or_update_policy(self.policy, readme_policy(self.mount))

    def admin(self) -> hvac.Client:
        return self.bao.root()

    def token(self, policies: list[str] | None = None) -> str:
        """A token with the README's policy only (not even Vault's default policy)."""
        answer = self.admin().auth.token.create(
            policies=[self.policy] if policies is None else policies, no_default_policy=True, ttl="1h"
        )
        return str(answer["auth"]["client_token"])

    def names(self) -> list[str]:
        """The key names in the mount (read with the root token)."""
        try:
            return sorted(self.admin().secrets.transit.list_keys(mount_point=self.mount)["data"]["keys"])
        except hvac.exceptions.InvalidPath:
            return []

    def public_pem(self, name: str) -> bytes:
        key = self.admin().secrets.transit.read_key(name=name, mount_point=self.mount)["data"]
        return str(key["keys"][str(key["latest_version"])]["public_key"]).encode()

    def plugin_data(self, tmp_path: Path, **extra: object) -> dict[str, object]:
        data: dict[str, object] = {
            "vault_addr": self.bao.url,
            "ca_cert_path": str(self.bao.ca_path),
            "transit_engine_path": self.mount,
            "token_auth": {"token": self.token()},
        }
        if "key_identifier_value" not in extra:
            data["key_identifier_file"] = str(tmp_path / "server_id")
        return {**data, **extra}


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One OpenBao dev server per test process (tests share it through mounts of their own)."""
    server = OpenBao(tmp_path_factory.mktemp("openbao")).start()
    yield server
    server.stop()


@pytest.fixture
def transit(openbao: OpenBao) -> Transit:
    return Transit(openbao)

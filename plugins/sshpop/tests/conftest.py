"""Fixtures for the sshpop tests: a CA and a node's host key and certificate, all from ssh-keygen."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from plugins.sshpop.tests.keygen import KeyPair, certify, new_key


def fingerprint_of(certificate: Path) -> str:
    """What SPIRE names the node after, computed here from the file ssh-keygen wrote."""
    wire = base64.b64decode(certificate.read_text().split()[1])
    return base64.urlsafe_b64encode(hashlib.sha256(wire).digest()).decode().rstrip("=")


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ssh")


@pytest.fixture(scope="session")
def ca(keys: Path) -> KeyPair:
    return new_key(keys / "ca")


@pytest.fixture(scope="session")
def host_key(keys: Path) -> KeyPair:
    return new_key(keys / "host", "rsa", 2048)


@pytest.fixture(scope="session")
def host_cert(ca: KeyPair, host_key: KeyPair) -> Path:
    return certify(ca, host_key, "node1.example.com", "node1", key_id="node1", serial=7)

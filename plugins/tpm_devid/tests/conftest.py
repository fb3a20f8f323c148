"""Fixtures for the tpm_devid tests: a test endorsement CA and DevID CA, and per module a fresh
swtpm provisioned with an EK certificate and a DevID key and certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.tpm_devid.tests.provisioning import (
    Authority,
    DevId,
    SoftwareTpm,
    new_authority,
    provision_devid,
    provision_ek,
)


@pytest.fixture(scope="session")
def endorsement_ca() -> Authority:
    return new_authority("Test TPM Manufacturer Root CA")


@pytest.fixture(scope="session")
def devid_ca() -> Authority:
    return new_authority("Test DevID Root CA")


@pytest.fixture(scope="session")
def ca_files(tmp_path_factory: pytest.TempPathFactory, endorsement_ca: Authority, devid_ca: Authority) -> Path:
    """``devid-ca.pem`` and ``endorsement-ca.pem``, the server's trust bundles."""
    directory = tmp_path_factory.mktemp("cas")
    (directory / "devid-ca.pem").write_bytes(devid_ca.pem())
    (directory / "endorsement-ca.pem").write_bytes(endorsement_ca.pem())
    return directory


@pytest.fixture(scope="module")
def software_tpm(tmp_path_factory: pytest.TempPathFactory, endorsement_ca: Authority) -> Iterator[SoftwareTpm]:
    """A fresh swtpm for the module, its EK certified by the test endorsement CA."""
    tpm = SoftwareTpm(tmp_path_factory.mktemp("swtpm"))
    try:
        provision_ek(tpm, endorsement_ca)
        yield tpm
    finally:
        tpm.stop()


@pytest.fixture(scope="module")
def devid(tmp_path_factory: pytest.TempPathFactory, software_tpm: SoftwareTpm, devid_ca: Authority) -> DevId:
    """An RSA DevID key in the module's TPM, certified by the test DevID CA."""
    return provision_devid(software_tpm, devid_ca, tmp_path_factory.mktemp("devid"))


def server_data(ca_files: Path) -> dict[str, str]:
    return {
        "devid_ca_path": str(ca_files / "devid-ca.pem"),
        "endorsement_ca_path": str(ca_files / "endorsement-ca.pem"),
    }


def agent_data(tpm: SoftwareTpm, devid: DevId, **extra: str) -> dict[str, str]:
    return {
        "tpm_device_path": str(tpm.socket),
        "devid_cert_path": str(devid.certificate_path),
        "devid_priv_path": str(devid.private_path),
        "devid_pub_path": str(devid.public_path),
        **extra,
    }

"""An upstream CA for the awssecret tests, stored in moto's Secrets Manager."""

from __future__ import annotations

from dataclasses import dataclass

import boto3
from cryptography.hazmat.primitives import serialization

from tests.support.pki import Issued

REGION = "us-west-2"


def pem(issued: Issued) -> tuple[str, str]:
    """The certificate and key of ``issued`` as PEM text."""
    key = issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return issued.certificate.public_bytes(serialization.Encoding.PEM).decode(), key.decode()


def put_secret(name: str, value: str) -> str:
    """Store ``value`` as secret ``name``; its ARN."""
    return str(boto3.client("secretsmanager", region_name=REGION).create_secret(Name=name, SecretString=value)["ARN"])


@dataclass(frozen=True)
class UpstreamSecrets:
    """An upstream CA (an intermediate under a root) stored in Secrets Manager."""

    root: Issued
    intermediate: Issued
    cert_file_arn: str
    key_file_arn: str
    bundle_file_arn: str

    def plugin_data(self) -> dict[str, str]:
        return {
            "region": REGION,
            "cert_file_arn": self.cert_file_arn,
            "key_file_arn": self.key_file_arn,
            "bundle_file_arn": self.bundle_file_arn,
        }

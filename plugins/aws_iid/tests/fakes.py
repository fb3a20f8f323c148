"""What the aws_iid tests stand in for AWS with: region signing keys, IMDS, and moto's server.

- :class:`RegionSigner` plays a region's AWS certificate: it signs instance identity documents
  as PKCS #7 SignedData (content attached, signed attributes, no embedded certificate list
  needed), base64 without armour, as IMDS serves ``instance-identity/rsa2048``.
- :class:`ImdsServer` is the documented IMDS surface the agent uses: ``PUT /latest/api/token``
  and ``GET /latest/dynamic/instance-identity/{document,signature,rsa2048}``, with switches
  for IMDSv1-only and IMDSv2-only services.
- moto's server (EC2, IAM, STS, Organizations) is :class:`tests.support.moto.MotoServer`;
  :func:`launch_instance` runs an instance in it.
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from tests.support import http_fakes
from tests.support.moto import ACCOUNT


class RegionSigner:
    """A stand-in for one region's AWS signing certificate."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Test AWS {region}")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> Path:
        path = directory / f"aws-{self.region}.pem"
        path.write_bytes(self.pem())
        return path

    def sign(self, document: str) -> str:
        """The ``rsa2048`` signature of ``document``, as IMDS returns it."""
        der = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(document.encode())
            .add_signer(self.certificate, self.key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoCerts])
        )
        return base64.b64encode(der).decode()


def identity_document(
    instance_id: str,
    *,
    region: str = "us-west-2",
    account_id: str = ACCOUNT,
    image_id: str = "ami-12c6146b",
    zone: str | None = None,
) -> str:
    """An instance identity document shaped like EC2's."""
    return json.dumps(
        {
            "accountId": account_id,
            "architecture": "x86_64",
            "availabilityZone": zone or f"{region}a",
            "imageId": image_id,
            "instanceId": instance_id,
            "instanceType": "t2.micro",
            "pendingTime": "2026-11-22T10:00:00Z",
            "privateIp": "10.0.0.12",
            "region": region,
            "version": "2017-09-30",
        },
        indent=2,
    )


GENUINE: list[dict[str, str]] = json.loads(
    (Path(__file__).parent / "data" / "genuine_identity_documents.json").read_text()
)["documents"]
"""Documents and RSA-2048 signatures AWS itself made (``data/README.md`` says where they come from)."""


def payload(document: str, rsa2048: str, signature: str = "") -> bytes:
    return json.dumps({"document": document, "signature": signature, "rsa2048": rsa2048}).encode()


@dataclass
class ImdsServer:
    """IMDS on 127.0.0.1: serves one document and its signatures."""

    document: str = ""
    rsa2048: str = ""
    signature: str = "bGVnYWN5"
    mode: str = "v2"
    """``v2`` (a token is required) or ``v1`` (there is no token endpoint)."""
    down: bool = False
    """Answer everything with 503, as a metadata service that is not ready yet."""
    requests: list[tuple[str, str, bool]] = field(default_factory=list)
    _tokens: set[str] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ImdsServer:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                imds.requests.append(("PUT", self.path, False))
                if imds.down:
                    return self._send(503)
                if self.path != "/latest/api/token" or imds.mode == "v1":
                    return self._send(404)
                if "X-aws-ec2-metadata-token-ttl-seconds" not in self.headers:
                    return self._send(400)
                token = secrets.token_urlsafe(24)
                imds._tokens.add(token)
                self._send(200, token.encode())

            def do_GET(self) -> None:
                token = self.headers.get("X-aws-ec2-metadata-token")
                imds.requests.append(("GET", self.path, token is not None))
                if imds.down:
                    return self._send(503)
                if token is not None and token not in imds._tokens:
                    return self._send(401)
                if token is None and imds.mode == "v2":
                    return self._send(401)
                documents = {
                    "/latest/dynamic/instance-identity/document": imds.document,
                    "/latest/dynamic/instance-identity/rsa2048": imds.rsa2048,
                    "/latest/dynamic/instance-identity/signature": imds.signature,
                }
                if not documents.get(self.path):
                    return self._send(404)
                self._send(200, documents[self.path].encode())

        self._server = http_fakes.serve(Handler)
        return self

    def stop(self) -> None:
        http_fakes.stop(self._server)


@dataclass(frozen=True)
class Instance:
    instance_id: str
    security_group_id: str
    role_arn: str


def launch_instance(
    tags: dict[str, str] | None = None, *, region: str = "us-west-2", profile: bool = True, **session: str
) -> Instance:
    """Run an EC2 instance in moto, with a security group "web" and an instance profile."""
    ec2 = boto3.client("ec2", region_name=region, **session)
    suffix = secrets.token_hex(4)
    group = ec2.create_security_group(GroupName=f"web-{suffix}", Description="web servers")["GroupId"]
    extra: dict[str, Any] = {}
    role_arn = ""
    if profile:
        iam = boto3.client("iam", region_name=region, **session)
        role_arn = iam.create_role(RoleName=f"blog-{suffix}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        created = iam.create_instance_profile(InstanceProfileName=f"blog-profile-{suffix}")["InstanceProfile"]
        iam.add_role_to_instance_profile(InstanceProfileName=f"blog-profile-{suffix}", RoleName=f"blog-{suffix}")
        extra["IamInstanceProfile"] = {"Arn": created["Arn"]}
    if tags:
        extra["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SecurityGroupIds=[group], **extra)
    return Instance(reservation["Instances"][0]["InstanceId"], group, role_arn)


class RewrittenEc2:
    """A real-HTTP pass-through to moto that rewrites DescribeInstances answers (reliability case 10).

    moto stamps attach times with its wall clock, so a root volume attached minutes after the
    primary interface, or an instance-store root, can only be shown by editing its answer.
    Every other request and answer, AWS errors included, goes through unchanged.
    """

    def __init__(self, upstream: str, rewrite: Callable[[str], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(upstream + self.path, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        answer, status, kind = response.read(), response.status, response.headers["Content-Type"]
                except urllib.error.HTTPError as refused:
                    answer, status, kind = refused.read(), refused.code, refused.headers["Content-Type"]
                if status == 200 and b"Action=DescribeInstances" in body:
                    answer = rewrite(answer.decode()).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind or "text/xml")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = http_fakes.serve(Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        http_fakes.stop(self._server)

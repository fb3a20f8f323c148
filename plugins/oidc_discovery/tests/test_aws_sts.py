"""AWS accepts a JWT-SVID through the provider: STS's AssumeRoleWithWebIdentity against an IAM OIDC provider.

The account (the IAM OIDC provider for the provider's issuer, the roles and their trust policies)
is moto's server; STS's checks of the token are the documented ones (sts_fake.py: moto's STS
checks nothing), made against the running provider's discovery document and JWKS over HTTPS.
The credentials STS returns are moto's, and moto's STS says whose they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import jwt
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import ec

from plugins.oidc_discovery.tests.deployment import WORKLOAD_ID, Deployment, Tls, https_provider
from plugins.oidc_discovery.tests.sts_fake import StsFake
from tests.support.moto import NO_AWS_FILES, MotoServer

AUDIENCE = "sts.amazonaws.com"

# Real daemons, a provider and moto: seconds.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


def _client(service: str, endpoint: str, **credentials: str) -> object:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=credentials.get("AccessKeyId", "testing"),
        aws_secret_access_key=credentials.get("SecretAccessKey", "testing"),
        aws_session_token=credentials.get("SessionToken"),
    )


def _role(iam: object, name: str, provider_arn: str, provider_url: str, subject: str) -> str:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {f"{provider_url}:aud": AUDIENCE, f"{provider_url}:sub": subject}},
            }
        ],
    }
    return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(policy))["Role"]["Arn"])  # type: ignore[attr-defined]


def _refusal(sts: object, role_arn: str, token: str) -> tuple[str, str]:
    with pytest.raises(ClientError) as raised:
        sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="workload", WebIdentityToken=token)  # type: ignore[attr-defined]
    error = raised.value.response["Error"]
    return error["Code"], error["Message"]


def test_sts_exchanges_a_jwt_svid_for_aws_credentials_and_refuses_what_aws_refuses(
    tmp_path: Path, deployment: Deployment, tls: Tls, moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in NO_AWS_FILES.items():
        monkeypatch.setenv(name, value)
    moto.reset()
    iam = _client("iam", moto.endpoint)
    provider_url = deployment.issuer.removeprefix("https://")
    provider_arn = iam.create_open_id_connect_provider(  # type: ignore[attr-defined]
        Url=deployment.issuer, ClientIDList=[AUDIENCE], ThumbprintList=["0" * 40]
    )["OpenIDConnectProviderArn"]
    workload_role = _role(iam, "spiffe-workload", provider_arn, provider_url, WORKLOAD_ID)
    other_role = _role(iam, "someone-else", provider_arn, provider_url, "spiffe://example.org/someone-else")

    fake = StsFake(moto.endpoint, tls.ca_file)
    provider = https_provider(tmp_path / "provider", deployment, tls)
    try:
        sts = _client("sts", fake.endpoint)
        token = deployment.mint(AUDIENCE)
        answer = sts.assume_role_with_web_identity(  # type: ignore[attr-defined]
            RoleArn=workload_role, RoleSessionName="workload", WebIdentityToken=token
        )
        assumed = _client("sts", moto.endpoint, **answer["Credentials"])
        assert assumed.get_caller_identity()["Arn"].endswith(":assumed-role/spiffe-workload/workload")  # type: ignore[attr-defined]

        # The same JWT-SVID for a role that trusts another SPIFFE ID; one for another audience.
        assert _refusal(sts, other_role, token) == (
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        )
        assert _refusal(sts, workload_role, deployment.mint("not-sts")) == (
            "InvalidIdentityToken",
            "Incorrect token audience",
        )
        # A token with the same claims and kid, signed by a key the trust domain does not have.
        forged = jwt.encode(
            jwt.decode(token, options={"verify_signature": False}),
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": jwt.get_unverified_header(token)["kid"]},
        )
        code, message = _refusal(sts, workload_role, forged)
        assert code == "InvalidIdentityToken"
        assert message.startswith("The web identity token that was passed could not be validated by AWS")
    finally:
        assert provider.stop() == 0
    try:
        # Without the provider, STS cannot get the keys to verify even a genuine JWT-SVID.
        code, _ = _refusal(sts, workload_role, token)
        assert code == "IDPCommunicationError"
    finally:
        fake.stop()

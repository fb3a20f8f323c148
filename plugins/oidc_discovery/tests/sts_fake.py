"""AWS STS's ``AssumeRoleWithWebIdentity`` as AWS documents it, in front of moto's server.

moto's STS hands out credentials for any web identity token, unchecked, so on its own it
cannot tell a JWT-SVID that AWS would accept from one it would refuse. This fake does what
AWS's API reference and the IAM guide ("Create an OpenID Connect (OIDC) identity provider in
IAM", "AssumeRoleWithWebIdentity") say STS does with the token, reading the account (its OIDC
providers and roles) from moto's IAM through boto3:

1. the token's ``iss`` names an IAM OIDC provider of the account (``https://`` + its URL),
   else ``InvalidIdentityToken``: "No OpenIDConnect provider found in your account for ...";
2. the issuer's ``/.well-known/openid-configuration`` is fetched over HTTPS, then its
   ``jwks_uri``; when that fails: ``IDPCommunicationError``;
3. the signature verifies with the JWKS key of the token's ``kid``, the ``aud`` is one of the
   provider's client IDs, the token has not expired: else ``InvalidIdentityToken`` (or
   ``ExpiredTokenException``);
4. the role's trust policy allows ``sts:AssumeRoleWithWebIdentity`` to ``Federated`` = the
   provider's ARN under its ``StringEquals`` / ``StringLike`` conditions on ``<url>:aud`` and
   ``<url>:sub``, else ``AccessDenied``.

Then the request goes on to moto's STS, whose answer (credentials that moto's other services
accept) is relayed. The issuer's certificate is checked against the test CA, standing in for the
library of trusted root CAs AWS uses for OIDC providers; thumbprints are not checked (AWS does
not use them for providers whose certificate chains to a trusted root).
"""

from __future__ import annotations

import fnmatch
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import jwt

from tests.support import http_fakes

_XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
_ALGORITHMS = ["RS256", "ES256", "ES384"]


class StsRefusal(Exception):
    """What STS answers instead of credentials."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> StsRefusal:
    return StsRefusal(400, "InvalidIdentityToken", message)


class StsFake:
    """Serves STS on a loopback port; IAM and the credentials are moto's at ``moto_endpoint``."""

    def __init__(self, moto_endpoint: str, ca_file: Path) -> None:
        self.moto_endpoint = moto_endpoint
        self._tls = ssl.create_default_context(cafile=str(ca_file))
        self._iam = boto3.client(
            "iam",
            endpoint_url=moto_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fake.answer(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server: ThreadingHTTPServer = http_fakes.serve(Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        http_fakes.stop(self._server)

    def answer(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        form = {name: values[0] for name, values in urllib.parse.parse_qs(body.decode()).items()}
        try:
            if form.get("Action") != "AssumeRoleWithWebIdentity":
                raise StsRefusal(400, "InvalidAction", f"{form.get('Action')} is not served by this fake")
            self.check(form["WebIdentityToken"], form["RoleArn"])
            status, reply = self._relay(body)
        except StsRefusal as refusal:
            status, reply = refusal.status, self._error(refusal)
        handler.send_response(status)
        handler.send_header("Content-Type", "text/xml")
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)

    def check(self, token: str, role_arn: str) -> None:
        """Refuse ``token`` for ``role_arn`` as STS would; return when it is good."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as err:
            raise _invalid(f"The web identity token that was passed is not a valid JWT: {err}") from None
        issuer = str(unverified.get("iss", ""))
        provider_arn, client_ids = self._provider(issuer)
        key = self._verification_key(issuer, kid)
        try:
            claims = jwt.decode(token, key, algorithms=_ALGORITHMS, audience=client_ids, issuer=issuer)
        except jwt.ExpiredSignatureError:
            raise StsRefusal(400, "ExpiredTokenException", "Token expired") from None
        except jwt.InvalidAudienceError:
            raise _invalid("Incorrect token audience") from None
        except jwt.PyJWTError:
            raise _invalid(
                "The web identity token that was passed could not be validated by AWS. "
                "Get a new identity token from the identity provider and then retry the request."
            ) from None
        self._trust(role_arn, provider_arn, issuer.removeprefix("https://"), claims)

    def _provider(self, issuer: str) -> tuple[str, list[str]]:
        for listed in self._iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
            provider = self._iam.get_open_id_connect_provider(OpenIDConnectProviderArn=listed["Arn"])
            if f"https://{provider['Url']}".rstrip("/") == issuer.rstrip("/"):
                return listed["Arn"], list(provider["ClientIDList"])
        raise _invalid(f"No OpenIDConnect provider found in your account for {issuer}")

    def _fetch(self, url: str) -> Any:
        with urllib.request.urlopen(url, timeout=5, context=self._tls) as answer:
            return json.load(answer)

    def _verification_key(self, issuer: str, kid: str | None) -> Any:
        try:
            discovery = self._fetch(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
            keys = jwt.PyJWKSet.from_dict(self._fetch(str(discovery["jwks_uri"])))
        except (OSError, urllib.error.URLError, ValueError, KeyError, jwt.PyJWTError):
            raise StsRefusal(
                400,
                "IDPCommunicationError",
                "Couldn't retrieve verification key from your identity provider, "
                "please reference AssumeRoleWithWebIdentity documentation for requirements",
            ) from None
        for key in keys.keys:
            if key.key_id == kid:
                return key
        raise _invalid(f"No key in the identity provider's JWKS matches the token's kid {kid!r}")

    def _trust(self, role_arn: str, provider_arn: str, provider_url: str, claims: dict[str, Any]) -> None:
        role_name = role_arn.rsplit("/", 1)[-1]
        policy = self._iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
        if isinstance(policy, str):
            policy = json.loads(urllib.parse.unquote(policy))
        context = {f"{provider_url}:aud": str(claims.get("aud", "")), f"{provider_url}:sub": str(claims["sub"])}
        if isinstance(claims.get("aud"), list):
            context[f"{provider_url}:aud"] = str(claims["aud"][0])
        for statement in policy.get("Statement", []):
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            if (
                statement.get("Effect") == "Allow"
                and "sts:AssumeRoleWithWebIdentity" in actions
                and statement.get("Principal", {}).get("Federated") == provider_arn
                and _conditions_hold(statement.get("Condition", {}), context)
            ):
                return
        raise StsRefusal(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")

    def _relay(self, body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.moto_endpoint, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    @staticmethod
    def _error(refusal: StsRefusal) -> bytes:
        kind = "Sender"
        return (
            f'<ErrorResponse xmlns="{_XMLNS}"><Error><Type>{kind}</Type><Code>{refusal.code}</Code>'
            f"<Message>{refusal.message}</Message></Error><RequestId>fake</RequestId></ErrorResponse>"
        ).encode()


def _conditions_hold(conditions: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    for operator, tests in conditions.items():
        for key, expected in tests.items():
            values = [expected] if isinstance(expected, str) else list(expected)
            actual = context.get(key)
            if actual is None:
                return False
            if operator == "StringEquals" and actual not in values:
                return False
            if operator == "StringLike" and not any(fnmatch.fnmatchcase(actual, value) for value in values):
                return False
            if operator not in ("StringEquals", "StringLike"):
                return False
    return True

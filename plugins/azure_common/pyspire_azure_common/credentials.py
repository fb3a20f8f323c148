"""A tenant's ID from its domain, and the credential an Azure plugin reads Azure's APIs with.

The ID is what Microsoft Entra publishes for the domain: ``GET <authority>/<domain>/.well-known/
openid-configuration``, whose issuer is ``https://sts.windows.net/<tenant id>/``. The
credential is the tenant's app registration (a secret, or a JWT on disk presented as a client
assertion) or, with neither, Azure's default credential chain (environment, workload identity,
managed identity), as SPIRE's.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from azure.core.credentials import TokenCredential
from azure.identity import ClientAssertionCredential, ClientSecretCredential, DefaultAzureCredential

__all__ = [
    "DEFAULT_AUTHORITY",
    "TenantLookupError",
    "assertion_reader",
    "credential",
    "environment_authority",
    "lookup_tenant_id",
]

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
LOOKUP_TIMEOUT_SECONDS = 10.0
MAX_DISCOVERY_BYTES = 64 * 1024
_ISSUER = re.compile(r"^https://sts\.windows\.net/([^/]+)/$")
_ASSERTION_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"})


class TenantLookupError(Exception):
    """The tenant's ID could not be learnt; the message says why."""


def lookup_tenant_id(domain: str, authority: str = DEFAULT_AUTHORITY) -> str:
    """The tenant ID Entra publishes for ``domain``."""
    url = f"{authority.rstrip('/')}/{urllib.parse.quote(domain, safe='')}/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=LOOKUP_TIMEOUT_SECONDS) as response:  # noqa: S310 - https authority
            body: bytes = response.read(MAX_DISCOVERY_BYTES + 1)
    except urllib.error.HTTPError as err:
        raise TenantLookupError(f"failed to fetch tenant ID, status: {err.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise TenantLookupError(f"failed to fetch tenant ID: {getattr(err, 'reason', err)}") from None
    try:
        issuer = json.loads(body[:MAX_DISCOVERY_BYTES]).get("issuer")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise TenantLookupError(f"failed to unmarshal tenant ID: {err}") from None
    match = _ISSUER.match(issuer) if isinstance(issuer, str) else None
    if match is None:
        raise TenantLookupError(f'malformed tenant ID: "{issuer}"')
    return match.group(1)


def assertion_reader(token_path: str) -> Any:
    """A callable giving the JWT at ``token_path``, read afresh each time (projected tokens rotate)."""

    def read() -> str:
        try:
            token = Path(token_path).read_text().strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f'unable to read token file "{token_path}": {err}') from None
        parts = token.split(".")
        try:
            header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
        except (binascii.Error, ValueError, IndexError):
            header = None
        if len(parts) != 3 or not isinstance(header, dict) or header.get("alg") not in _ASSERTION_ALGORITHMS:
            raise ValueError(f'unable to parse token file "{token_path}": not a signed JWT')
        return token

    return read


def environment_authority() -> str:
    """The Entra authority ``AZURE_AUTHORITY_HOST`` names (as Azure's SDKs read it), or the public cloud's.

    For plugins SPIRE gives no authority key: SPIRE's Go SDK reads the same variable.
    """
    return os.environ.get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY


def credential(
    tenant_id: str | None,
    *,
    secret: tuple[str, str] | None = None,
    assertion: tuple[str, str] | None = None,
    authority: str = DEFAULT_AUTHORITY,
) -> TokenCredential:
    """The tenant's credential: an app secret or assertion ``(app_id, secret or token_path)``, or the default chain.

    Without a ``tenant_id`` it is the default chain, which picks its tenant itself (``AZURE_TENANT_ID``).
    """
    options: dict[str, Any] = {"authority": authority}
    if authority.rstrip("/") != DEFAULT_AUTHORITY:
        # Instance discovery asks the public cloud about the authority; another one answers for itself.
        options["disable_instance_discovery"] = True
    if secret is not None and tenant_id is not None:
        return ClientSecretCredential(tenant_id, secret[0], secret[1], **options)
    if assertion is not None and tenant_id is not None:
        return ClientAssertionCredential(tenant_id, assertion[0], assertion_reader(assertion[1]), **options)
    if tenant_id is None:
        return DefaultAzureCredential(**options)
    return DefaultAzureCredential(workload_identity_tenant_id=tenant_id, **options)

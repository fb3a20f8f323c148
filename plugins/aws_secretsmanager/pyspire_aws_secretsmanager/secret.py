"""Where an SVID goes (the entry's selectors) and what the secret holds (SPIRE's JSON document).

An entry's ``aws_secretsmanager`` selectors reach the plugin as ``key:value`` metadata:

- ``secretname:<name>``: the secret's friendly name; needed to create it.
- ``arn:<arn>``: the secret's ARN; takes precedence over the name to find it.
- ``kmskeyid:<key>``: the KMS key (ID, ARN, alias) a new secret is encrypted with; AWS's
  default key for Secrets Manager otherwise.

The secret's value is SPIRE's document, written as Go's encoder writes it (compact, fields in
this order, empty ones left out)::

    {"spiffeID": "spiffe://example.org/db",
     "x509SVID": "<chain PEM, leaf first>", "x509SVIDKey": "<PKCS #8 key PEM>",
     "bundle": "<trust domain's X.509 authorities PEM>",
     "federatedBundles": {"spiffe://partner.org": "<PEM>"}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspire.plugin.errors import InvalidArgument
from pyspire.spiffe import Bundle, TrustDomain, X509Svid

__all__ = ["SecretLocation", "secret_document"]

_KEYS = {"secretname": "name", "arn": "arn", "kmskeyid": "kms_key_id"}


@dataclass(frozen=True)
class SecretLocation:
    """The secret an entry's selectors name."""

    name: str = ""
    arn: str = ""
    kms_key_id: str = ""

    @property
    def secret_id(self) -> str:
        """What Secrets Manager is asked about: the ARN when given, the name otherwise."""
        return self.arn or self.name

    @classmethod
    def parse(cls, metadata: Sequence[str]) -> SecretLocation:
        """Read ``secretname:``, ``arn:`` and ``kmskeyid:`` values; InvalidArgument for anything else.

        A key given twice, or one the plugin does not know, is refused rather than picked or
        ignored: the entry would otherwise store its SVID somewhere its author did not say.
        """
        found: dict[str, str] = {}
        for item in metadata:
            key, sep, value = item.partition(":")
            if not sep:
                raise InvalidArgument(f"failed to parse Metadata: metadata does not contain a colon: {item!r}")
            if key not in _KEYS:
                raise InvalidArgument(
                    f'unknown selector "aws_secretsmanager:{key}" (expected secretname, arn or kmskeyid)'
                )
            if key in found:
                raise InvalidArgument(f'two "aws_secretsmanager:{key}" selectors: one secret per entry')
            found[key] = value
        location = cls(**{_KEYS[key]: value for key, value in found.items()})
        if not location.secret_id:
            raise InvalidArgument("either the secret name or ARN is required")
        return location


def secret_document(svid: X509Svid, bundle: Bundle, federated_bundles: Mapping[TrustDomain, Bundle]) -> bytes:
    """The secret's value for ``svid`` with the trust domain's and the federated bundles."""
    chain, key = svid.marshal()
    federated = {
        f"spiffe://{trust_domain.name}": other.marshal_x509_pem().decode()
        for trust_domain, other in sorted(federated_bundles.items(), key=lambda item: item[0].name)
    }
    fields: dict[str, object] = {
        "spiffeID": str(svid.spiffe_id),
        "x509SVID": chain.decode(),
        "x509SVIDKey": key.decode(),
        "bundle": bundle.marshal_x509_pem().decode(),
        "federatedBundles": federated,
    }
    return json.dumps({name: value for name, value in fields.items() if value}, separators=(",", ":")).encode()

"""The bundle formats BundlePublisher plugins write, by the names SPIRE's publishers take.

SPIRE's plugin SDK gives every publisher (``aws_s3``, ``gcp_cloudstorage``,
``k8s_configmap``) one ``format`` setting with three values, and so does this module:

- ``spiffe``: the SPIFFE bundle document (a JWK Set with ``use`` on every key,
  ``spiffe_sequence`` and ``spiffe_refresh_hint`` when set), X.509 and JWT authorities.
- ``jwks``: a plain RFC 7517 JWK Set of the same keys, without the SPIFFE members: each X.509
  authority is its public key with the certificate in ``x5c``, each JWT authority its key
  with its ``kid``.
- ``pem``: the X.509 authorities as PEM certificates; JWT authorities are left out.

The JSON is compact, as Go's encoder writes it; names are matched case-insensitively, as
SPIRE's ``bundleformat.FromString`` does.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from pyspire.spiffe import Bundle

__all__ = ["BundleFormat"]


class BundleFormat(enum.Enum):
    """A format a publisher writes the bundle in; ``BundleFormat.parse("SPIFFE")``."""

    SPIFFE = "spiffe"
    JWKS = "jwks"
    PEM = "pem"

    @classmethod
    def parse(cls, name: str) -> BundleFormat:
        """The format called ``name`` (any case); ValueError naming the choices otherwise."""
        try:
            return cls(name.lower())
        except ValueError:
            choices = ", ".join(member.value for member in cls)
            raise ValueError(f'unknown bundle format "{name}" (expected one of {choices})') from None

    def render(self, bundle: Bundle) -> bytes:
        """``bundle`` written in this format."""
        if self is BundleFormat.PEM:
            return bundle.marshal_x509_pem()
        document = bundle.to_spiffe_document()
        if self is BundleFormat.JWKS:
            document = {"keys": [_without_use(key) for key in document["keys"]]}
        return json.dumps(document, separators=(",", ":")).encode()


def _without_use(key: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in key.items() if name != "use"}

"""What the two halves of ``gcp_iit`` agree on: the token's audience and its size bound.

Kept apart from :mod:`pyspire_gcp_iit.token` so that the agent half, which only fetches a
token, does not import google-auth and requests, which only the server half needs.
"""

from __future__ import annotations

__all__ = ["DEFAULT_AUDIENCE", "MAX_TOKEN_BYTES"]

DEFAULT_AUDIENCE = "spire-gcp-node-attestor"
MAX_TOKEN_BYTES = 16 * 1024

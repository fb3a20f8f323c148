"""The SPIFFE standards as a library: identifiers, SVIDs, bundles, endpoints.

No server code lives here; this package is what a workload, a verifier or the daemons use
to parse and check SPIFFE documents. One concept per module:

- :mod:`~pyspire.spiffe.spiffeid` — :class:`SpiffeId`, :class:`TrustDomain`
- :mod:`~pyspire.spiffe.match` — matchers for accepted peer IDs
- :mod:`~pyspire.spiffe.bundle`, :mod:`~pyspire.spiffe.bundleset` — trust bundles
- :mod:`~pyspire.spiffe.x509svid` — X509-SVIDs and their verification
- :mod:`~pyspire.spiffe.jwtsvid` — JWT-SVIDs and their validation
- :mod:`~pyspire.spiffe.endpoint` — Workload API addresses
"""

from pyspire.spiffe.bundle import Bundle, BundleError, BundleSource
from pyspire.spiffe.bundleset import BundleSet
from pyspire.spiffe.endpoint import (
    EndpointError,
    TcpEndpoint,
    UnixEndpoint,
    endpoint_from_environment,
    parse_endpoint,
)
from pyspire.spiffe.jwtsvid import JwtSvid, JwtSvidError
from pyspire.spiffe.match import MatchError, match_any, match_id, match_member_of, match_one_of
from pyspire.spiffe.spiffeid import SpiffeId, SpiffeIdError, TrustDomain
from pyspire.spiffe.x509svid import X509Svid, X509SvidError
from pyspire.spiffe.x509svid import verify as verify_x509_svid

__all__ = [
    "Bundle",
    "BundleError",
    "BundleSet",
    "BundleSource",
    "EndpointError",
    "JwtSvid",
    "JwtSvidError",
    "MatchError",
    "SpiffeId",
    "SpiffeIdError",
    "TcpEndpoint",
    "TrustDomain",
    "UnixEndpoint",
    "X509Svid",
    "X509SvidError",
    "endpoint_from_environment",
    "match_any",
    "match_id",
    "match_member_of",
    "match_one_of",
    "parse_endpoint",
    "verify_x509_svid",
]

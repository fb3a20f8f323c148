"""The SPIFFE standards as a library: identifiers, SVIDs, bundles, and the workload's side.

No server code lives here; this package is what a workload, a verifier or the daemons use
to get, parse and check SPIFFE documents (it is the ``pyspire-spiffe`` distribution). One
concept per module:

- :mod:`~pyspire.spiffe.spiffeid` — :class:`SpiffeId`, :class:`TrustDomain`
- :mod:`~pyspire.spiffe.match` — matchers for accepted peer IDs
- :mod:`~pyspire.spiffe.bundle`, :mod:`~pyspire.spiffe.bundleset` — trust bundles
- :mod:`~pyspire.spiffe.x509svid` — X509-SVIDs and their verification
- :mod:`~pyspire.spiffe.jwtsvid` — JWT-SVIDs and their validation
- :mod:`~pyspire.spiffe.endpoint` — Workload API addresses
- :mod:`~pyspire.spiffe.workloadapi` — the Workload API client (asyncio)
- :mod:`~pyspire.spiffe.blocking` — the same calls for synchronous code
- :mod:`~pyspire.spiffe.x509source`, :mod:`~pyspire.spiffe.jwtsource` — :class:`X509Source`,
  :class:`JwtSource` and their asyncio twins: material kept current from the agent
- :mod:`~pyspire.spiffe.watch` — reconnecting with backoff, the sources' thread
- :mod:`~pyspire.spiffe.tls` — ``ssl.SSLContext`` objects that follow rotation, authorizers

The names below are imported when first used, so a program that needs only IDs or bundles
does not load the Workload API client, gRPC and the sources (a tenth of a daemon's start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspire.spiffe.blocking import BlockingWorkloadApiClient
    from pyspire.spiffe.bundle import Bundle, BundleError, BundleSource
    from pyspire.spiffe.bundleset import BundleSet
    from pyspire.spiffe.endpoint import (
        EndpointError,
        TcpEndpoint,
        UnixEndpoint,
        endpoint_from_environment,
        parse_endpoint,
    )
    from pyspire.spiffe.jwtsource import AsyncJwtSource, JwtSource
    from pyspire.spiffe.jwtsvid import JwtSvid, JwtSvidError
    from pyspire.spiffe.match import MatchError, match_any, match_id, match_member_of, match_one_of
    from pyspire.spiffe.spiffeid import SpiffeId, SpiffeIdError, TrustDomain
    from pyspire.spiffe.watch import Backoff, SourceClosedError, SourceTimeoutError
    from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError, X509Context
    from pyspire.spiffe.x509source import AsyncX509Source, SvidPicker, X509Source
    from pyspire.spiffe.x509svid import X509Svid, X509SvidError
    from pyspire.spiffe.x509svid import verify as verify_x509_svid

_HOMES = {
    "BlockingWorkloadApiClient": "blocking",
    "Bundle": "bundle",
    "BundleError": "bundle",
    "BundleSource": "bundle",
    "BundleSet": "bundleset",
    "EndpointError": "endpoint",
    "TcpEndpoint": "endpoint",
    "UnixEndpoint": "endpoint",
    "endpoint_from_environment": "endpoint",
    "parse_endpoint": "endpoint",
    "AsyncJwtSource": "jwtsource",
    "JwtSource": "jwtsource",
    "JwtSvid": "jwtsvid",
    "JwtSvidError": "jwtsvid",
    "MatchError": "match",
    "match_any": "match",
    "match_id": "match",
    "match_member_of": "match",
    "match_one_of": "match",
    "SpiffeId": "spiffeid",
    "SpiffeIdError": "spiffeid",
    "TrustDomain": "spiffeid",
    "Backoff": "watch",
    "SourceClosedError": "watch",
    "SourceTimeoutError": "watch",
    "WorkloadApiClient": "workloadapi",
    "WorkloadApiError": "workloadapi",
    "X509Context": "workloadapi",
    "AsyncX509Source": "x509source",
    "SvidPicker": "x509source",
    "X509Source": "x509source",
    "X509Svid": "x509svid",
    "X509SvidError": "x509svid",
    "verify_x509_svid": "x509svid",
}
"""Each exported name's module."""

__all__ = [
    "AsyncJwtSource",
    "AsyncX509Source",
    "Backoff",
    "BlockingWorkloadApiClient",
    "Bundle",
    "BundleError",
    "BundleSet",
    "BundleSource",
    "EndpointError",
    "JwtSource",
    "JwtSvid",
    "JwtSvidError",
    "MatchError",
    "SourceClosedError",
    "SourceTimeoutError",
    "SpiffeId",
    "SpiffeIdError",
    "SvidPicker",
    "TcpEndpoint",
    "TrustDomain",
    "UnixEndpoint",
    "WorkloadApiClient",
    "WorkloadApiError",
    "X509Context",
    "X509Source",
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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), "verify" if name == "verify_x509_svid" else name)
    globals()[name] = value
    return value

"""Per-IP rate limits of the server APIs, with SPIRE's defaults.

- AttestAgent: 1 per second per IP (``ratelimit { attestation = false }`` turns it off);
- signing (BatchNewX509SVID, RenewAgent, NewJWTSVID, NewDownstreamX509CA): 500 per second per
  IP, counted per item for batches (``ratelimit { signing = false }``);
- PublishJWTAuthority: 500 per second per IP (always);
- PostStatus: 10 per second per IP (always).

Calls over the local socket are never limited. Memory stays bounded however many addresses
call: the least recently seen buckets are dropped first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LIMITED_METHODS", "RateLimits"]

_AGENT = "/spire.api.server.agent.v1.Agent/"
_SVID = "/spire.api.server.svid.v1.SVID/"
_BUNDLE = "/spire.api.server.bundle.v1.Bundle/"

ATTESTATION = "attestation"
SIGNING = "signing"
PUBLISHING = "publishing"
STATUS = "status"

LIMITED_METHODS = {
    _AGENT + "AttestAgent": ATTESTATION,
    _AGENT + "RenewAgent": SIGNING,
    _SVID + "BatchNewX509SVID": SIGNING,
    _SVID + "NewJWTSVID": SIGNING,
    _SVID + "NewDownstreamX509CA": SIGNING,
    _BUNDLE + "PublishJWTAuthority": PUBLISHING,
    _AGENT + "PostStatus": STATUS,
}
_RATES = {ATTESTATION: 1.0, SIGNING: 500.0, PUBLISHING: 500.0, STATUS: 10.0}


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimits:
    """Token buckets per (limit, IP address)."""

    def __init__(
        self,
        *,
        attestation: bool = True,
        signing: bool = True,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Limits as SPIRE's ``ratelimit`` block configures them."""
        self._enabled = {ATTESTATION: attestation, SIGNING: signing, PUBLISHING: True, STATUS: True}
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._max = max_addresses
        self._clock = clock
        self._lock = threading.Lock()

    def applies(self, method: str) -> bool:
        """Whether ``method`` is rate limited (it has a limit, and the config leaves it on)."""
        limit = LIMITED_METHODS.get(method)
        return limit is not None and self._enabled[limit]

    def allow(self, method: str, address: str | None, count: int = 1) -> bool:
        """Whether ``count`` calls of ``method`` from ``address`` fit in its limit now."""
        limit = LIMITED_METHODS.get(method)
        if limit is None or address is None or not self._enabled[limit]:
            return True
        rate = _RATES[limit]
        now = self._clock()
        with self._lock:
            key = (limit, address)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(rate, now)
                self._buckets[key] = bucket
                if len(self._buckets) > self._max:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                bucket.tokens = min(rate, bucket.tokens + (now - bucket.updated) * rate)
                bucket.updated = now
            if count > rate:
                count = int(rate)  # a batch larger than a second's budget waits for a full bucket
            if bucket.tokens < count:
                return False
            bucket.tokens -= count
            return True

    def describe(self, method: str) -> str:
        """A human description of ``method``'s limit, for error messages."""
        limit = LIMITED_METHODS.get(method)
        return f"{_RATES[limit]:g} per second per address" if limit else "unlimited"

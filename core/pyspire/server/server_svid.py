"""The server's own identity (``spiffe://<td>/spire/server``) for its TLS endpoint.

Its key is generated in memory, as SPIRE does: it only ever authenticates this process, so
it needs no key manager and no persistence. The SVID is renewed at half its lifetime and
whenever the active CA changes, and listeners (the TLS contexts) hear about every renewal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.server.ca.issuer import CredentialIssuer
from pyspire.telemetry.metrics import NO_METRICS, Metrics

__all__ = ["ServerSvid"]

_log = logging.getLogger(__name__)


class ServerSvid:
    """The server's current X509-SVID and key."""

    def __init__(
        self,
        issuer: CredentialIssuer,
        ttl: timedelta,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """SVIDs of ``ttl`` from ``issuer``; call :meth:`rotate` to get the first one."""
        self._metrics = metrics
        self._issuer = issuer
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._chain: list[x509.Certificate] = []
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._listeners: list[Callable[[], None]] = []

    @property
    def chain(self) -> list[x509.Certificate]:
        """The SVID, leaf first."""
        return self._chain

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The SVID's private key (in memory only)."""
        if self._key is None:
            raise RuntimeError("the server SVID has not been issued yet")
        return self._key

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each renewal."""
        self._listeners.append(listener)

    def due(self) -> bool:
        """Whether the SVID is missing or past half its lifetime."""
        if not self._chain:
            return True
        leaf = self._chain[0]
        half = leaf.not_valid_before_utc + (leaf.not_valid_after_utc - leaf.not_valid_before_utc) / 2
        return datetime.fromtimestamp(self._clock(), UTC) >= half

    def rotate(self, *, force: bool = False) -> bool:
        """Renew the SVID if due (or ``force``); True when renewed."""
        with self._lock:
            if not force and not self.due():
                return False
            with self._metrics.call("svid", "rotate"):
                _log.debug("Rotating server SVID")
                key = ec.generate_private_key(ec.SECP256R1())
                self._chain = self._issuer.sign_server_x509_svid(key.public_key(), self._ttl)
                self._key = key
        _log.info("Server SVID renewed", extra={"expiration": self._chain[0].not_valid_after_utc.isoformat()})
        for listener in list(self._listeners):
            listener()
        return True

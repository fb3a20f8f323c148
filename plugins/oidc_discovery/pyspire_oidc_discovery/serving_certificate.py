"""``serving_cert_file``: the HTTPS certificate read from disk, and read again when the files change.

Every ``file_sync_interval`` the certificate and key files are looked at; when either's
modification time differs from the last load, both are loaded again and new connections get
the new certificate (open ones keep theirs). A pair that cannot be loaded (half-written, a key
that does not match) is logged and the previous certificate stays in use, so a renewal that
goes wrong never takes HTTPS down; the files are tried again at the next check. This is what
SPIRE's provider does, and what lets an ACME client (certbot, lego) renew the certificate
without restarting the provider.

The certificate is chosen per handshake: the listening context's SNI callback (called for
every ClientHello, with or without SNI) hands the connection the context of the current pair.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

__all__ = ["CertificateError", "ServingCertificate"]

_log = logging.getLogger("pyspire.oidc_discovery.serving_certificate")


class CertificateError(Exception):
    """The certificate and key files cannot be used; the message names them and says why."""


def _mtime(path: Path) -> int:
    return os.stat(path).st_mtime_ns


class ServingCertificate:
    """The current certificate of ``cert_file`` and ``key_file``, as a TLS server context."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        """Load the pair now; CertificateError when it cannot be."""
        self.cert_file = cert_file
        self.key_file = key_file
        self._current = self._load()
        self._modified: tuple[int, int] | None = self._stamps()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.sni_callback = self._choose

    def _stamps(self) -> tuple[int, int] | None:
        try:
            return _mtime(self.cert_file), _mtime(self.key_file)
        except OSError:
            return None

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except ssl.SSLError as err:  # before OSError: it is one
            raise CertificateError(
                f"failed to load certificate: {self.cert_file} and {self.key_file} are not a PEM certificate "
                f"and its private key ({err.reason or err})"
            ) from None
        except OSError as err:
            where = err.filename or self.cert_file
            raise CertificateError(f"failed to load certificate: {where}: {err.strerror}") from None
        return context

    def _choose(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        connection.context = self._current

    def sync(self) -> None:
        """Load the files again if either changed since the last load; keep the old pair if they cannot be."""
        stamps = self._stamps()
        if stamps is None:
            missing = [str(path) for path in (self.cert_file, self.key_file) if not path.exists()]
            _log.error(
                "Failed to get file info; please check if the path is correct",
                extra={"missing": ",".join(missing) or "(unreadable)"},
            )
            return
        if stamps == self._modified:
            return
        _log.info("File change detected, reloading certificate and key...")
        try:
            self._current = self._load()
        except CertificateError as err:
            _log.error("Failed to load certificate", extra={"error": str(err)})
            return
        self._modified = stamps
        _log.info("Loaded provided certificate with success")

    async def watch(self, interval: float) -> None:
        """Sync every ``interval`` seconds until cancelled."""
        _log.info("Started watching certificate files", extra={"interval": f"{interval:g}s"})
        while True:
            await asyncio.sleep(interval)
            self.sync()

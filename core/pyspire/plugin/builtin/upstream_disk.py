"""The built-in UpstreamAuthority ``disk``: the server's CA is signed by a CA key on disk.

Plugin data (as SPIRE's): ``cert_file_path`` and ``key_file_path`` (PEM) hold the upstream
CA; ``bundle_file_path`` holds the roots above it and is required when that CA is not itself
a root. The files are read again at every CA rotation, so an operator can replace the
upstream CA without restarting the server.

Each signed CA certificate takes only the public key and subject of the server's request,
gets the trust domain's SPIFFE ID as its URI SAN, and never outlives the upstream CA
(:mod:`pyspire.plugin.upstream_ca`, which ``awssecret`` shares).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, PluginConfigError
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data
from pyspire.plugin.upstream import UpstreamX509Ca
from pyspire.plugin.upstream_ca import PemSource, PemUpstreamCa, load_pem_upstream_ca

__all__ = ["DiskUpstreamAuthority"]


@dataclass(frozen=True)
class DiskUpstreamConfig:
    """``plugin_data`` of ``UpstreamAuthority "disk"``."""

    cert_file_path: str
    key_file_path: str
    bundle_file_path: str = ""


class DiskUpstreamAuthority:
    """Signs the server's intermediate CA with a key read from disk."""

    def __init__(self) -> None:
        self._config: DiskUpstreamConfig | None = None
        self._trust_domain_id = ""

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        self._config = parse_plugin_data(DiskUpstreamConfig, plugin_data)
        self._trust_domain_id = core.trust_domain.id_string()
        self._load()

    def _load(self) -> PemUpstreamCa:
        assert self._config is not None
        config = self._config
        return load_pem_upstream_ca(
            PemSource("cert_file_path", config.cert_file_path, _read(config.cert_file_path, "cert_file_path")),
            PemSource("key_file_path", config.key_file_path, _read(config.key_file_path, "key_file_path")),
            PemSource(
                "bundle_file_path",
                config.bundle_file_path,
                _read(config.bundle_file_path, "bundle_file_path") if config.bundle_file_path else b"",
            ),
        )

    @hookimpl
    def mint_x509_ca(self, csr: bytes, preferred_ttl: timedelta) -> UpstreamX509Ca:
        try:
            upstream = self._load()
        except PluginConfigError as err:
            raise Internal(f"the upstream CA files can no longer be used: {err}") from None
        return upstream.sign(csr, preferred_ttl, self._trust_domain_id)


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise PluginConfigError(key, f"cannot read {path}: {err.strerror}") from None

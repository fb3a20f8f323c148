"""``openssl verify`` as the independent judge of a certificate chain."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = ["openssl_verify"]


def _pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def openssl_verify(chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], directory: Path) -> None:
    """Assert that ``chain`` (leaf first, then intermediates) verifies to one of ``roots``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "roots.pem").write_bytes(_pem(roots))
    (directory / "untrusted.pem").write_bytes(_pem(chain[1:]))
    (directory / "leaf.pem").write_bytes(_pem(chain[:1]))
    command = ["openssl", "verify", "-CAfile", str(directory / "roots.pem")]
    if len(chain) > 1:
        command += ["-untrusted", str(directory / "untrusted.pem")]
    result = subprocess.run([*command, str(directory / "leaf.pem")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

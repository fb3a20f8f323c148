"""SSH CAs, host keys and certificates for the tests, made by the real ``ssh-keygen`` (Debian openssh-client)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyspire.plugin.testing import service_unavailable

_names = itertools.count()


def ssh_keygen(*args: str) -> None:
    """Run ssh-keygen quietly; skip (or fail under CI) when it is not installed."""
    binary = shutil.which("ssh-keygen")
    if binary is None:
        service_unavailable("ssh-keygen is not installed (Debian package openssh-client; .ci/services installs it)")
    subprocess.run([str(binary), "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class KeyPair:
    """A private key file and its ``.pub`` beside it."""

    path: Path

    @property
    def public_line(self) -> str:
        return self.path.with_name(self.path.name + ".pub").read_text().strip()


def new_key(directory: Path, key_type: str = "ed25519", bits: int | None = None) -> KeyPair:
    """A fresh unencrypted key of ``key_type`` (``ed25519``, ``rsa``, ``ecdsa``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"key{next(_names)}-{key_type}"
    size = ["-b", str(bits)] if bits else []
    ssh_keygen("-t", key_type, *size, "-N", "", "-C", path.name, "-f", str(path))
    return KeyPair(path)


def certify(
    ca: KeyPair,
    key: KeyPair,
    *principals: str,
    host: bool = True,
    validity: str = "-5m:+1h",
    key_id: str = "node",
    serial: int = 1,
    options: tuple[str, ...] = (),
) -> Path:
    """Sign ``key``'s public key with ``ca``: a host certificate unless ``host=False``; its path.

    ``validity`` is ssh-keygen's ``-V`` (``-2d:-1d`` has expired, ``+1d:+2d`` is not valid yet,
    ``always:forever``); each call writes a new file, so one key can hold several certificates.
    """
    public = key.path.with_name(key.path.name + ".pub")
    staged = key.path.with_name(f"{key.path.name}-{next(_names)}.pub")
    shutil.copyfile(public, staged)
    flags = ["-h"] if host else []
    if principals:
        flags += ["-n", ",".join(principals)]
    for option in options:
        flags += ["-O", option]
    ssh_keygen("-s", str(ca.path), "-I", key_id, "-z", str(serial), "-V", validity, *flags, str(staged))
    return staged.with_name(staged.name[: -len(".pub")] + "-cert.pub")

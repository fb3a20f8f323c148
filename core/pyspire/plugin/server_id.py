"""The server ID a cloud KeyManager names its keys with, kept in ``key_identifier_file``.

SPIRE's aws_kms, gcp_kms and azure_key_vault (and pyspire's Vault KeyManager after them) tell
their own keys from other servers' by an ID: ``key_identifier_value``, or a UUID made on first start and kept
in ``key_identifier_file``. The file is read, or made, here once for all of them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from pyspire.files import atomic_write
from pyspire.plugin.errors import PluginConfigError

__all__ = ["read_server_id", "server_id_from_file"]

_KEY = "key_identifier_file"


def read_server_id(path: str) -> str | None:
    """The UUID kept in ``path``, or None when the file does not exist yet.

    Anything but a UUID (surrounding whitespace aside) is refused rather than replaced: a new
    ID would orphan every key the old one names.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise PluginConfigError(_KEY, f"cannot read {path}: {err}") from None
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise PluginConfigError(_KEY, f"{path} does not hold a server ID (a UUID)") from None


def server_id_from_file(path: str) -> str:
    """The UUID kept in ``path``; made and written (mode 0600, atomically) on first start."""
    existing = read_server_id(path)
    if existing is not None:
        return existing
    made = str(uuid.uuid4())
    try:
        atomic_write(Path(path), made.encode())
    except OSError as err:
        raise PluginConfigError(_KEY, f"cannot write {path}: {err.strerror}") from None
    return made

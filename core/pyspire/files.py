"""Durable, private file writes for keys and state.

A crash in the middle of a write must leave the previous file intact (SPIRE v0.9.1 #1267),
and a key file must never exist, even briefly, with permissions wider than 0600 (Cure53
SPI-01-002). So: write a temporary file created 0600 in the same directory, fsync it, rename
it over the target, fsync the directory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "atomic_write", "ensure_private_dir"]

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically, the file having exactly ``mode``."""
    directory = path.parent
    temporary = directory / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or the file pre-existed
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    os.close(fd)
    os.replace(temporary, path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_private_dir(path: Path, mode: int = PRIVATE_DIR_MODE) -> None:
    """Create ``path`` (and parents) if missing; a directory we create gets ``mode``."""
    if not path.is_dir():
        path.mkdir(mode=mode, parents=True, exist_ok=True)

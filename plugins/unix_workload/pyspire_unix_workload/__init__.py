"""WorkloadAttestor ``unix``: who the calling process runs as, and optionally what it runs.

Everything is read from ``/proc/<pid>`` of the process the agent got from SO_PEERCRED: the
effective uid and gid (``Uid:``/``Gid:`` lines of ``status``, second field), the supplementary
groups (``Groups:``), names from the system's user and group databases (omitted, as SPIRE
omits them, when a number has no name), and with ``discover_workload_path`` the executable's
path and SHA-256. The hash is read through ``/proc/<pid>/exe`` so it is the binary the
process really runs, even inside another mount namespace, and is cached by file identity so a
busy workload is hashed once. The identity includes the inode's change time (ctime), which
every write and every ``utime`` call moves to the present and which no unprivileged user can
set back: a binary rewritten in place, with its size kept and its mtime restored, is hashed
again (SPIRE hashes on every call; an mtime-keyed cache would hand out the old digest).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, NotFound

__all__ = ["UnixWorkloadAttestor"]

_HASH_CACHE_SIZE = 256
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UnixConfig:
    """``plugin_data`` of ``WorkloadAttestor "unix"`` (SPIRE's keys and defaults)."""

    discover_workload_path: bool = False
    workload_size_limit: int = 0
    """Largest binary hashed, in bytes: 0 means no limit, a negative value never hashes."""


@dataclass(frozen=True)
class _Status:
    uid: int
    gid: int
    groups: tuple[int, ...]


def _read_status(pid: int) -> _Status:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except FileNotFoundError:
        raise NotFound(f"process {pid} does not exist") from None
    except OSError as err:
        raise Internal(f"cannot read the status of process {pid}: {err.strerror}") from None
    try:
        uid = int(fields["Uid"].split()[1])
        gid = int(fields["Gid"].split()[1])
        groups = tuple(int(value) for value in fields.get("Groups", "").split())
    except (KeyError, IndexError, ValueError):
        raise Internal(f"the status of process {pid} is not in the expected format") from None
    return _Status(uid, gid, groups)


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


class UnixWorkloadAttestor:
    """Selectors ``uid``, ``user``, ``gid``, ``group``, ``supplementary_gid``,
    ``supplementary_group``, and with path discovery ``path`` and ``sha256``."""

    def __init__(self) -> None:
        self._config = UnixConfig()
        self._hashes: OrderedDict[tuple[int, ...], str] = OrderedDict()
        self._lock = threading.Lock()

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        self._config = parse_plugin_data(UnixConfig, plugin_data)

    @hookimpl
    def attest_workload(self, pid: int) -> Sequence[str]:
        status = _read_status(pid)
        selectors = [f"uid:{status.uid}"]
        if (user := _user_name(status.uid)) is not None:
            selectors.append(f"user:{user}")
        selectors.append(f"gid:{status.gid}")
        if (group := _group_name(status.gid)) is not None:
            selectors.append(f"group:{group}")
        for gid in status.groups:
            selectors.append(f"supplementary_gid:{gid}")
            if (name := _group_name(gid)) is not None:
                selectors.append(f"supplementary_group:{name}")
        if self._config.discover_workload_path:
            selectors.extend(self._path_selectors(pid))
        return selectors

    def _path_selectors(self, pid: int) -> list[str]:
        try:
            path = os.readlink(f"/proc/{pid}/exe")
        except OSError as err:
            raise Internal(f"path lookup: unable to get EXE for PID {pid}: {err.strerror}") from None
        found = [f"path:{path}"]
        if self._config.workload_size_limit >= 0:
            found.append(f"sha256:{self._sha256(pid, path)}")
        return found

    def _sha256(self, pid: int, path: str) -> str:
        limit = self._config.workload_size_limit
        try:
            binary = open(f"/proc/{pid}/exe", "rb")  # noqa: SIM115 - closed by the with below
        except OSError as err:
            raise Internal(f"SHA256 digest: cannot open {path}: {err.strerror}") from None
        with binary:
            info = os.fstat(binary.fileno())
            if limit and info.st_size > limit:
                raise Internal(f"SHA256 digest: workload {path} exceeds size limit ({info.st_size} > {limit})")
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            with self._lock:
                cached = self._hashes.get(key)
            if cached is not None:
                return cached
            digest = hashlib.sha256()
            try:
                while chunk := binary.read(_CHUNK):
                    digest.update(chunk)
            except OSError as err:
                raise Internal(f"SHA256 digest: cannot read {path}: {err.strerror}") from None
        value = digest.hexdigest()
        with self._lock:
            self._hashes[key] = value
            while len(self._hashes) > _HASH_CACHE_SIZE:
                self._hashes.popitem(last=False)
        return value

"""Real cgroups shaped like a container runtime's or systemd's, for real processes to be put in.

A container runtime makes one cgroup per container in every hierarchy it manages (each cgroup
v1 controller, v1 ``name=systemd``, the v2 tree) at a path that names the container; systemd
one per unit (``system.slice/web.service``). The kernel then lists those paths in
``/proc/<pid>/cgroup``, where workload attestors look. ``Cgroup`` makes such a cgroup below
the test's own cgroup in each hierarchy (so resource limits on the test still apply) and
moves processes into it; leaving puts them back and removes the directories. It needs root
and writable cgroup mounts; without them the test skips and says why.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

Hierarchies = Literal["all", "v1", "v2"]


@dataclass(frozen=True)
class _Hierarchy:
    version: int
    own_dir: Path
    """The test process's cgroup directory in this hierarchy."""


def _mounts() -> list[tuple[str, str, set[str], Path]]:
    """(fstype, root, super options, mount point) of each cgroup mount this process sees."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        separator = fields.index("-")
        fstype = fields[separator + 1]
        if fstype in ("cgroup", "cgroup2"):
            options = set(fields[separator + 3].split(",")) if len(fields) > separator + 3 else set()
            found.append((fstype, fields[3], options, Path(fields[4])))
    return found


def _hierarchies() -> list[_Hierarchy]:
    mounts = _mounts()
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy_id, controllers, path = line.split(":", 2)
        for fstype, root, options, mount_point in mounts:
            v2 = hierarchy_id == "0" and fstype == "cgroup2"
            v1 = hierarchy_id != "0" and fstype == "cgroup" and set(controllers.split(",")) <= options
            if not (v1 or v2):
                continue
            if path == root or path.startswith(root.rstrip("/") + "/"):
                relative = path[len(root.rstrip("/")) :].lstrip("/")
                found.append(_Hierarchy(2 if hierarchy_id == "0" else 1, mount_point / relative))
                break
    return found


class Cgroup:
    """The cgroup at ``path`` (``docker/<id>``, ``system.slice/docker-<id>.scope``, ``system.slice/web.service``)."""

    def __init__(self, path: str, hierarchies: Hierarchies = "all") -> None:
        self.path = path
        self._hierarchies = [
            h for h in _hierarchies() if hierarchies == "all" or h.version == (1 if hierarchies == "v1" else 2)
        ]
        self._pids: list[int] = []
        self._made: list[Path] = []

    def __enter__(self) -> Cgroup:
        if not self._hierarchies:
            pytest.skip("no cgroup hierarchy of this process could be found in /proc/self/mountinfo")
        try:
            for hierarchy in self._hierarchies:
                self._make(hierarchy.own_dir, self.path)
        except OSError as err:
            self.__exit__()
            pytest.skip(f"cannot make cgroups (root and writable cgroup mounts needed): {err}")
        return self

    def _make(self, base: Path, path: str) -> None:
        directory = base
        for part in path.split("/"):
            parent, directory = directory, directory / part
            try:
                directory.mkdir()
            except FileExistsError:
                continue  # another test's container under the same parent (docker/, system.slice/)
            self._made.append(directory)
            for name in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset cgroup takes no task until set
                own = directory / name
                if own.exists() and not own.read_text().strip():
                    own.write_text((parent / name).read_text())

    def directories(self) -> list[Path]:
        """The cgroup's directory in each hierarchy."""
        return [hierarchy.own_dir / self.path for hierarchy in self._hierarchies]

    def add(self, pid: int) -> None:
        """Move process ``pid`` into the cgroup in every hierarchy."""
        for hierarchy in self._hierarchies:
            (hierarchy.own_dir / self.path / "cgroup.procs").write_text(str(pid))
        self._pids.append(pid)

    def __exit__(self, *exc: object) -> None:
        for pid in self._pids:
            for hierarchy in self._hierarchies:
                with contextlib.suppress(OSError):
                    (hierarchy.own_dir / "cgroup.procs").write_text(str(pid))
        for directory in reversed(self._made):
            with contextlib.suppress(OSError):
                directory.rmdir()
        self._made.clear()

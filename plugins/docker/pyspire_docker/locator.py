"""Which container a process runs in, read from the cgroups the kernel lists for it.

``/proc/<pid>/cgroup`` has one ``hierarchy-ID:controller-list:cgroup-path`` line per
hierarchy (cgroup v1 controllers, v1 ``name=systemd``, the v2 ``0::`` line). Container
runtimes put a container's processes in a cgroup whose path names the 64-hex-digit container
ID, in many spellings:

==========================================  =================================================
layout                                      example path
==========================================  =================================================
Docker, cgroupfs driver                     ``/docker/<id>``
Docker, systemd driver (v1 and v2)          ``/system.slice/docker-<id>.scope``
Docker for Desktop, a kind node             ``/docker/<id>/system.slice/containerd.service``
a pod's container in a kind node            ``/docker/<node>/kubepods/besteffort/pod<uid>/<id>``
Podman, rootful / rootless                  ``/machine.slice/libpod-<id>.scope``,
                                            ``/user.slice/user-1000.slice/.../libpod-<id>.scope``
==========================================  =================================================

The default locator (SPIRE's "new container locator") walks each path backwards, segment by
segment, and takes the first 64-hex-digit word it meets; every line must then agree (a line
naming another container, or none after one that named one, is refused: choosing would be a
guess). The legacy locator (``use_new_container_locator = false`` with
``container_id_cgroup_matchers``) matches whole paths against the operator's patterns.

Only the cgroup file is read, never ``/proc/<pid>/mountinfo``: SPIRE falls back to the cgroup
mounts listed there when the cgroup file names no container, but a process's mount table is
its own to shape — an unprivileged user in a user namespace can bind-mount another
container's cgroup directory and be attested as that container (see docs/compatibility.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pyspire.plugin.errors import FailedPrecondition, Internal

__all__ = [
    "Cgroup",
    "CgroupMatchers",
    "check_socket_template",
    "container_id",
    "legacy_container_id",
    "parse_cgroups",
    "podman_socket",
]

_CONTAINER_ID = re.compile(r"\b([0-9A-Fa-f]{64})\b", re.ASCII)
_PODMAN = re.compile(r"libpod-|/libpod/")
_USER_SLICE_UID = re.compile(r"/user-(\d+)\.slice/")
_MAX_UID = 2**32 - 1

_WILDCARD = "*"
_ID_TOKEN = "<id>"  # noqa: S105 - the pattern token, not a secret


@dataclass(frozen=True)
class Cgroup:
    """One line of ``/proc/<pid>/cgroup``."""

    hierarchy_id: str
    controllers: str
    path: str


def parse_cgroups(text: str) -> list[Cgroup]:
    """The lines of a cgroup file; a line without three colon-separated fields is refused."""
    cgroups = []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) < 3:
            raise Internal(
                f"invalid cgroup entry, contains {len(fields)} colon separated fields but expected at least 3: {line!r}"
            )
        cgroups.append(Cgroup(*fields))
    return cgroups


def _id_in_path(path: str) -> str:
    """The 64-hex-digit word nearest the end of ``path`` ("" when there is none)."""
    rest, _, segment = path.rpartition("/")
    while segment:
        found = _CONTAINER_ID.search(segment)
        if found:
            return found.group(1)
        rest, _, segment = rest.rpartition("/")
    return ""


def container_id(cgroups: Sequence[Cgroup]) -> str:
    """The container the cgroups name, "" when none does (the default locator).

    Raises FailedPrecondition when the lines disagree: one names a container and a later one
    another, or none.
    """
    found = ""
    for cgroup in cgroups:
        candidate = _id_in_path(cgroup.path)
        if found and candidate != found:
            raise FailedPrecondition(f"multiple container IDs found ({found!r}, {candidate!r})")
        found = candidate
    return found


class CgroupMatchers:
    """``container_id_cgroup_matchers``: whole-path patterns of ``*`` and one ``<id>`` per pattern.

    Each pattern is a ``/``-separated path whose segments are literal, ``*`` (any one segment)
    or ``<id>`` (one segment, taken as the container ID). Two patterns that could match the
    same path are refused when the plugin is configured, not when a workload first hits them.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        """Compile ``patterns``; ValueError names the pattern that is wrong."""
        if not patterns:
            raise ValueError("at least 1 pattern must be supplied")
        ambiguous = sorted(
            {p for i, p in enumerate(patterns) for q in patterns[i + 1 :] if _equivalent(p, q)}
            | {q for i, p in enumerate(patterns) for q in patterns[i + 1 :] if _equivalent(p, q)}
        )
        if ambiguous:
            raise ValueError(f"patterns must not be ambiguous: {ambiguous}")
        self._expressions = [_compile(pattern) for pattern in patterns]

    def find(self, path: str) -> str | None:
        """The container ID in ``path`` when a pattern matches it (possibly ""), else None."""
        for expression in self._expressions:
            match = expression.fullmatch(path)
            if match:
                return match.group(1)
        return None


def _compile(pattern: str) -> re.Pattern[str]:
    segments = pattern.split("/")
    if segments.count(_ID_TOKEN) != 1:
        raise ValueError(f"pattern {pattern!r} must contain the container id token {_ID_TOKEN!r} exactly once")
    parts = []
    for segment in segments:
        if segment == _WILDCARD:
            parts.append("[^/]*")
        elif segment == _ID_TOKEN:
            parts.append("([^/]*)")
        else:
            parts.append(re.escape(segment))
    return re.compile("/".join(parts))


def _equivalent(a: str, b: str) -> bool:
    """Whether patterns ``a`` and ``b`` can match one path (same length, no segment that rules it out)."""
    if a == b:
        return True
    first, second = a.split("/"), b.split("/")
    if len(first) != len(second):
        return False
    tokens = (_WILDCARD, _ID_TOKEN)
    return all(x == y or x in tokens or y in tokens for x, y in zip(first, second, strict=True))


def legacy_container_id(matchers: CgroupMatchers, cgroups: Sequence[Cgroup]) -> str:
    """The container ID the operator's patterns find, "" when no pattern matches any line.

    Lines no pattern matches are passed over; the matching ones must agree, and a pattern
    that matched with an empty ``<id>`` segment is refused.
    """
    found = ""
    matched = False
    for cgroup in cgroups:
        candidate = matchers.find(cgroup.path)
        if candidate is None:
            continue
        matched = True
        if not found:
            found = candidate
        elif candidate != found:
            raise FailedPrecondition(f"multiple container IDs found in cgroups ({found}, {candidate})")
    if matched and not found:
        raise Internal("a pattern matched, but no container id was found")
    return found


def podman_socket(cgroups: Sequence[Cgroup], rootful: str, rootless_template: str) -> str | None:
    """The Podman socket for a container in Podman's cgroups, None for any other runtime.

    A rootless Podman container sits under its owner's ``user-<uid>.slice``: its API socket
    is ``rootless_template`` with the uid in place of ``%d``. Otherwise (no user slice, or a
    uid out of range) it is the rootful socket.
    """
    for cgroup in cgroups:
        if not _PODMAN.search(cgroup.path):
            continue
        user = _USER_SLICE_UID.search(cgroup.path)
        if user is not None and int(user.group(1)) <= _MAX_UID:
            return _expand(rootless_template, user.group(1))[0]
        return rootful
    return None


def check_socket_template(template: str) -> None:
    """Refuse a rootless socket template without exactly one ``%d`` (``%%`` is a literal %)."""
    _, placeholders = _expand(template, "0")
    if placeholders != 1:
        raise ValueError("template must contain exactly one %d UID placeholder")


def _expand(template: str, uid: str) -> tuple[str, int]:
    """``template`` with each ``%d`` replaced by ``uid`` and ``%%`` by ``%``; and how many ``%d`` it had."""
    out = []
    placeholders = 0
    index = 0
    while index < len(template):
        char = template[index]
        if char != "%":
            out.append(char)
            index += 1
            continue
        if index + 1 >= len(template):
            raise ValueError("trailing % at end of template")
        following = template[index + 1]
        if following == "d":
            out.append(uid)
            placeholders += 1
        elif following == "%":
            out.append("%")
        else:
            raise ValueError("template only supports escaped %% or the %d UID placeholder")
        index += 2
    return "".join(out), placeholders

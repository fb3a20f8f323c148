"""The ``unix`` WorkloadAttestor on real processes started by the tests."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import WorkloadAttestor
from pyspire.plugin.testing import WorkloadAttestorContract, load_plugin, make_core_config

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
SYSTEM_SLEEP = ["/bin/sleep", "60"]
"""For processes of other users, who may not be able to read the test's virtualenv."""
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="starting processes as other users needs root")


class TestUnixContract(WorkloadAttestorContract):
    plugin = "unix"


def attestor(tmp_path: Path, **plugin_data: Any) -> WorkloadAttestor:
    handle = load_plugin("agent", "WorkloadAttestor", "unix", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, WorkloadAttestor)
    return handle


def values(handle: WorkloadAttestor, pid: int) -> list[str]:
    return [s.value for s in handle.attest(pid)]


@pytest.fixture
def spawn() -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str] = SLEEP, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(argv, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_own_process_has_uid_gid_and_names(tmp_path: Path, spawn: Any) -> None:
    process = spawn()
    found = values(attestor(tmp_path), process.pid)
    uid, gid = os.geteuid(), os.getegid()
    assert f"uid:{uid}" in found
    assert f"gid:{gid}" in found
    assert f"user:{pwd.getpwuid(uid).pw_name}" in found
    assert f"group:{grp.getgrgid(gid).gr_name}" in found
    assert not any(v.startswith(("path:", "sha256:")) for v in found)


@root_only
def test_process_of_another_user_with_supplementary_groups(tmp_path: Path, spawn: Any) -> None:
    nobody = pwd.getpwnam("nobody")
    extra = grp.getgrnam("daemon").gr_gid if _group_exists("daemon") else 1
    process = spawn(SYSTEM_SLEEP, user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[extra, 54321])
    found = values(attestor(tmp_path), process.pid)
    assert f"uid:{nobody.pw_uid}" in found
    assert "user:nobody" in found
    assert f"gid:{nobody.pw_gid}" in found
    assert f"supplementary_gid:{extra}" in found
    assert f"supplementary_group:{grp.getgrgid(extra).gr_name}" in found
    # A group ID without a name gets the number only, as in SPIRE.
    assert "supplementary_gid:54321" in found
    assert not any(v.startswith("supplementary_group:") and v.endswith("54321") for v in found)


@root_only
def test_unnamed_uid_has_no_user_selector(tmp_path: Path, spawn: Any) -> None:
    process = spawn(SYSTEM_SLEEP, user=54321, group=54321)
    found = values(attestor(tmp_path), process.pid)
    assert "uid:54321" in found
    assert "gid:54321" in found
    assert not any(v.startswith(("user:", "group:")) for v in found)


def test_path_and_sha256_of_the_running_binary(tmp_path: Path, spawn: Any) -> None:
    process = spawn()
    found = values(attestor(tmp_path, discover_workload_path=True), process.pid)
    executable = os.path.realpath(sys.executable)
    digest = hashlib.sha256(Path(executable).read_bytes()).hexdigest()
    assert f"path:{executable}" in found
    assert f"sha256:{digest}" in found


def _rewrite_in_place_keeping_size_and_mtime(binary: Path) -> None:
    """Change one byte no loader reads (the name of ELF section 0), then set the mtime back."""
    before = binary.stat()
    data = bytearray(binary.read_bytes())
    assert data[:5] == b"\x7fELF\x02", "a 64-bit ELF binary is needed"
    section_headers = int.from_bytes(data[0x28:0x30], sys.byteorder)
    data[section_headers] ^= 0x01
    with binary.open("r+b") as file:
        file.write(data)
    os.utime(binary, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = binary.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def test_a_binary_changed_in_place_with_its_mtime_restored_is_hashed_again(tmp_path: Path, spawn: Any) -> None:
    binary = tmp_path / "sleep"
    shutil.copy2(SYSTEM_SLEEP[0], binary)
    handle = attestor(tmp_path, discover_workload_path=True)
    first = spawn([str(binary), "60"])
    assert f"sha256:{hashlib.sha256(binary.read_bytes()).hexdigest()}" in values(handle, first.pid)
    first.kill()
    first.wait()

    _rewrite_in_place_keeping_size_and_mtime(binary)
    second = spawn([str(binary), "60"])
    found = values(handle, second.pid)
    assert f"sha256:{hashlib.sha256(binary.read_bytes()).hexdigest()}" in found
    assert len([v for v in found if v.startswith("sha256:")]) == 1


def test_negative_size_limit_gives_path_without_hash(tmp_path: Path, spawn: Any) -> None:
    process = spawn()
    found = values(attestor(tmp_path, discover_workload_path=True, workload_size_limit=-1), process.pid)
    assert any(v.startswith("path:") for v in found)
    assert not any(v.startswith("sha256:") for v in found)


def test_binary_over_the_size_limit_fails_attestation(tmp_path: Path, spawn: Any) -> None:
    process = spawn()
    handle = attestor(tmp_path, discover_workload_path=True, workload_size_limit=16)
    with pytest.raises(PluginError, match=r"exceeds size limit \(\d+ > 16\)"):
        handle.attest(process.pid)


@pytest.mark.parametrize(
    ("plugin_data", "key"),
    [
        ({"discover_workload_path": "yes please"}, "discover_workload_path"),
        ({"workload_size_limit": "big"}, "workload_size_limit"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, plugin_data: Mapping[str, Any], key: str) -> None:
    with pytest.raises(CatalogError, match=key):
        attestor(tmp_path, **plugin_data)


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True

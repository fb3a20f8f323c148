"""WorkloadAttestor "systemd": real processes in unit cgroups, a real dbus-daemon, a systemd stand-in on it."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import NotFound, Unavailable
from pyspire.plugin.facades import WorkloadAttestor

from plugins.systemd.tests.bus import FakeSystemd, SystemBus
from tests.support.cgroups import Cgroup
from tests.support.workload_attestors import loaded_attestors, spawned_processes


@pytest.fixture
def spawn() -> Iterator[Any]:
    yield from spawned_processes()


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Any]:
    """Load the plugin with the given ``plugin_data``; every handle is closed after the test."""
    yield from loaded_attestors("systemd", tmp_path / "d")


def selectors(handle: WorkloadAttestor, pid: int) -> set[str]:
    return {str(s) for s in handle.attest(pid)}


@pytest.fixture
def web(systemd: FakeSystemd, spawn: Any) -> Iterator[tuple[int, Path]]:
    """A process of web.service, whose unit file is in the units directory."""
    unit_file = systemd.units / "web.service"
    unit_file.write_text("[Service]\nExecStart=/bin/sleep 60\n")
    process = spawn()
    with Cgroup("system.slice/web.service", "v2") as cgroup:
        cgroup.add(process.pid)
        yield process.pid, unit_file


def test_a_process_of_a_service_gets_its_unit_id_and_fragment_path(
    web: tuple[int, Path], tmp_path: Path, load: Any
) -> None:
    pid, unit_file = web
    assert selectors(load(), pid) == {"systemd:id:web.service", f"systemd:fragment_path:{unit_file}"}


@pytest.mark.usefixtures("systemd")
@pytest.mark.parametrize(
    ("cgroup", "unit"),
    [
        ("user.slice/user-1000.slice/session-3.scope", "session-3.scope"),  # transient: no unit file
        ("system.slice/system-getty.slice/getty@tty1.service", "getty@tty1.service"),  # escaped in the object path
    ],
)
def test_units_without_a_file_and_with_escaped_names(
    spawn: Any, tmp_path: Path, cgroup: str, unit: str, load: Any
) -> None:
    process = spawn()
    with Cgroup(cgroup, "v2") as unit_cgroup:
        unit_cgroup.add(process.pid)
        assert selectors(load(), process.pid) == {f"systemd:id:{unit}", "systemd:fragment_path:"}


@pytest.mark.skipif(shutil.which("dbus-send") is None, reason="dbus-send (Debian package dbus-bin) is needed")
def test_the_stand_in_answers_dbus_send_as_systemd_does(web: tuple[int, Path], bus: SystemBus) -> None:
    """An independent client (dbus-send) sees the stand-in's answers in systemd's types."""
    pid, unit_file = web
    call = ["dbus-send", f"--bus={bus.address}", "--print-reply", "--dest=org.freedesktop.systemd1"]
    by_pid = subprocess.run(
        [*call, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.GetUnitByPID", f"uint32:{pid}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert 'object path "/org/freedesktop/systemd1/unit/web_2eservice"' in by_pid.stdout
    fragment = subprocess.run(
        [*call, "/org/freedesktop/systemd1/unit/web_2eservice", "org.freedesktop.DBus.Properties.Get",
         "string:org.freedesktop.systemd1.Unit", "string:FragmentPath"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f'variant       string "{unit_file}"' in fragment.stdout


@pytest.mark.usefixtures("systemd")
def test_a_process_that_is_gone_fails_attestation(spawn: Any, tmp_path: Path, load: Any) -> None:
    process = spawn()
    process.kill()
    process.wait()
    with pytest.raises(
        NotFound, match=f"pid {process.pid}: org.freedesktop.systemd1.NoUnitForPID: PID {process.pid} does not belong"
    ):
        load().attest(process.pid)


def test_no_bus_fails_attestation_with_the_reason(
    spawn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load: Any
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/absent")
    with pytest.raises(Unavailable, match=r"failed to open dbus connection: .*No such file"):
        load().attest(spawn().pid)


def test_systemd_absent_from_the_bus_fails_attestation(bus: SystemBus, spawn: Any, tmp_path: Path, load: Any) -> None:
    with pytest.raises(Unavailable, match=r"failed to get unit by pid .*org\.freedesktop\.DBus\.Error\.ServiceUnknown"):
        load().attest(spawn().pid)


def test_after_the_bus_restarts_the_next_call_connects_again(
    web: tuple[int, Path], bus: SystemBus, systemd: FakeSystemd, tmp_path: Path, load: Any
) -> None:
    pid, _ = web
    handle = load()
    assert "systemd:id:web.service" in selectors(handle, pid)
    systemd.stop()
    bus.stop()
    with pytest.raises(Unavailable, match="failed to open dbus connection"):
        handle.attest(pid)
    bus.start()
    systemd.start()
    assert "systemd:id:web.service" in selectors(handle, pid)


def test_attesting_threads_share_the_connection(web: tuple[int, Path], tmp_path: Path, load: Any) -> None:
    pid, unit_file = web
    handle = load()
    results: list[set[str]] = []
    callers = [threading.Thread(target=lambda: results.append(selectors(handle, pid))) for _ in range(16)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert results == [{"systemd:id:web.service", f"systemd:fragment_path:{unit_file}"}] * 16


def test_any_plugin_data_is_refused_by_name(tmp_path: Path, load: Any) -> None:
    with pytest.raises(CatalogError, match='key "unit_prefix"'):
        load(unit_prefix="web")

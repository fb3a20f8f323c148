"""A real ``dbus-daemon`` on a private socket, the systemd stand-in on it, and unit cgroups.

``SystemBus`` runs Debian's ``dbus-daemon`` with a system-bus-like policy (only root may own
``org.freedesktop.systemd1``); ``FakeSystemd`` runs ``fake_systemd.py`` on it. ``UnitCgroup``
puts real processes in a unit's cgroup (``system.slice/web.service``) in the cgroup v2 tree,
below the test's own cgroup, which is where systemd would have them and where the stand-in
looks.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyspire.plugin.testing import service_unavailable

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <allow send_destination="*" eavesdrop="false"/>
    <allow receive_sender="*"/>
  </policy>
  <policy user="root">
    <allow own="org.freedesktop.systemd1"/>
  </policy>
</busconfig>
"""


class SystemBus:
    """``dbus-daemon`` listening on ``<directory>/system_bus_socket``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.address = f"unix:path={directory / 'system_bus_socket'}"
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> SystemBus:
        daemon = shutil.which("dbus-daemon")
        if daemon is None:
            service_unavailable("dbus-daemon is not installed (Debian package dbus; .ci/services installs it)")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "bus.conf"
        config.write_text(_CONFIG.format(socket=self.directory / "system_bus_socket"))
        with (self.directory / "dbus-daemon.log").open("ab") as log:  # it says it cannot raise its fd limit
            self._process = subprocess.Popen(
                [str(daemon), f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self._process.stdout is not None
        printed = self._process.stdout.readline().strip()
        assert printed.startswith(self.address), f"dbus-daemon printed {printed!r}"
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            _close_pipes(self._process)
            self._process = None


class FakeSystemd:
    """``fake_systemd.py`` serving on ``bus`` with unit files in ``units``."""

    def __init__(self, bus: SystemBus, units: Path) -> None:
        self.bus = bus
        self.units = units
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> FakeSystemd:
        self.units.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fake_systemd.py")), self.bus.address, str(self.units)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        assert self._process.stdout.readline().strip() == "ready"
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            _close_pipes(self._process)
            self._process = None


def _close_pipes(process: subprocess.Popen[str]) -> None:
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def _own_v2_cgroup() -> Path | None:
    """The test process's directory in the cgroup v2 tree, if one is mounted."""
    own = next(
        (line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::")), None
    )
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if own is not None and fields[fields.index("-") + 1] == "cgroup2" and own.startswith(fields[3]):
            return Path(fields[4]) / own[len(fields[3]) :].lstrip("/")
    return None


class UnitCgroup:
    """The cgroup of unit ``path`` (``system.slice/web.service``); real processes can be put in it."""

    def __init__(self, path: str) -> None:
        base = _own_v2_cgroup()
        if base is None:
            pytest.skip("no cgroup v2 tree is mounted")
        self._base = base
        self.directory = base / path
        self._made: list[Path] = []
        self._pids: list[int] = []

    def __enter__(self) -> UnitCgroup:
        directory = self._base
        for part in self.directory.relative_to(self._base).parts:
            directory = directory / part
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                self.__exit__()
                pytest.skip(f"cannot make unit cgroups (root and a writable cgroup v2 tree needed): {err}")
            self._made.append(directory)
        return self

    def add(self, pid: int) -> None:
        (self.directory / "cgroup.procs").write_text(str(pid))
        self._pids.append(pid)

    def __exit__(self, *exc: object) -> None:
        for pid in self._pids:
            with contextlib.suppress(OSError):
                (self._base / "cgroup.procs").write_text(str(pid))
        for directory in reversed(self._made):
            with contextlib.suppress(OSError):
                directory.rmdir()
        self._made.clear()

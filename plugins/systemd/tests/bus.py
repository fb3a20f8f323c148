"""A real ``dbus-daemon`` on a private socket, and the systemd stand-in on it.

``SystemBus`` runs Debian's ``dbus-daemon`` with a system-bus-like policy (only root may own
``org.freedesktop.systemd1``); ``FakeSystemd`` runs ``fake_systemd.py`` on it. The tests put
real processes in a unit's cgroup (``system.slice/web.service``) with
:class:`tests.support.cgroups.Cgroup`, in the cgroup v2 tree where systemd would have them
and where the stand-in looks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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

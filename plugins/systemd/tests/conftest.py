"""A system bus with the systemd stand-in on it, named in DBUS_SYSTEM_BUS_ADDRESS for the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.systemd.tests.bus import FakeSystemd, SystemBus


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SystemBus]:
    running = SystemBus(tmp_path / "bus").start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", running.address)
    yield running
    running.stop()


@pytest.fixture
def systemd(bus: SystemBus, tmp_path: Path) -> Iterator[FakeSystemd]:
    running = FakeSystemd(bus, tmp_path / "units").start()
    yield running
    running.stop()

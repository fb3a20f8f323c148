"""WorkloadAttestor "systemd" under the WorkloadAttestor contract, over a real dbus-daemon."""

from __future__ import annotations

import pytest
from pyspire.plugin.testing import WorkloadAttestorContract


@pytest.mark.usefixtures("systemd")
class TestSystemdContract(WorkloadAttestorContract):
    plugin = "systemd"

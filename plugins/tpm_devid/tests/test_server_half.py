"""A server attesting with tpm_devid imports no TPM library: a real pyspire-server's ``sys.modules``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin.test_lazy_imports import imported_modules, server_config


@pytest.mark.slow
def test_a_server_with_tpm_devid_imports_neither_the_agent_half_nor_tpm2_pytss(tmp_path: Path, ca_files: Path) -> None:
    plugin_data = (
        f'devid_ca_path = "{ca_files / "devid-ca.pem"}" endorsement_ca_path = "{ca_files / "endorsement-ca.pem"}"'
    )
    modules = imported_modules("server", tmp_path, server_config(tmp_path, "tpm_devid", plugin_data), plugins=3)
    assert "pyspire_tpm_devid.server" in modules  # the observation works: the server half was imported
    assert "pyspire_tpm_devid.agent" not in modules
    assert "pyspire_tpm_devid.tpm" not in modules
    assert not [name for name in modules if name.split(".")[0] == "tpm2_pytss"]

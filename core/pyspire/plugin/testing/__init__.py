"""The plugin test kit: load a plugin like a daemon does, and contract suites per type.

An integrator tests a new plugin in a few lines::

    from pyspire.plugin.testing import KeyManagerContract

    class TestVaultKeyManager(PersistentKeyManagerContract):
        plugin = "vault_transit"

        @pytest.fixture
        def plugin_data(self, vault):
            return {"vault_addr": vault.url, ...}

The suites load the plugin through its entry point (or ``plugin_class`` for one not yet
installed), exactly as the daemons do. This package is also registered as a pytest plugin,
so ``service_unavailable`` and the fixtures below need no conftest.
"""

from pyspire.plugin.testing.key_manager_contract import (
    KeyManagerContract,
    PersistentKeyManagerContract,
)
from pyspire.plugin.testing.loading import (
    TEST_TRUST_DOMAIN,
    PluginDeclaration,
    load_plugin,
    make_core_config,
)
from pyspire.plugin.testing.pytest_plugin import service_unavailable
from pyspire.plugin.testing.workload_attestor_contract import WorkloadAttestorContract

__all__ = [
    "TEST_TRUST_DOMAIN",
    "KeyManagerContract",
    "PersistentKeyManagerContract",
    "PluginDeclaration",
    "WorkloadAttestorContract",
    "load_plugin",
    "make_core_config",
    "service_unavailable",
]

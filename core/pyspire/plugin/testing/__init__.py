"""The plugin test kit: load a plugin like a daemon does, and a contract suite per type.

An integrator tests a new plugin in a few lines; the suite brings the tests::

    from pyspire.plugin.testing import NodeAttestorContract

    class TestAcme(NodeAttestorContract):
        plugin = "acme"
        challenge_response = True

        @pytest.fixture
        def server_plugin_data(self, tmp_path):
            return {"ca_bundle_path": ...}

Every suite loads the plugin through its entry point (or ``plugin_class`` for one not yet
installed), exactly as the daemons do, and checks what the daemons rely on from a plugin of
that type, errors included: a deliberate :class:`~pyspire.plugin.PluginError` saying what is
wrong, prefixed with the plugin once by the core. This package is also registered as a
pytest plugin, so ``service_unavailable`` and the suites' fixtures need no conftest.

=========================  ====================================================
type                       suite
=========================  ====================================================
NodeAttestor (both halves)  :class:`NodeAttestorContract`
WorkloadAttestor           :class:`WorkloadAttestorContract`
KeyManager                 :class:`KeyManagerContract`, :class:`PersistentKeyManagerContract`
DataStore                  :class:`DataStoreContract`
UpstreamAuthority          :class:`UpstreamAuthorityContract`
Notifier                   :class:`NotifierContract`
BundlePublisher            :class:`BundlePublisherContract`
SVIDStore                  :class:`SvidStoreContract`
CredentialComposer         :class:`CredentialComposerContract`
=========================  ====================================================
"""

from pyspire.plugin.testing.base import PluginContract, assert_deliberate
from pyspire.plugin.testing.bundle_delivery_contract import BundlePublisherContract, NotifierContract
from pyspire.plugin.testing.credential_composer_contract import CredentialComposerContract
from pyspire.plugin.testing.datastore_contract import DataStoreContract
from pyspire.plugin.testing.key_manager_contract import (
    KeyManagerContract,
    PersistentKeyManagerContract,
)
from pyspire.plugin.testing.loading import (
    TEST_TRUST_DOMAIN,
    PluginDeclaration,
    load_plugin,
    make_core_config,
    validate_plugin,
)
from pyspire.plugin.testing.node_attestor_contract import Exchange, NodeAttestorContract
from pyspire.plugin.testing.pki import TestCa, make_bundle, make_csr
from pyspire.plugin.testing.pytest_plugin import service_unavailable
from pyspire.plugin.testing.svid_store_contract import SvidStoreContract
from pyspire.plugin.testing.upstream_authority_contract import UpstreamAuthorityContract
from pyspire.plugin.testing.workload_attestor_contract import WorkloadAttestorContract

__all__ = [
    "TEST_TRUST_DOMAIN",
    "BundlePublisherContract",
    "CredentialComposerContract",
    "DataStoreContract",
    "Exchange",
    "KeyManagerContract",
    "NodeAttestorContract",
    "NotifierContract",
    "PersistentKeyManagerContract",
    "PluginContract",
    "PluginDeclaration",
    "SvidStoreContract",
    "TestCa",
    "UpstreamAuthorityContract",
    "WorkloadAttestorContract",
    "assert_deliberate",
    "load_plugin",
    "make_bundle",
    "make_core_config",
    "make_csr",
    "service_unavailable",
    "validate_plugin",
]

"""gcp_secretmanager under the SVIDStore contract, through Google's client against the fake Secret Manager."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest
from pyspire.plugin.testing import SvidStoreContract
from pyspire.spiffe import Bundle, TrustDomain, X509Svid

from plugins.gcp_secretmanager.tests.stored import secret_name
from tests.support.gcp_secret_manager import FakeSecretManager
from tests.support.svid_stores import bundles_of, svid_of


class TestGcpSecretManagerContract(SvidStoreContract):
    plugin = "gcp_secretmanager"
    metadata: ClassVar[Sequence[str]] = ("name:db-svid", "projectid:test-project")
    other_metadata: ClassVar[Sequence[str]] = ("name:cache-svid", "projectid:test-project")
    unusable_metadata: ClassVar[Sequence[str]] = ("projectid:test-project",)

    @pytest.fixture
    def plugin_data(self, gsm_plugin_data: dict[str, Any], secret_manager: FakeSecretManager) -> Mapping[str, Any]:
        self._fake = secret_manager  # read back from what the fake stores
        return gsm_plugin_data

    def _document(self, metadata: Sequence[str]) -> dict[str, Any] | None:
        name = next(item.split(":", 1)[1] for item in metadata if item.startswith("name:"))
        payload = self._fake.latest_payload(secret_name(name))
        return None if payload is None else json.loads(payload)

    def stored_svid(self, plugin_data: Mapping[str, Any], metadata: Sequence[str]) -> X509Svid | None:
        document = self._document(metadata)
        return None if document is None else svid_of(document)

    def stored_bundles(self, plugin_data: Mapping[str, Any], metadata: Sequence[str]) -> Mapping[TrustDomain, Bundle]:
        document = self._document(metadata)
        assert document is not None
        return bundles_of(document)

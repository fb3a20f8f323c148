"""aws_secretsmanager under the SVIDStore contract, through boto3 against moto's Secrets Manager."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest
from pyspire.plugin.testing import SvidStoreContract
from pyspire.spiffe import Bundle, TrustDomain, X509Svid

from plugins.aws_secretsmanager.tests.stored import REGION, stored_document
from tests.support.moto import MotoServer
from tests.support.svid_stores import bundles_of, svid_of


def _secret_name(metadata: Sequence[str]) -> str:
    return next(item.split(":", 1)[1] for item in metadata if item.startswith("secretname:"))


class TestAwsSecretsManagerContract(SvidStoreContract):
    plugin = "aws_secretsmanager"
    metadata: ClassVar[Sequence[str]] = ("secretname:db-svid",)
    other_metadata: ClassVar[Sequence[str]] = ("secretname:cache-svid",)
    unusable_metadata: ClassVar[Sequence[str]] = ("kmskeyid:alias/svids",)

    @pytest.fixture
    def plugin_data(self, aws: MotoServer) -> Mapping[str, Any]:
        return {"region": REGION}

    def stored_svid(self, plugin_data: Mapping[str, Any], metadata: Sequence[str]) -> X509Svid | None:
        document = stored_document(_secret_name(metadata))
        return None if document is None else svid_of(document)

    def stored_bundles(self, plugin_data: Mapping[str, Any], metadata: Sequence[str]) -> Mapping[TrustDomain, Bundle]:
        document = stored_document(_secret_name(metadata))
        assert document is not None
        return bundles_of(document)

"""aws_iid under the NodeAttestor contract: the agent half against an IMDS on loopback, the server half against moto."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import NodeAttestorContract

from plugins.aws_iid.tests.fakes import (
    ImdsServer,
    Instance,
    RegionSigner,
    identity_document,
    launch_instance,
)
from tests.support.moto import ACCOUNT, MotoServer


class TestAwsIidContract(NodeAttestorContract):
    plugin = "aws_iid"

    @pytest.fixture
    def instance(self, aws: MotoServer, imds: ImdsServer, us_west_2: RegionSigner) -> Instance:
        launched = launch_instance({"role": "frontend"})
        imds.document = identity_document(launched.instance_id)
        imds.rsa2048 = us_west_2.sign(imds.document)
        return launched

    @pytest.fixture
    def server_plugin_data(self, instance: Instance, tmp_path: Path, us_west_2: RegionSigner) -> Mapping[str, Any]:
        return {"region_certificates": {"us-west-2": str(us_west_2.write(tmp_path))}}

    @pytest.fixture
    def agent_plugin_data(self, instance: Instance, imds: ImdsServer) -> Mapping[str, Any]:
        return {"ec2_metadata_endpoint": imds.endpoint}

    @pytest.fixture
    def expected_agent_path(self, instance: Instance) -> str:
        return f"/aws_iid/{ACCOUNT}/us-west-2/{instance.instance_id}"

    @pytest.fixture
    def expected_selectors(self, instance: Instance) -> set[str]:
        return {"tag:role:frontend", "region:us-west-2", f"instance:id:{instance.instance_id}"}

"""Every server API method has an authorization policy, and the sensitive ones are not open."""

from __future__ import annotations

import pytest
from pyspire.proto.spire.api.server.agent.v1 import agent_pb2
from pyspire.proto.spire.api.server.bundle.v1 import bundle_pb2
from pyspire.proto.spire.api.server.debug.v1 import debug_pb2
from pyspire.proto.spire.api.server.entry.v1 import entry_pb2
from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_pb2
from pyspire.proto.spire.api.server.logger.v1 import logger_pb2
from pyspire.proto.spire.api.server.svid.v1 import svid_pb2
from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_pb2
from pyspire.server.api.auth import POLICY

MODULES = (agent_pb2, bundle_pb2, debug_pb2, entry_pb2, localauthority_pb2, logger_pb2, svid_pb2, trustdomain_pb2)
METHODS = sorted(
    f"/{service.full_name}/{method.name}"
    for module in MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    # The WIT methods are unknown methods, as in the SPIRE pyspire follows (pyspire.server.api.unserved).
    if "WIT" not in method.name
)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_has_a_policy(method: str) -> None:
    assert method in POLICY, f"{method} has no authorization policy: it would be refused (fail closed)"


def test_no_policy_names_a_method_that_does_not_exist() -> None:
    assert set(POLICY) <= set(METHODS)


@pytest.mark.parametrize(
    "method",
    [
        "/spire.api.server.agent.v1.Agent/AttestAgent",
        "/spire.api.server.bundle.v1.Bundle/GetBundle",
    ],
)
def test_only_attestation_and_the_bundle_are_open_to_anyone(method: str) -> None:
    assert POLICY[method].any


def test_administration_is_never_open_to_agents_or_anyone() -> None:
    for method, policy in POLICY.items():
        if any(
            verb in method for verb in ("BatchCreate", "BatchDelete", "BatchUpdate", "BanAgent", "DeleteAgent", "Mint")
        ):
            assert not policy.any, method
            assert not policy.agent, method

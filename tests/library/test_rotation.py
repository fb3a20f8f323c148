"""Mutual TLS between two workloads of a real pyspire-agent through SVID rotations, an agent restart and a CA rotation.

The scenario and its checks are in tests/support/mtls_rotation.py (the spire-agent variant
reuses them); here it runs against pyspire's own server and agent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.identities import start_deployment
from tests.support.mtls_rotation import run_through_everything_that_rotates


@pytest.mark.slow
def test_mtls_through_svid_rotations_an_agent_restart_and_a_ca_rotation(tmp_path: Path) -> None:
    deployment = start_deployment(tmp_path, "-x509SVIDTTL", "16")
    try:
        run_through_everything_that_rotates(deployment)
    finally:
        deployment.agent.stop()
        deployment.server.stop()

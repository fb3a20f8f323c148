"""The contract suites catch broken plugins: each is run (by pytest, in a subprocess) on plugins
that break one promise each, and must fail exactly the tests about that promise.

The plugins are the starter's (rendered, not installed, loaded through ``plugin_class``) with
one hook spoiled. A suite that passed them would pass anything.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyspire.plugin.starter import render_starter

REPO = Path(__file__).resolve().parents[2]

BREAKERS = '''
import json
import os
from datetime import timedelta

from cryptography import x509
from pyspire.plugin import AttestationResult, NotFound, hookimpl
from pyspire.plugin.testing import (
    BundlePublisherContract,
    CredentialComposerContract,
    KeyManagerContract,
    NodeAttestorContract,
    NotifierContract,
    SvidStoreContract,
    UpstreamAuthorityContract,
    WorkloadAttestorContract,
)

from pyspire_bn.agent import BnAgentAttestor
from pyspire_bn.server import BnServerAttestor
from pyspire_bw.agent import BwWorkloadAttestor
from pyspire_bk.server import BkKeyManager
from pyspire_bu.server import BuUpstreamAuthority
from pyspire_bo.server import BoNotifier
from pyspire_bp.server import BpBundlePublisher
from pyspire_bs.agent import BsSvidStore
from pyspire_bc.server import BcCredentialComposer
import pytest
import test_bn
import test_bo
import test_bp
import test_bs
import test_bu


class Gullible(BnServerAttestor):
    """Parses without checking, ignores the answer, prefixes its own name."""

    @hookimpl
    def attest_node(self, payload, challenge):
        node = json.loads(payload)["node"]
        challenge(os.urandom(32))
        return AttestationResult(f"/gullible/{node}", (f"gullible:node:{node}",), True)


class TestGullible(test_bn.TestBnContract):
    plugin = "gullible"
    server_plugin_class = Gullible
    agent_plugin_class = BnAgentAttestor

    @pytest.fixture
    def expected_agent_path(self):
        return None


class Optimistic(BwWorkloadAttestor):
    """Answers nothing rather than raise when the process is gone."""

    @hookimpl
    def attest_workload(self, pid):
        try:
            return super().attest_workload(pid)
        except NotFound:
            return []


class TestOptimistic(WorkloadAttestorContract):
    plugin = "optimistic"
    plugin_class = Optimistic


class OneHash(BkKeyManager):
    """Signs with SHA-256 whatever it is asked for."""

    @hookimpl
    def sign_data(self, key_id, data, hash_algorithm, rsa_pss):
        from pyspire.plugin import HashAlgorithm
        return super().sign_data(key_id, data, HashAlgorithm.SHA256, rsa_pss)


class TestOneHash(KeyManagerContract):
    plugin = "onehash"
    plugin_class = OneHash


class Generous(BuUpstreamAuthority):
    """Ignores the TTL asked for: ten years."""

    @hookimpl
    def mint_x509_ca(self, csr, preferred_ttl):
        return super().mint_x509_ca(csr, timedelta(days=3650))


class TestGenerous(test_bu.TestBuContract):
    plugin = "generous"
    plugin_class = Generous


class Quiet(BoNotifier):
    """Swallows every failure."""

    @hookimpl
    def notify_bundle_updated(self, bundle):
        try:
            super().notify_bundle_updated(bundle)
        except Exception:
            pass


class TestQuiet(test_bo.TestBoContract):
    plugin = "quiet"
    plugin_class = Quiet


class Stale(BpBundlePublisher):
    """Publishes the first bundle and never again."""

    @hookimpl
    def publish_bundle(self, bundle):
        if not self._config.bundle_path.exists():
            super().publish_bundle(bundle)


class TestStale(test_bp.TestBpContract):
    plugin = "stale"
    plugin_class = Stale


class Fussy(BsSvidStore):
    """Deleting what is not there is an error."""

    @hookimpl
    def delete_x509_svid(self, metadata):
        if not self._folder(metadata).exists():
            raise NotFound("nothing there")
        super().delete_x509_svid(metadata)


class TestFussy(test_bs.TestBsContract):
    plugin = "fussy"
    plugin_class = Fussy


class Careless(BsSvidStore):
    """Has no validate hook, so the validate commands configure it: that creates the store."""

    def validate(self, plugin_data):  # a plain method now, no longer a hook
        super().validate(plugin_data)


class TestCareless(test_bs.TestBsContract):
    plugin = "careless"
    plugin_class = Careless


class Usurper(BcCredentialComposer):
    """Changes the subject claim and adds a SPIFFE ID of its own."""

    @hookimpl
    def compose_workload_jwt_svid(self, spiffe_id, claims):
        return {**claims, "sub": "spiffe://example.org/admin"}

    @hookimpl
    def compose_workload_x509_svid(self, spiffe_id, subject, extensions):
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/admin")])
        return subject, (*extensions, x509.Extension(san.oid, False, san))


class TestUsurper(CredentialComposerContract):
    plugin = "usurper"
    plugin_class = Usurper
'''

STARTERS = {
    "bn": ("server", "NodeAttestor"),
    "bw": ("agent", "WorkloadAttestor"),
    "bk": ("server", "KeyManager"),
    "bu": ("server", "UpstreamAuthority"),
    "bo": ("server", "Notifier"),
    "bp": ("server", "BundlePublisher"),
    "bs": ("agent", "SVIDStore"),
    "bc": ("server", "CredentialComposer"),
}

EXPECTED_FAILURES = {
    "TestGullible": {
        "test_agent_evidence_attests_a_node",
        "test_replayed_evidence_cannot_attest_again",
        "test_wrong_answers_to_challenges_are_refused",
        "test_malformed_evidence_is_refused[empty]",
        "test_malformed_evidence_is_refused[garbage]",
        "test_malformed_evidence_is_refused[truncated]",
        "test_malformed_evidence_is_refused[flipped]",
        "test_malformed_evidence_is_refused[trailing]",
        "test_malformed_evidence_is_refused[oversized]",
    },
    "TestOptimistic": {"test_vanished_process_is_an_error_not_zero_selectors"},
    "TestOneHash": {"test_generated_keys_sign_verifiably"},
    "TestGenerous": {"test_the_ttl_asked_for_is_not_exceeded"},
    "TestQuiet": {
        "test_an_unreachable_destination_is_a_deliberate_error",
        "test_an_unreachable_destination_at_start_is_a_deliberate_error",
    },
    "TestStale": {"test_a_newer_bundle_replaces_the_delivered_one"},
    "TestFussy": {"test_deleting_what_is_not_stored_is_not_an_error"},
    "TestCareless": {"test_validate_leaves_the_disk_as_it_was"},
    "TestUsurper": {
        "test_composed_x509_svid_leaves_the_servers_parts_alone",
        "test_composed_x509_svid_still_signs_into_a_valid_svid",
        "test_composed_jwt_claims_keep_the_servers_claims",
    },
}


@pytest.mark.slow
def test_each_suite_fails_the_plugin_that_breaks_its_contract(tmp_path: Path) -> None:
    for name, (role, type_name) in STARTERS.items():
        for relative, text in render_starter(role, type_name, name).items():
            if relative.startswith(f"pyspire_{name}/") or relative.startswith("tests/"):
                target = tmp_path / relative.removeprefix("tests/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    (tmp_path / "test_breakers.py").write_text(BREAKERS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "test_breakers.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
    )
    outcomes: dict[str, dict[str, str]] = {}
    for outcome, class_name, test in re.findall(
        r"^(PASSED|FAILED|ERROR) test_breakers\.py::(\w+)::(\S+)", result.stdout, re.M
    ):
        outcomes.setdefault(class_name, {})[test] = outcome
    assert set(outcomes) == set(EXPECTED_FAILURES), result.stdout[-4000:]
    for class_name, expected in EXPECTED_FAILURES.items():
        failed = {test for test, outcome in outcomes[class_name].items() if outcome != "PASSED"}
        assert failed == expected, f"{class_name}: failed {sorted(failed)}, expected {sorted(expected)}"
        assert len(outcomes[class_name]) > len(expected), f"{class_name}: every test failed"

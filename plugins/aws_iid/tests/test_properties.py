"""Property tests over the aws_iid payload decoder: only plugin errors, never another exception.

Payloads are noise, JSON of any shape, genuine signatures over other documents, and documents
of any content signed by the test's region certificate: what is read from a verified document
must be checked as carefully as what is not.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspire.plugin.errors import PluginError
from pyspire_aws_iid.document import RegionCertificates, verify_payload

from plugins.aws_iid.tests.fakes import RegionSigner, identity_document, payload

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
document_keys = ["accountId", "region", "instanceId", "availabilityZone", "imageId", "privateIp", "pendingTime"]
documents = st.one_of(
    st.fixed_dictionaries({}, optional={key: values for key in document_keys}).map(json.dumps),
    values.map(json.dumps),
    st.text(max_size=40),
)


@pytest.fixture(scope="module")
def signer() -> RegionSigner:
    return RegionSigner("us-west-2")


@pytest.fixture(scope="module")
def certificates(signer: RegionSigner, tmp_path_factory: pytest.TempPathFactory) -> RegionCertificates:
    return RegionCertificates({signer.region: str(signer.write(tmp_path_factory.mktemp("aws")))})


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=80),
        values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({}, optional={"document": values, "signature": values, "rsa2048": values}).map(
            lambda d: json.dumps(d).encode()
        ),
    )
)
def test_unsigned_payloads_raise_only_plugin_errors(certificates: RegionCertificates, data: bytes) -> None:
    with contextlib.suppress(PluginError):
        verify_payload(data, certificates)


@SETTINGS
@given(document=documents, swap=st.booleans())
def test_signed_documents_of_any_content_raise_only_plugin_errors(
    signer: RegionSigner, certificates: RegionCertificates, document: str, swap: bool
) -> None:
    signature = signer.sign(document)
    # ``swap``: the signature of one document presented with another.
    presented = identity_document("i-0123456789abcdef0") if swap else document
    with contextlib.suppress(PluginError):
        identity = verify_payload(payload(presented, signature), certificates)
        assert not swap
        assert json.loads(document)["instanceId"] == identity.instance_id

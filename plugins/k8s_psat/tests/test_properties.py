"""Property tests over k8s_psat attestation: only plugin errors, never another exception.

Payloads are noise and JSON of any shape; tokens are ones the fake API server vouches for,
bound to pods of any name and UID (what the API answers is read as carefully as what the
agent sends: a pod name must never steer the plugin to another API path).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import ServerNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.k8s_psat.tests.fakes import FakeNode, FakePod, KubeApiServer, ServiceAccountToken

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
names = st.one_of(
    st.sampled_from(["", "spire-agent-v5wgr", "..", "../nodes/node-1", "a/b", "%2F", "x?y=1", "a#b", " "]),
    st.text(max_size=20),
)


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    server = KubeApiServer().start(tmp_path_factory.mktemp("kube"))
    server.add_pod(FakePod(), FakeNode())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def attestor(kube: KubeApiServer, tmp_path_factory: pytest.TempPathFactory) -> ServerNodeAttestor:
    directory = tmp_path_factory.mktemp("psat")
    settings_ = {
        "service_account_allow_list": ["spire:spire-agent"],
        "kube_config_file": str(kube.kubeconfig(directory)),
    }
    handle = load_plugin(
        "server", "NodeAttestor", "k8s_psat", {"clusters": {"prod": settings_}}, make_core_config(directory)
    )
    assert isinstance(handle, ServerNodeAttestor)
    return handle


def no_challenge(data: bytes) -> bytes:
    raise AssertionError("k8s_psat never challenges")


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=60),
        values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({}, optional={"cluster": st.one_of(st.just("prod"), values), "token": values}).map(
            lambda d: json.dumps(d).encode()
        ),
    )
)
def test_payloads_raise_only_plugin_errors(attestor: ServerNodeAttestor, payload: bytes) -> None:
    with contextlib.suppress(PluginError):
        attestor.instance.attest_node(payload, no_challenge)  # type: ignore[attr-defined]


@SETTINGS
@given(pod_name=names, pod_uid=names)
def test_tokens_bound_to_any_pod_raise_only_plugin_errors(
    kube: KubeApiServer, attestor: ServerNodeAttestor, pod_name: str, pod_uid: str
) -> None:
    token = f"eyJfuzz{len(kube.tokens)}"
    kube.tokens[token] = ServiceAccountToken("spire", "spire-agent", pod_name, pod_uid)
    genuine = FakePod()
    with contextlib.suppress(PluginError):
        result = attestor.instance.attest_node(  # type: ignore[attr-defined]
            json.dumps({"cluster": "prod", "token": token}).encode(), no_challenge
        )
        assert (pod_name, pod_uid) == (genuine.name, genuine.uid), result

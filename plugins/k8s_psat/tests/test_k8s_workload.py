"""WorkloadAttestor "k8s": real processes in pod cgroups, a kubelet fake that speaks its API."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import NotFound, PermissionDenied, Unavailable
from pyspire.plugin.facades import WorkloadAttestor
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.spiffe.workloadapi import WorkloadApiError
from pyspire_k8s_psat.workload import pod_and_container

from plugins.k8s_psat.tests.kubelet import Container, Kubelet, Pod, PodCgroup, container_id
from tests.support.daemons import start_agent, start_server
from tests.support.workloads import fetched_spiffe_id

POD_UID = "2c48913c-b29f-11e7-9350-020968147796"
CID = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        (f"12:pids:/kubepods/burstable/pod{POD_UID}/{CID}\n", (POD_UID, CID)),
        (
            f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice/"
            f"cri-containerd-{CID}.scope\n",
            (POD_UID, CID),
        ),
        (
            f"1:name=systemd:/kubepods-besteffort-pod{POD_UID.replace('-', '_')}.slice:cri-containerd:{CID}\n",
            (POD_UID, CID),
        ),
        (f"0::/kubepods.slice/kubepods-pod{POD_UID.replace('-', '_')}.slice/crio-{CID}.scope\n", (POD_UID, CID)),
        (f"4:memory:/docker/{'1' * 64}/kubepods/besteffort/pod{POD_UID}/{CID}\n", (POD_UID, CID)),
        ("0::/user.slice/user-1000.slice/session-2.scope\n4:memory:/process_api/1451d0f1\n", (None, None)),
        (f"4:memory:/docker/{CID}\n", (None, None)),  # a container, but not a pod's
    ],
)
def test_pod_and_container_are_read_from_every_cgroup_layout(cgroup: str, expected: tuple[str, str]) -> None:
    assert pod_and_container(cgroup) == expected


def load(tmp_path: Path, data: dict[str, object]) -> WorkloadAttestor:
    handle = load_plugin("agent", "WorkloadAttestor", "k8s", data, make_core_config(tmp_path / "d"))
    assert isinstance(handle, WorkloadAttestor)
    return handle


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[Kubelet]:
    server = Kubelet().start(tmp_path)
    yield server
    server.stop()


def _secure(kubelet: Kubelet, tmp_path: Path, **extra: object) -> dict[str, object]:
    token = tmp_path / "token"
    token.write_text(kubelet.token + "\n")
    return {
        "kubelet_secure_port": kubelet.port,
        "kubelet_ca_path": str(kubelet.ca_path),
        "token_path": str(token),
        "max_poll_attempts": 2,
        "poll_retry_interval": "20ms",
        **extra,
    }


@pytest.fixture
def workload() -> Iterator[tuple[int, Pod, PodCgroup]]:
    """A real process in the cgroup of container "app" of a pod."""
    container = Container("app", container_id())
    pod = Pod(uid=str(uuid.uuid4()), containers=[container, Container("sidecar", container_id(), image="envoy:1.30")])
    process = subprocess.Popen(["sleep", "60"])
    try:
        with PodCgroup(pod.uid, container.container_id) as cgroup:
            cgroup.add(process.pid)
            yield process.pid, pod, cgroup
    finally:
        process.kill()
        process.wait()


def test_a_process_in_a_pod_gets_its_pod_and_container_selectors(
    kubelet: Kubelet, workload: tuple[int, Pod, PodCgroup], tmp_path: Path
) -> None:
    pid, pod, _ = workload
    kubelet.pods = [Pod(uid=str(uuid.uuid4()), name="other", containers=[Container("x", container_id())]), pod]
    selectors = {str(s) for s in load(tmp_path, _secure(kubelet, tmp_path)).attest(pid)}
    assert selectors == {
        "k8s:sa:web",
        "k8s:ns:prod",
        "k8s:node-name:node-1",
        f"k8s:pod-uid:{pod.uid}",
        "k8s:pod-name:web-7d4b9c-x2x9q",
        "k8s:pod-image-count:2",
        "k8s:pod-init-image-count:0",
        "k8s:pod-image:docker.io/library/web:1.4",
        "k8s:pod-image:docker.io/library/web@sha256:" + "ab" * 32,
        "k8s:pod-image:envoy:1.30",
        "k8s:pod-label:app:web",
        "k8s:pod-label:tier:front",
        "k8s:pod-owner:ReplicaSet:web-7d4b9c",
        "k8s:pod-owner-uid:ReplicaSet:rs-1",
        "k8s:container-name:app",
        "k8s:container-image:docker.io/library/web:1.4",
        "k8s:container-image:docker.io/library/web@sha256:" + "ab" * 32,
    }
    no_container = {
        str(s) for s in load(tmp_path, _secure(kubelet, tmp_path, disable_container_selectors=True)).attest(pid)
    }
    assert no_container == selectors - {s for s in selectors if s.startswith("k8s:container-")}


def test_a_burst_of_callers_costs_the_kubelet_one_request(
    kubelet: Kubelet, workload: tuple[int, Pod, PodCgroup], tmp_path: Path
) -> None:
    pid, pod, _ = workload
    kubelet.pods = [pod]
    attestor = load(tmp_path, _secure(kubelet, tmp_path, poll_retry_interval="5s"))
    results: list[set[str]] = []

    def call() -> None:
        results.append({str(s) for s in attestor.attest(pid)})

    callers = [threading.Thread(target=call) for _ in range(20)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(results) == 20
    assert all("k8s:container-name:app" in found for found in results)
    assert kubelet.requests == 1


def test_a_process_outside_any_pod_has_no_k8s_selectors(kubelet: Kubelet, tmp_path: Path) -> None:
    assert load(tmp_path, _secure(kubelet, tmp_path)).attest(os.getpid()) == ()
    assert kubelet.requests == 0


def test_a_container_the_kubelet_lists_late_is_found_on_a_later_poll(
    kubelet: Kubelet, workload: tuple[int, Pod, PodCgroup], tmp_path: Path
) -> None:
    pid, pod, _ = workload
    kubelet.pods = [Pod(uid=pod.uid, containers=[])]  # the pod is listed, its container not yet

    def report_container() -> None:
        while kubelet.requests < 2:
            time.sleep(0.01)
        kubelet.pods = [pod]

    attestor = load(tmp_path, _secure(kubelet, tmp_path, max_poll_attempts=50, poll_retry_interval="50ms"))
    reporter = threading.Thread(target=report_container)
    reporter.start()
    selectors = {str(s) for s in attestor.attest(pid)}
    reporter.join()
    assert "k8s:container-name:app" in selectors
    assert kubelet.requests >= 3


def test_a_pod_the_kubelet_never_lists_is_refused_after_the_last_poll(
    kubelet: Kubelet, workload: tuple[int, Pod, PodCgroup], tmp_path: Path
) -> None:
    pid, pod, _ = workload
    with pytest.raises(NotFound, match=f"pod {pod.uid} .* did not list after 2 attempts"):
        load(tmp_path, _secure(kubelet, tmp_path)).attest(pid)
    assert kubelet.requests == 2


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # urllib3 says so; the test asks for it
def test_kubelet_authentication_and_verification(
    kubelet: Kubelet, workload: tuple[int, Pod, PodCgroup], tmp_path: Path
) -> None:
    pid, pod, _ = workload
    kubelet.pods = [pod]
    assert kubelet.client_cert is not None
    cert, key = kubelet.client_cert
    by_certificate = load(
        tmp_path,
        _secure(kubelet, tmp_path, token_path="/nonexistent", certificate_path=str(cert), private_key_path=str(key)),
    )
    assert "k8s:ns:prod" in {str(s) for s in by_certificate.attest(pid)}

    (tmp_path / "wrong").write_text("not-the-token")
    with pytest.raises(PermissionDenied, match="refused the agent \\(401\\)"):
        load(tmp_path, _secure(kubelet, tmp_path, token_path=str(tmp_path / "wrong"))).attest(pid)
    with pytest.raises(PermissionDenied):
        load(tmp_path, _secure(kubelet, tmp_path, use_anonymous_authentication=True)).attest(pid)

    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(Path(str(cert)).read_bytes())  # a certificate that did not sign the kubelet's
    with pytest.raises(Unavailable, match="cannot reach the kubelet"):
        load(tmp_path, _secure(kubelet, tmp_path, kubelet_ca_path=str(other_ca))).attest(pid)
    skipping = load(
        tmp_path, _secure(kubelet, tmp_path, kubelet_ca_path="/nonexistent", skip_kubelet_verification=True)
    )
    assert "k8s:ns:prod" in {str(s) for s in skipping.attest(pid)}


def test_the_read_only_port_and_an_unreachable_kubelet(workload: tuple[int, Pod, PodCgroup], tmp_path: Path) -> None:
    pid, pod, _ = workload
    read_only = Kubelet(read_only=True, pods=[pod]).start(tmp_path)
    data = {"kubelet_read_only_port": read_only.port, "max_poll_attempts": 1, "poll_retry_interval": "100ms"}
    try:
        attestor = load(tmp_path, data)
        assert "k8s:sa:web" in {str(s) for s in attestor.attest(pid)}
    finally:
        read_only.stop()
    # A pod list younger than poll_retry_interval answers without asking the kubelet again
    # (the test failed about one run in three when the second call came that soon).
    time.sleep(0.2)
    with pytest.raises(Unavailable, match=f"cannot reach the kubelet at http://127.0.0.1:{read_only.port}/pods"):
        attestor.attest(pid)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kubelet_read_only_port": 10255, "kubelet_secure_port": 10250}, "cannot be set together"),
        ({"kubelet_read_only_port": 10255, "certificate_path": "/c"}, "private_key_path must be set together"),
        ({"skip_kubelet_verification": True, "enable_namespace_labels": True}, "does not offer"),
        ({"skip_kubelet_verification": True, "sigstore": {"rekor_url": "x"}}, "does not offer"),
        ({"kubelet_ca_path": "/nonexistent/ca.crt"}, "kubelet_ca_path.*cannot read /nonexistent/ca.crt"),
        ({"kubelet_read_only_port": 10255, "max_poll_attempts": 0}, "at least 1"),
        ({"kubelet_read_only_port": 10255, "poll_retry_interval": "soon"}, "poll_retry_interval"),
    ],
)
def test_configuration_errors_name_the_key(tmp_path: Path, data: dict[str, object], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        load(tmp_path, data)


_FETCH = """
import asyncio, sys
from pyspire.spiffe.workloadapi import WorkloadApiClient
sys.stdin.readline()  # wait until the test has put this process in its pod's cgroup
from pyspire.spiffe.workloadapi import WorkloadApiError
async def main():
    for _ in range(100):  # until the agent has synced the entry just made
        try:
            async with WorkloadApiClient(sys.argv[1], timeout=10) as client:
                context = await asyncio.wait_for(client.fetch_x509_context(), 30)
            print(context.default_svid.spiffe_id)
            return
        except WorkloadApiError as err:
            last = err
            await asyncio.sleep(0.3)
    print(last)
asyncio.run(main())
"""


def test_an_agent_issues_by_namespace_and_service_account(kubelet: Kubelet, tmp_path: Path) -> None:
    container = Container("app", container_id())
    pod = Pod(uid=str(uuid.uuid4()), containers=[container])
    kubelet.pods = [pod]
    token = tmp_path / "token"
    token.write_text(kubelet.token)
    server = start_server(tmp_path / "server")
    agent = None
    try:
        alias = f"spiffe://example.org/node/{uuid.uuid4()}"
        attestor = (
            f'WorkloadAttestor "k8s" {{\n plugin_data {{\n  kubelet_secure_port = {kubelet.port}\n'
            f'  kubelet_ca_path = "{kubelet.ca_path}"\n  token_path = "{token}"\n }}\n }}'
        )
        agent = start_agent(
            tmp_path / "agent",
            server,
            server.join_token(alias),
            node_attestor=f'NodeAttestor "join_token" {{ plugin_data {{}} }}\n{attestor}',
        )
        server.cli(
            "entry",
            "create",
            "-parentID",
            alias,
            "-spiffeID",
            "spiffe://example.org/ns/prod/sa/web",
            "-selector",
            "k8s:ns:prod",
            "-selector",
            "k8s:sa:web",
        )
        workload = subprocess.Popen(
            [sys.executable, "-c", _FETCH, agent.address], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        with PodCgroup(pod.uid, container.container_id) as cgroup:
            cgroup.add(workload.pid)
            out, _ = workload.communicate("go\n", timeout=60)
        assert out.strip() == "spiffe://example.org/ns/prod/sa/web"
        with pytest.raises(WorkloadApiError, match="no identity issued"):  # this process is in no pod
            fetched_spiffe_id(agent, timeout=2)
    finally:
        if agent is not None:
            agent.stop()
        server.stop()

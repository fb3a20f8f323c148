"""WorkloadAttestor "docker": real processes in container-shaped cgroups, an Engine API on a Unix socket."""

from __future__ import annotations

import logging
import pwd
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyspire_docker.attestor
import pytest
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import FailedPrecondition, NotFound, Unavailable
from pyspire.plugin.facades import WorkloadAttestor

from plugins.docker.tests.engine import Container, Engine, container_id
from tests.support.cgroups import Cgroup
from tests.support.workload_attestors import loaded_attestors, spawned_processes


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    server = Engine(tmp_path / "docker.sock").start()
    yield server
    server.stop()


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPIRE's retry schedule (0.7 s in all) is kept by one test; the others wait 1000 times less."""
    monkeypatch.setattr(pyspire_docker.attestor, "INSPECT_BACKOFF", 0.0001)


@pytest.fixture
def spawn() -> Iterator[Any]:
    yield from spawned_processes()


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Any]:
    """Load the plugin with the given ``plugin_data``; every handle is closed after the test."""
    yield from loaded_attestors("docker", tmp_path / "d")


def selectors(handle: WorkloadAttestor, pid: int) -> set[str]:
    return {str(s) for s in handle.attest(pid)}


def expected(container: Container) -> set[str]:
    return {
        "docker:label:com.example.name:foo",
        "docker:label:com.example.tier:front",
        "docker:env:PATH=/usr/local/bin:/usr/bin:/bin",
        "docker:env:ENVIRONMENT=prod",
        f"docker:image_id:{container.image}",
        f"docker:image_config_digest:{container.image_id}",
    }


POD = "2c48913c-b29f-11e7-9350-020968147796"
NODE = "7de0743fe258949f28b16896994abecfdf97386a9262de370811d3e57e2233cb"  # the kind node's container (fixed: xdist workers must collect the same test IDs)


@pytest.mark.parametrize(
    ("layout", "hierarchies"),
    [
        ("docker/{id}", "all"),  # cgroupfs driver (v1, and v2 in hybrid mode)
        ("system.slice/docker-{id}.scope", "all"),  # systemd driver
        ("system.slice/docker-{id}.scope", "v2"),  # a cgroup v2 host
        ("docker/{id}/system.slice/containerd.service", "all"),  # Docker for Desktop, a kind node's own processes
        (f"docker/{NODE}/kubepods/besteffort/pod{POD}/{{id}}", "all"),  # a pod's container in a kind node
        (f"docker/{NODE}/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/cri-containerd-{{id}}.scope", "v2"),
    ],
)
def test_a_process_in_a_container_gets_the_containers_selectors(
    engine: Engine, spawn: Any, tmp_path: Path, layout: str, hierarchies: Any, load: Any
) -> None:
    container = engine.add(Container())
    engine.add(Container(labels={"com.example.name": "other"}))
    process = spawn()
    with Cgroup(layout.format(id=container.id), hierarchies) as cgroup:
        cgroup.add(process.pid)
        found = selectors(load(docker_socket_path=engine.url), process.pid)
    assert found == expected(container)
    assert engine.container_requests() == [f"/v1.47/containers/{container.id}/json"]


def test_a_process_outside_any_container_has_no_docker_selectors(
    engine: Engine, spawn: Any, tmp_path: Path, load: Any
) -> None:
    process = spawn()
    assert selectors(load(docker_socket_path=engine.url), process.pid) == set()
    assert engine.requests == []  # not even the version negotiation


def test_cgroups_naming_two_containers_fail_attestation(engine: Engine, spawn: Any, tmp_path: Path, load: Any) -> None:
    first, second = engine.add(Container()), engine.add(Container())
    process = spawn()
    with Cgroup(f"docker/{first.id}", "v1") as v1, Cgroup(f"docker/{second.id}", "v2") as v2:
        v1.add(process.pid)
        v2.add(process.pid)
        with pytest.raises(FailedPrecondition, match=f"multiple container IDs found \\('{first.id}', '{second.id}'\\)"):
            load(docker_socket_path=engine.url).attest(process.pid)
    assert engine.container_requests() == []


@pytest.fixture
def in_container(spawn: Any) -> Iterator[tuple[int, str]]:
    """A real process in the cgroups of a Docker container (systemd driver) the engine may not know."""
    process = spawn()
    cid = container_id()
    with Cgroup(f"system.slice/docker-{cid}.scope") as cgroup:
        cgroup.add(process.pid)
        yield process.pid, cid


def test_a_container_the_engine_does_not_know_fails_after_spires_retries(
    engine: Engine, in_container: tuple[int, str], tmp_path: Path, load: Any
) -> None:
    pid, cid = in_container
    started = time.monotonic()
    with pytest.raises(
        NotFound, match=f"container {cid} is unknown to the engine at {engine.url}: 404 No such container"
    ):
        load(docker_socket_path=engine.url).attest(pid)
    assert len(engine.container_requests()) == 4
    assert time.monotonic() - started >= 0.7  # 0.1 + 0.2 + 0.4 s between the tries


def test_a_container_the_engine_lists_late_is_found_on_a_retry(
    engine: Engine, in_container: tuple[int, str], tmp_path: Path, load: Any
) -> None:
    pid, cid = in_container
    handle = load(docker_socket_path=engine.url)
    engine.failure = (500, "container is being created")

    def recover() -> None:
        while not engine.container_requests():
            time.sleep(0.01)
        engine.failure = None
        engine.add(Container(id=cid))

    helper = threading.Thread(target=recover)
    helper.start()
    found = selectors(handle, pid)
    helper.join()
    assert "docker:label:com.example.name:foo" in found
    assert len(engine.container_requests()) >= 2


@pytest.mark.usefixtures("quick_retries")
def test_an_engine_error_or_no_engine_fails_attestation_with_the_reason(
    engine: Engine, in_container: tuple[int, str], tmp_path: Path, load: Any
) -> None:
    pid, cid = in_container
    engine.add(Container(id=cid))
    engine.failure = (500, "error while inspecting: database is locked")
    handle = load(docker_socket_path=engine.url)
    with pytest.raises(Unavailable, match=f"cannot inspect container {cid} at {engine.url}: 500 .*database is locked"):
        handle.attest(pid)
    absent = tmp_path / "absent.sock"
    with pytest.raises(Unavailable, match=f"cannot reach the container engine at unix://{absent}"):
        load(docker_socket_path=f"unix://{absent}").attest(pid)
    engine.stop()  # the engine goes away after the client negotiated with it
    with pytest.raises(Unavailable, match=f"cannot inspect container {cid}"):
        handle.attest(pid)


@pytest.mark.usefixtures("quick_retries")
def test_docker_version_pins_the_api_version_without_negotiating(
    engine: Engine, in_container: tuple[int, str], tmp_path: Path, load: Any
) -> None:
    pid, cid = in_container
    engine.add(Container(id=cid))
    assert "docker:env:ENVIRONMENT=prod" in selectors(load(docker_socket_path=engine.url, docker_version="1.44"), pid)
    assert engine.requests == [("GET", f"/v1.44/containers/{cid}/json")]
    # A version newer than the engine speaks is the engine's to refuse, and attestation fails.
    with pytest.raises(Unavailable, match=r"400 .*client version 1\.99 is too new"):
        load(docker_socket_path=engine.url, docker_version="1.99").attest(pid)


def test_without_docker_version_the_version_is_negotiated_once(
    engine: Engine, in_container: tuple[int, str], tmp_path: Path, load: Any
) -> None:
    pid, cid = in_container
    engine.add(Container(id=cid))
    engine.api_version = "1.45"
    handle = load(docker_socket_path=engine.url)
    assert engine.requests == []  # configuring does not touch the engine
    selectors(handle, pid)
    selectors(handle, pid)
    assert engine.requests == [("GET", "/version")] + [("GET", f"/v1.45/containers/{cid}/json")] * 2


@pytest.mark.parametrize(
    ("layout", "socket"),
    [
        (
            "user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope/container",
            "user/1000/podman.sock",
        ),
        ("machine.slice/libpod-{id}.scope/container", "rootful/podman.sock"),
    ],
)
def test_podman_containers_are_asked_of_podman(
    engine: Engine, spawn: Any, tmp_path: Path, layout: str, socket: str, load: Any
) -> None:
    podman = Engine(tmp_path / socket).start()
    try:
        container = podman.add(Container(image="quay.io/podman/hello:latest"))
        process = spawn()
        with Cgroup(layout.format(id=container.id), "v2") as cgroup:
            cgroup.add(process.pid)
            handle = load(
                docker_socket_path=engine.url,
                podman_socket_path=f"unix://{tmp_path}/rootful/podman.sock",
                podman_socket_path_template=f"unix://{tmp_path}/user/%d/podman.sock",
            )
            assert "docker:image_id:quay.io/podman/hello:latest" in selectors(handle, process.pid)
    finally:
        podman.stop()
    assert podman.container_requests() == [f"/v1.47/containers/{container.id}/json"]
    assert engine.requests == []


def test_legacy_matchers_locate_the_container(engine: Engine, spawn: Any, tmp_path: Path, load: Any) -> None:
    container = engine.add(Container())
    process = spawn()
    with Cgroup(f"my.slice/app/{container.id}/init") as cgroup:
        cgroup.add(process.pid)
        legacy = load(
            docker_socket_path=engine.url,
            use_new_container_locator=False,
            container_id_cgroup_matchers=["/my.slice/*/<id>/*", "/docker/<id>"],
        )
        assert selectors(legacy, process.pid) == expected(container)
        nothing = load(
            docker_socket_path=engine.url,
            use_new_container_locator=False,
            container_id_cgroup_matchers=["/docker/<id>"],
        )
        assert selectors(nothing, process.pid) == set()


def test_verbose_container_locator_logs_list_the_cgroups(
    engine: Engine, in_container: tuple[int, str], tmp_path: Path, caplog: pytest.LogCaptureFixture, load: Any
) -> None:
    pid, cid = in_container
    engine.add(Container(id=cid))
    caplog.set_level(logging.DEBUG, logger="pyspire.plugins")
    selectors(load(docker_socket_path=engine.url), pid)
    assert "PID cgroup enumerated" not in caplog.text
    selectors(load(docker_socket_path=engine.url, verbose_container_locator_logs=True), pid)
    paths = [record.__dict__["path"] for record in caplog.records if record.getMessage() == "PID cgroup enumerated"]
    assert len(paths) == len(Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    assert all(path.endswith(f"/system.slice/docker-{cid}.scope") for path in paths)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is needed")
def test_a_mount_table_naming_a_container_does_not_make_a_process_that_container(
    engine: Engine, spawn: Any, tmp_path: Path, load: Any
) -> None:
    """An unprivileged process bind-mounts a container's cgroup directory in its own user and
    mount namespaces, so its mountinfo names that container (SPIRE would then attest it as the
    container); its cgroups name none, and it gets no docker selectors."""
    victim = engine.add(Container(labels={"com.example.name": "payments"}))
    nobody = pwd.getpwnam("nobody")
    with Cgroup(f"docker/{victim.id}", "v1") as cgroup:
        target = next(path for path in cgroup.directories() if "pids" in str(path) or "systemd" in str(path))
        mount_point = Path("/tmp")  # a directory every user namespace may mount over in its own mount table
        process = spawn(
            ["unshare", "-Urm", "sh", "-c", f"mount --bind {target} {mount_point} && exec sleep 60"],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
        )
        deadline = time.monotonic() + 10
        while victim.id not in _mountinfo(process.pid):
            assert process.poll() is None, "unshare failed: unprivileged user namespaces are needed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert selectors(load(docker_socket_path=engine.url), process.pid) == set()
    assert engine.requests == []


def _mountinfo(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return ""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"docker_version": "latest"}, "docker_version.*'latest' is not an API version like 1.47"),
        ({"docker_version": "1.20"}, "docker_version.*below 1.24"),
        ({"docker_socket_path": "ftp://host/docker"}, "docker_socket_path.*Invalid bind address protocol"),
        ({"docker_socket_path": "tcp://"}, "docker_socket_path"),
        ({"podman_socket_path": "ftp://x"}, "podman_socket_path"),
        ({"podman_socket_path_template": "unix:///run/%s/podman.sock"}, "podman_socket_path_template.*only supports"),
        ({"podman_socket_path_template": "unix:///run/podman.sock"}, "podman_socket_path_template.*exactly one %d"),
        ({"container_id_cgroup_matchers": ["/docker/<id>"]}, "container_id_cgroup_matchers.*cannot both be used"),
        (
            {"use_new_container_locator": False, "container_id_cgroup_matchers": ["/docker/"]},
            "container_id_cgroup_matchers.*exactly once",
        ),
        (
            {"use_new_container_locator": False, "container_id_cgroup_matchers": ["/a/b/<id>", "/*/b/<id>"]},
            "container_id_cgroup_matchers.*ambiguous",
        ),
        ({"container_id_cgroup_matchers": "/docker/<id>"}, "container_id_cgroup_matchers"),
        ({"use_new_container_locator": "yes"}, "use_new_container_locator"),
        ({"docker_host": "npipe:////./pipe/docker_engine"}, "docker_host.*Windows"),
        ({"sigstore": {"rekor_url": "https://rekor.sigstore.dev"}}, "sigstore.*not offered"),
        ({"experimental": {}}, 'key "experimental"'),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, data: dict[str, Any], message: str, load: Any) -> None:
    with pytest.raises(CatalogError, match=message):
        load(**data)


def test_the_container_id_names_the_cgroup(tmp_path: Path) -> None:
    """The helper really puts processes where the kernel reports them (the tests above rely on it)."""
    cid = str(uuid.uuid4().hex * 2)
    process = subprocess.Popen(["sleep", "60"])
    try:
        with Cgroup(f"docker/{cid}") as cgroup:
            cgroup.add(process.pid)
            lines = Path(f"/proc/{process.pid}/cgroup").read_text().splitlines()
            assert lines
            assert all(line.endswith(f"/docker/{cid}") for line in lines)
    finally:
        process.kill()
        process.wait()

"""WorkloadAttestor ``docker``: selectors from the container a calling process runs in.

The container ID comes from the process's cgroups (:mod:`pyspire_docker.locator`); the
container's labels, environment and image from the Docker Engine API
(``GET /containers/{id}/json``), through the ``docker`` SDK on the daemon's socket. A
container in Podman's cgroups is looked up on Podman's socket instead (rootless Podman: the
socket of the user who owns it). A process outside any container has no docker selectors;
a container the engine cannot describe — the engine is down, answers an error, or does not
know the container after SPIRE's retries — fails attestation, with the reason in the agent's
log, and the workload gets no identity.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.utils import parse_host
from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, NotFound, PluginConfigError, PluginError, Unavailable
from pyspire.plugin.logger import PluginLogger, plugin_logger

from pyspire_docker.locator import (
    Cgroup,
    CgroupMatchers,
    check_socket_template,
    container_id,
    legacy_container_id,
    parse_cgroups,
    podman_socket,
)

__all__ = ["DockerConfig", "DockerWorkloadAttestor"]

ENGINE_TIMEOUT = 10.0
"""Seconds one Engine API request may take before attestation fails."""
INSPECT_RETRIES = 3
INSPECT_BACKOFF = 0.1
"""A container inspection that fails is tried again 3 times, 0.1 s, 0.2 s then 0.4 s later (SPIRE's
retries: a container just started may not be known to the engine yet)."""
MINIMUM_API_VERSION = (1, 24)
"""The oldest Engine API the ``docker`` SDK (and current engines) still speak."""
_API_VERSION = re.compile(r"(\d+)\.(\d+)")


@dataclass(frozen=True)
class DockerConfig:
    """``plugin_data`` of ``WorkloadAttestor "docker"`` (SPIRE's keys and defaults, Unix)."""

    docker_socket_path: str = "unix:///var/run/docker.sock"
    docker_version: str = ""
    """Engine API version, as ``1.47``; empty: negotiated with the engine on first use."""
    container_id_cgroup_matchers: tuple[str, ...] = ()
    use_new_container_locator: bool = True
    verbose_container_locator_logs: bool = False
    podman_socket_path: str = "unix:///run/podman/podman.sock"
    podman_socket_path_template: str = "unix:///run/user/%d/podman/podman.sock"
    docker_host: str = ""
    """SPIRE's Windows-only key: refused here."""
    sigstore: dict[str, Any] = field(default_factory=dict)
    """SPIRE's image signature verification: refused here."""


@dataclass(frozen=True)
class _Settings:
    """The configuration, checked: what :meth:`DockerWorkloadAttestor.attest_workload` works from."""

    config: DockerConfig
    matchers: CgroupMatchers | None
    api_version: str | None


def _check(config: DockerConfig) -> _Settings:
    """Refuse what SPIRE refuses (and what this plugin does not offer), naming the key."""
    if config.docker_host:
        raise PluginConfigError("docker_host", "is the Windows Engine API endpoint; on Unix set docker_socket_path")
    if config.sigstore:
        raise PluginConfigError("sigstore", "image signature verification is not offered by this plugin")
    for key in ("docker_socket_path", "podman_socket_path"):
        try:
            parse_host(getattr(config, key))
        except docker.errors.DockerException as err:
            raise PluginConfigError(key, str(err)) from None
    try:
        check_socket_template(config.podman_socket_path_template)
    except ValueError as err:
        raise PluginConfigError("podman_socket_path_template", str(err)) from None
    api_version = None
    if config.docker_version:
        version = _API_VERSION.fullmatch(config.docker_version)
        if version is None:
            raise PluginConfigError("docker_version", f"{config.docker_version!r} is not an API version like 1.47")
        if (int(version.group(1)), int(version.group(2))) < MINIMUM_API_VERSION:
            raise PluginConfigError(
                "docker_version", f"API versions below {'.'.join(map(str, MINIMUM_API_VERSION))} are not supported"
            )
        api_version = config.docker_version
    matchers = None
    if config.container_id_cgroup_matchers:
        if config.use_new_container_locator:
            raise PluginConfigError(
                "container_id_cgroup_matchers",
                "the new container locator and custom cgroup matchers cannot both be used; "
                "to use custom matchers set use_new_container_locator = false",
            )
        try:
            matchers = CgroupMatchers(config.container_id_cgroup_matchers)
        except ValueError as err:
            raise PluginConfigError("container_id_cgroup_matchers", str(err)) from None
    return _Settings(config, matchers, api_version)


def _engine_error(err: Exception) -> str:
    """What an Engine API failure says, without the SDK's request plumbing."""
    if isinstance(err, docker.errors.APIError) and err.status_code is not None:
        return f"{err.status_code} {err.explanation or ''}".rstrip()
    return str(err)


def selector_values(container: Mapping[str, Any]) -> list[str]:
    """The selectors of a ``GET /containers/{id}/json`` answer, as SPIRE forms them.

    ``label:<key>:<value>`` per label, ``env:<NAME=value>`` per environment entry,
    ``image_id:<image as the container was created with>`` and
    ``image_config_digest:<the ID of the image the container runs>``.
    """
    config = container.get("Config") or {}
    values = [f"label:{key}:{value}" for key, value in sorted((config.get("Labels") or {}).items())]
    values += [f"env:{entry}" for entry in config.get("Env") or []]
    if config.get("Image"):
        values.append(f"image_id:{config['Image']}")
    if container.get("Image"):
        values.append(f"image_config_digest:{container['Image']}")
    return values


class DockerWorkloadAttestor:
    """Selectors ``label``, ``env``, ``image_id`` and ``image_config_digest`` of the caller's container."""

    def __init__(self) -> None:
        self._settings: _Settings | None = None
        self._log: PluginLogger = plugin_logger("WorkloadAttestor", "docker")
        self._engine: docker.APIClient | None = None
        self._engine_lock = threading.Lock()

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        _check(parse_plugin_data(DockerConfig, plugin_data))

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        settings = _check(parse_plugin_data(DockerConfig, plugin_data))
        self._log = logger
        if settings.matchers is not None:
            logger.warning(
                "Using the legacy container locator with custom cgroup matchers. "
                "This feature will be removed in a future release."
            )
        with self._engine_lock:
            self._close_engine()
            self._settings = settings
            if settings.api_version is not None:
                # A fixed version needs no round trip: the client is built now, errors and all.
                self._engine = self._client(settings.config.docker_socket_path, settings.api_version)

    @hookimpl
    def close(self) -> None:
        with self._engine_lock:
            self._close_engine()

    @hookimpl
    def attest_workload(self, pid: int) -> Sequence[str]:
        settings = self._settings
        if settings is None:
            raise Internal("the docker workload attestor is not configured")
        cgroups = self._cgroups(pid, settings.config.verbose_container_locator_logs)
        if settings.matchers is not None:
            found = legacy_container_id(settings.matchers, cgroups)
        else:
            found = container_id(cgroups)
        if not found:
            return []  # not in a container: nothing to say
        config = settings.config
        podman = podman_socket(cgroups, config.podman_socket_path, config.podman_socket_path_template)
        if podman is None:
            container = self._inspect(self._docker_engine, found, config.docker_socket_path)
        else:
            client = self._client(podman, None)
            try:
                container = self._inspect(lambda: client, found, podman)
            finally:
                client.close()
        return selector_values(container)

    def _cgroups(self, pid: int, verbose: bool) -> list[Cgroup]:
        path = f"/proc/{pid}/cgroup"
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as file:
                text = file.read()
        except FileNotFoundError:
            raise NotFound(f"process {pid} does not exist") from None
        except OSError as err:
            raise Internal(f"unable to obtain cgroups of process {pid}: {err.strerror}") from None
        cgroups = parse_cgroups(text)
        if verbose:
            for index, cgroup in enumerate(cgroups, 1):
                self._log.debug(
                    "PID cgroup enumerated", extra={"index": index, "total": len(cgroups), "path": cgroup.path}
                )
        return cgroups

    def _client(self, base_url: str, version: str | None) -> docker.APIClient:
        """An Engine API client; ``version`` None negotiates it (one ``GET /version``)."""
        try:
            return docker.APIClient(base_url=base_url, version=version or "auto", timeout=ENGINE_TIMEOUT)
        except docker.errors.DockerException as err:
            raise Unavailable(f"cannot reach the container engine at {base_url}: {err}") from None

    def _docker_engine(self) -> docker.APIClient:
        """The Docker daemon's client, negotiated on first use and kept."""
        with self._engine_lock:
            if self._engine is None:
                assert self._settings is not None
                self._engine = self._client(self._settings.config.docker_socket_path, None)
            return self._engine

    def _close_engine(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def _inspect(self, client: Callable[[], docker.APIClient], container: str, where: str) -> Mapping[str, Any]:
        """``GET /containers/{id}/json``, tried again as SPIRE does before giving up."""
        last: PluginError | None = None
        for attempt in range(INSPECT_RETRIES + 1):
            if attempt:
                time.sleep(INSPECT_BACKOFF * 2 ** (attempt - 1))
            try:
                answer: Mapping[str, Any] = client().inspect_container(container)
                return answer
            except docker.errors.NotFound as err:
                last = NotFound(f"container {container} is unknown to the engine at {where}: {_engine_error(err)}")
            except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
                last = Unavailable(f"cannot inspect container {container} at {where}: {_engine_error(err)}")
            except Unavailable as err:
                last = err
        assert last is not None
        raise last

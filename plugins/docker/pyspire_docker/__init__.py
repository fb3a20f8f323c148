"""WorkloadAttestor ``docker``: a calling process's container, as the Docker Engine API describes it."""

from pyspire_docker.attestor import DockerConfig, DockerWorkloadAttestor

__all__ = ["DockerConfig", "DockerWorkloadAttestor"]

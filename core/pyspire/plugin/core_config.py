"""What the daemon tells every plugin about the deployment it runs in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspire.spiffe import TrustDomain

__all__ = ["CoreConfig"]


@dataclass(frozen=True)
class CoreConfig:
    """The daemon-wide settings a plugin may need besides its own ``plugin_data``."""

    trust_domain: TrustDomain
    data_dir: Path

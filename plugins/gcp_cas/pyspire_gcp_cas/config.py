"""``plugin_data`` of ``UpstreamAuthority "gcp_cas"``: SPIRE's ``root_cert_spec`` block and its checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pyspire.plugin import PluginConfigError

__all__ = ["DEFAULT_ENDPOINT", "GcpCasConfig", "RootCertSpec"]

DEFAULT_ENDPOINT = "https://privateca.googleapis.com"

# A resource ID is one path segment: a "/" would name another resource than the one configured.
_RESOURCE_ID = re.compile(r"[^/\s]+")
# Google's label rules: keys start with a lowercase letter; keys and values hold lowercase
# letters, digits, "_" and "-", at most 63 characters. They are also what keeps the list
# filter ``labels.KEY:VALUE`` one clause: a space or quote would change what it selects.
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{1,63}")


@dataclass(frozen=True)
class RootCertSpec:
    """Where the CAs that sign are: a region of a project, optionally one pool, and a label they carry."""

    project_name: str = ""
    """The Google Cloud project of the CA pools."""
    region_name: str = ""
    """The region (location) of the CA pools."""
    ca_pool: str = ""
    """The pool whose CAs sign; unset, every pool of the region is searched."""
    label_key: str = ""
    """The label key the CAs that may sign carry."""
    label_value: str = ""
    """Its value."""

    def check(self) -> None:
        """Refuse what cannot name CAs, with SPIRE's wording for the missing keys."""
        # SPIRE names the keys by its Go fields (Project, Location, ...); the key is named here too.
        missing = (
            ("project_name", self.project_name, "Project"),
            ("region_name", self.region_name, "Location"),
            ("label_key", self.label_key, "LabelKey"),
            ("label_value", self.label_value, "LabelValue"),
        )
        for key, value, spire_name in missing:
            if not value:
                raise PluginConfigError(f"root_cert_spec.{key}", f"root_cert_spec.{spire_name} is missing")
        for key, value in (
            ("project_name", self.project_name),
            ("region_name", self.region_name),
            ("ca_pool", self.ca_pool),
        ):
            if value and not _RESOURCE_ID.fullmatch(value):
                raise PluginConfigError(f"root_cert_spec.{key}", f'"{value}" is not a resource ID (no "/" or spaces)')
        if not _LABEL_KEY.fullmatch(self.label_key):
            raise PluginConfigError(
                "root_cert_spec.label_key",
                f'"{self.label_key}" is not a Google label key (a lowercase letter, then up to 62 lowercase '
                "letters, digits, underscores or dashes)",
            )
        if not _LABEL_VALUE.fullmatch(self.label_value):
            raise PluginConfigError(
                "root_cert_spec.label_value",
                f'"{self.label_value}" is not a Google label value (1 to 63 lowercase letters, digits, '
                "underscores or dashes)",
            )

    @property
    def location(self) -> str:
        """The parent of the region's CA pools."""
        return f"projects/{self.project_name}/locations/{self.region_name}"

    @property
    def filter(self) -> str:
        """The list filter that selects the labelled CAs (the ``:`` "has" operator, as SPIRE asks)."""
        return f"labels.{self.label_key}:{self.label_value}"


@dataclass(frozen=True)
class GcpCasConfig:
    """The keys SPIRE's ``gcp_cas`` takes, plus the endpoint (pyspire's addition)."""

    root_cert_spec: RootCertSpec = field(default_factory=RootCertSpec)
    """Which CAs sign the server's CA."""
    cas_endpoint: str = DEFAULT_ENDPOINT
    """pyspire's addition: the CA Service API's base URL."""

    def check(self) -> None:
        """Raise PluginConfigError for the first key that cannot work."""
        self.root_cert_spec.check()
        if not self.cas_endpoint.startswith(("https://", "http://")):
            raise PluginConfigError("cas_endpoint", f'"{self.cas_endpoint}" is not an http:// or https:// URL')

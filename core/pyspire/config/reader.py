"""Reading a config file: HCL (SPIRE's format) or JSON, with optional ``-expandEnv``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pyspire.config.hcl import parse_hcl
from pyspire.config.schema import ConfigError

__all__ = ["expand_env", "parse_config_text", "read_config_file", "strip_markers"]

_ENV_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_env(text: str) -> str:
    """Replace ``$VAR`` and ``${VAR}`` with the environment's values (unset -> empty).

    The semantics of Go's ``os.ExpandEnv``, which SPIRE's ``-expandEnv`` flag applies to
    the whole file before parsing it.
    """
    return _ENV_REFERENCE.sub(lambda match: os.environ.get(match.group(1) or match.group(2), ""), text)


def strip_markers(value: Any) -> Any:
    """``value`` without the HCL reader's block markers, recursively (for plugin_data)."""
    if isinstance(value, dict):
        return {key: strip_markers(item) for key, item in value.items() if key != "__is_block__"}
    if isinstance(value, list):
        return [strip_markers(item) for item in value]
    return value


def parse_config_text(text: str, source: str) -> dict[str, Any]:
    """Parse HCL or JSON text into plain Python values.

    JSON is recognised by its first non-blank character; HCL is read as SPIRE's HCL 1 reads
    it (:mod:`pyspire.config.hcl`). HCL blocks arrive as lists of mappings (one per
    occurrence) and labelled blocks as ``{label: body}`` items; the typed loader
    (:mod:`pyspire.config.schema`) understands both shapes. A key given twice is an error in
    both formats.
    """
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text, object_pairs_hook=_refuse_duplicate_members)
        except _DuplicateMember as err:
            raise ConfigError(source, err.name, "given twice in one JSON object; give it once") from None
        except json.JSONDecodeError as err:
            raise ConfigError(
                source, None, f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
            ) from None
        if not isinstance(document, dict):
            raise ConfigError(source, None, "a JSON config must be an object")
        return document
    return parse_hcl(text, source)


class _DuplicateMember(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _refuse_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise _DuplicateMember(name)
        document[name] = value
    return document


def read_config_file(path: Path, *, expand_environment: bool = False) -> dict[str, Any]:
    """Read and parse ``path``; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(str(path), None, f"cannot read the config file: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), None, "the config file is not UTF-8 text") from None
    if expand_environment:
        text = expand_env(text)
    return parse_config_text(text, str(path))

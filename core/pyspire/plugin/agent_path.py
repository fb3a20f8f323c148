"""``agent_path_template``: SPIRE's Go-template agent paths, in the subset operators use.

SPIRE renders agent IDs with Go's text/template (``/{{ .PluginName }}/{{ .AccountID }}``).
pyspire accepts the part of that language an agent path needs — literal text and field
references, dotted for nested values (``{{ .Subject.CommonName }}``) — and refuses the rest
(pipelines, functions, conditionals) when the plugin is configured, not when an agent attests.
The rendered path is not trusted: the server validates it strictly as a SPIFFE ID path, so a
value carrying ``..`` or an empty segment is refused instead of being normalised away.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pyspire.plugin.errors import Internal, PluginConfigError

__all__ = ["AgentPathTemplate"]

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_FIELD = re.compile(r"^(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class AgentPathTemplate:
    """A parsed template; :meth:`render` fills it from plugin-provided values."""

    def __init__(self, text: str, key: str = "agent_path_template") -> None:
        """Parse ``text``; a construct outside the supported subset is a config error on ``key``."""
        self.text = text
        self._parts: list[str | tuple[str, ...]] = []
        position = 0
        for match in _ACTION.finditer(text):
            self._parts.append(text[position : match.start()])
            action = match.group(1)
            if not _FIELD.match(action):
                raise PluginConfigError(
                    key, f'unsupported template action "{{{{ {action} }}}}": only field references like .Name work'
                )
            self._parts.append(tuple(action[1:].split(".")))
            position = match.end()
        rest = text[position:]
        if "{{" in rest or "}}" in rest:
            raise PluginConfigError(key, "unbalanced {{ }} in template")
        self._parts.append(rest)

    def render(self, values: Mapping[str, Any]) -> str:
        """The agent path (always starting with ``/``) for ``values``."""
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value: Any = values
            for name in part:
                if not isinstance(value, Mapping) or name not in value:
                    raise Internal(f"agent_path_template: no value for .{'.'.join(part)}")
                value = value[name]
            out.append(str(value))
        path = "".join(out)
        return path if path.startswith("/") else "/" + path

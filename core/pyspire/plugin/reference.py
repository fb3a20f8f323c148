"""The hook reference (``docs/plugins/hooks.md``), generated from the hook specifications.

Every plugin type of :mod:`pyspire.plugin.types` gets a section with its hooks: the
signature and docstring from its hookspec module, whether it is required, and an example
``@hookimpl``. The examples are the implementations the plugin starter writes, so every one
of them is code that a test installs and runs against the type's contract suite.

``python -m pyspire.plugin.reference --write docs/plugins/hooks.md`` regenerates the page;
``tests/plugin/test_documentation.py`` fails when it is stale.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyspire.plugin import errors, testing
from pyspire.plugin.catalog import TRACE_ENV
from pyspire.plugin.discovery import DEV_PLUGINS_ENV
from pyspire.plugin.markers import PROJECT
from pyspire.plugin.starter import render_starter
from pyspire.plugin.types import LIFECYCLE, PLUGIN_TYPES, PluginType, hook_names

__all__ = ["main", "render_reference"]

EXAMPLE_NAME = "acme"
LIFECYCLE_EXAMPLES = {
    "configure": ("server", "NodeAttestor"),
    "validate": ("agent", "SVIDStore"),
    "close": ("server", "DataStore"),
}
"""Which starter shows the hooks every plugin has."""

_HEADER = f"""# Plugin hook reference

<!-- Generated from core/pyspire/plugin/hookspecs by `python -m pyspire.plugin.reference --write
docs/plugins/hooks.md`; tests/plugin/test_documentation.py fails when this page is stale. -->

A plugin is a class whose methods marked `@hookimpl` (from `pyspire.plugin`) are named after
the hooks of its type. This page lists every type and every hook: when the daemon calls it,
what it gets, what it returns and what it raises. The examples are the code that
`pyspire-server plugins new` / `pyspire-agent plugins new` writes (here for a plugin called
`{EXAMPLE_NAME}`), which passes the type's contract suite from `pyspire.plugin.testing`.

- Hooks are plain functions: the daemons call them from worker threads, so a hook may block
  (boto3, hvac, google-auth as they are). An `async def` hook is refused when the plugin is
  loaded.
- A hook may take fewer arguments than it is offered: name only those you use.
- Raise the errors below; the daemon adds the plugin's name (`nodeattestor({EXAMPLE_NAME}): ...`,
  as SPIRE does), so a message says only what is wrong. Any other exception is a bug in the
  plugin: the call fails closed as `INTERNAL` and the traceback is logged.
- `configure` hands each plugin a logger whose INFO and DEBUG lines reach the daemon's log
  with `plugin_type` and `plugin_name` fields; a logger of the plugin's own package shows
  warnings and errors only.
- `{TRACE_ENV}=1` logs every hook call and its result at DEBUG level (with `log_level =
  "DEBUG"`); `{DEV_PLUGINS_ENV}` loads plugins that are not packaged yet (see the README).
"""


_ROLE = re.compile(r":(?:class|func|mod|meth|attr|data):`~?([^`]+)`")


def _markdown(text: str) -> str:
    """A docstring's reStructuredText inline markup as Markdown: roles and double backquotes."""
    text = _ROLE.sub(
        lambda match: f"`{match.group(1).rsplit('.', 1)[-1] if '~' in match.group(0) else match.group(1)}`", text
    )
    return text.replace("``", "`")


def _signature(hook: Callable[..., Any]) -> str:
    """``name(arg: type, ...) -> type`` as written in the hookspec (annotations are strings there)."""
    parameters = ", ".join(
        f"{name}: {parameter.annotation}" for name, parameter in inspect.signature(hook).parameters.items()
    )
    return f"{hook.__name__}({parameters}) -> {inspect.signature(hook).return_annotation}"


def _hookimpls(source: str) -> dict[str, str]:
    """Every ``@hookimpl`` method of the classes in ``source``, with its decorator, by name."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not isinstance(item, ast.FunctionDef) or not any(
                isinstance(d, ast.Name) and d.id == "hookimpl" for d in item.decorator_list
            ):
                continue
            start = min(d.lineno for d in item.decorator_list) - 1
            found[item.name] = textwrap.dedent("\n".join(lines[start : item.end_lineno]))
    return found


def _examples(declared: PluginType) -> dict[str, str]:
    """The starter's implementations of the type's hooks; a type sharing its spec (the agent's
    KeyManager) fills in hooks this role's starter leaves out."""
    found: dict[str, str] = {}
    for other in sorted(PLUGIN_TYPES, key=lambda t: t is not declared):
        if other.spec is declared.spec:
            files = render_starter(other.role, other.name, EXAMPLE_NAME)
            for hook, source in _hookimpls(files[f"pyspire_{EXAMPLE_NAME}/{other.role}.py"]).items():
                found.setdefault(hook, source)
    return found


def _contract(declared: PluginType) -> str:
    name = declared.handle.__name__.removeprefix("Server").removeprefix("Agent") + "Contract"
    if not hasattr(testing, name):
        raise LookupError(f"no contract suite {name} in pyspire.plugin.testing for {declared.role} {declared.name}")
    return name


def _hook_section(hook: Callable[..., Any], required: bool | None, example: str | None, where: str) -> list[str]:
    if example is None:
        raise LookupError(f"no example for hook {hook.__name__} ({where}): the plugin starter must implement it")
    status = "" if required is None else ("*Required.* " if required else "*Optional.* ")
    return [
        f"### `{_signature(hook)}`",
        "",
        status + _markdown(inspect.getdoc(hook) or ""),
        "",
        "```python",
        example,
        "```",
        "",
    ]


def _hooks(spec: Any) -> list[Callable[..., Any]]:
    return [getattr(spec, name) for name in hook_names(spec)]


def _error_table() -> list[str]:
    rows = ["| Raise | gRPC status | When |", "| ----- | ----------- | ---- |"]
    for name in errors.__all__:
        error = getattr(errors, name)
        if isinstance(error, type) and issubclass(error, errors.PluginError) and error is not errors.PluginError:
            summary = (inspect.getdoc(error) or "").splitlines()[0]
            rows.append(f"| `{name}` | `{error.code.name}` | {summary} |")
    return rows


def _types_table() -> list[str]:
    rows = [
        "| Type | Daemon | How many | Required hooks | Optional hooks | Contract suite |",
        "| ---- | ------ | -------- | -------------- | -------------- | -------------- |",
    ]
    for declared in PLUGIN_TYPES:
        if declared.required_hooks == declared.hooks:
            required = f"all {len(declared.hooks)}"
        elif len(declared.required_hooks) > 8 and len(declared.optional_hooks) <= 2:  # a long list, few exceptions
            required = f"the {len(declared.required_hooks)} others"
        else:
            required = ", ".join(f"`{h}`" for h in declared.required_hooks) or "one of the optional ones"
        optional = ", ".join(f"`{h}`" for h in declared.optional_hooks) or "none"
        rows.append(
            f"| [{declared.name}](#{declared.role}-{declared.name.lower()}) | {declared.role} | "
            f"{declared.cardinality.describe()} | {required} | {optional} | `{_contract(declared)}` |"
        )
    return rows


def _about(declared: PluginType) -> str:
    how_many = declared.cardinality.describe().removesuffix(" of")
    declaration = f'{declared.name} "<name>" {{ plugin_data {{ ... }} }}'
    return (
        f"Entry points in group `{declared.group}`; in config `{declaration}`, {how_many} per {declared.role}. "
        f"Tested by `pyspire.plugin.testing.{_contract(declared)}`; "
        f"`pyspire-{declared.role} plugins new {declared.name} <name>` writes a starter."
    )


def render_reference() -> str:
    """The whole page, as Markdown."""
    out = [_HEADER, "## Errors", "", *_error_table(), "", "## Plugin types", "", *_types_table(), ""]
    out += [
        "## Every plugin",
        "",
        _markdown(inspect.getdoc(LIFECYCLE) or "").strip(),
        "",
    ]
    for hook in _hooks(LIFECYCLE):
        role, type_name = LIFECYCLE_EXAMPLES[hook.__name__]
        example = _examples(next(t for t in PLUGIN_TYPES if (t.role, t.name) == (role, type_name))).get(hook.__name__)
        out += _hook_section(hook, hook.__name__ == "configure", example, "every plugin")
    for declared in PLUGIN_TYPES:
        examples = _examples(declared)
        out += [
            f'<a id="{declared.role}-{declared.name.lower()}"></a>',
            f"## {declared.role.capitalize()}: {declared.name}",
            "",
            _markdown(inspect.getdoc(declared.spec) or "").strip(),
            "",
            _about(declared),
            "",
        ]
        for hook in _hooks(declared.spec):
            out += _hook_section(
                hook, hook.__name__ in declared.required_hooks, examples.get(hook.__name__), declared.name
            )
    return "\n".join(out).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the reference, or ``--write`` it to a file."""
    parser = argparse.ArgumentParser(prog=f"python -m {PROJECT}.plugin.reference", description=__doc__)
    parser.add_argument("--write", metavar="PATH", help="Write the page to PATH instead of printing it")
    args = parser.parse_args(argv)
    page = render_reference()
    if args.write:
        Path(args.write).write_text(page, encoding="utf-8")
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())

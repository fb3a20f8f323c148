"""The reference documents whose source is the code: ``docs/config.md``, ``docs/cli.md``, ``docs/metrics.md``.

``python -m pyspire.reference DIR`` writes them; ``--check`` exits 1 naming the ones that differ
from what the code says (the test suite runs the same comparison).

- The config reference walks the typed sections (every key, its type and default, which are
  SPIRE's unless noted) and the support table (SPIRE keys ignored with a warning, or refused).
- The CLI reference walks both command lines' parsers.
- The metrics reference is :mod:`pyspire.telemetry.catalog`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import inspect
import itertools
import sys
import textwrap
import typing
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pyspire.config.schema import config_key
from pyspire.config.sections import AgentSection, HealthChecks, ServerSection, Telemetry
from pyspire.config.support import AGENT_UNSUPPORTED, SERVER_UNSUPPORTED, Verdict
from pyspire.server.api.ratelimit import LIMITED_METHODS
from pyspire.telemetry import catalog

__all__ = ["cli_markdown", "config_markdown", "documents", "main"]

# Where SPIRE's default is not the default of pyspire's field, or where a key is pyspire's own.
_SPIRE_DEFAULT: Mapping[str, str] = {
    "server.agent_ttl": "default_x509_svid_ttl",
    "server.jwt_key_type": "ca_key_type",
    "agent.server_address": "required (one address; a list is pyspire's addition)",
    "telemetry.Prometheus.port": "0 (any free port)",
    "agent.experimental.use_sync_authorized_entries": "true (unset and true mean the same; setting it is deprecated)",
}
_PYSPIRE_ONLY: frozenset[str] = frozenset(
    {
        "agent.sds.require_security_header",
        "telemetry.OpenTelemetry",
    }
)
_SPIRE_DEFAULT_UNSUPPORTED: Mapping[str, str] = {
    "profiling_enabled": "false",
    "profiling_port": "0",
    "profiling_freq": "0",
    "log_source_location": "false",
    "rebootstrap_mode": "never",
    "rebootstrap_delay": "10m",
    "experimental.require_pq_kem": "false",
    "max_attested_node_info_staleness": "0s",
    "prune_attested_nodes_batch_size": "1000",
    "experimental.jwt_svid_cache_hit_timeout": "30s",
    "experimental.sql_transaction_timeout": "15m",
    "experimental.events_based_cache": "false",
    "experimental.event_timeout": "15m",
}


def _field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a dataclass's fields (``x: int = 1`` then ``\"\"\"...\"\"\"``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def _type_text(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_text(arg) for arg in args if arg is not type(None))
    if origin is typing.Literal:
        return " \\| ".join(f'"{arg}"' if isinstance(arg, str) else str(arg) for arg in args)
    if origin in (tuple, list):
        return f"list of {_type_text(args[0])}" if args else "list"
    if origin is dict:
        return "map" if not args or not dataclasses.is_dataclass(args[1]) else "labelled blocks"
    if dataclasses.is_dataclass(tp):
        return "block"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " \\| ".join(f'"{member.value}"' for member in tp)
    names = {str: "string", int: "integer", float: "number", bool: "boolean", timedelta: "duration", Path: "path"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _default_text(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if value is None or value in ((), {}, []):
        return "none"
    if value == "":
        return '""'
    if dataclasses.is_dataclass(value):
        return "see the keys below"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        for unit, size in (("h", 3600), ("m", 60)):
            if seconds % size == 0 and seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"
    if isinstance(value, tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def _rows(cls: type, prefix: str) -> Iterator[tuple[str, str, str, str, str]]:
    """(key, type, default, SPIRE's default, description) for every key of ``cls``, nested blocks after."""
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    nested: list[tuple[type, str]] = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        key = f"{prefix}.{config_key(field)}"
        tp = hints[field.name]
        default = _default_text(field)
        spire = "pyspire only" if key in _PYSPIRE_ONLY else _SPIRE_DEFAULT.get(key, "same")
        yield key, _type_text(tp), default, spire, docs.get(field.name, "")
        for candidate in (tp, *typing.get_args(tp)):
            inner = typing.get_args(candidate)[1] if typing.get_origin(candidate) is dict else candidate
            if typing.get_origin(candidate) in (tuple, list) and typing.get_args(candidate):
                inner = typing.get_args(candidate)[0]
            if dataclasses.is_dataclass(inner) and isinstance(inner, type) and dataclasses.fields(inner):
                label = '"<name>"' if typing.get_origin(candidate) is dict else ""
                nested.append((inner, f"{key} {label}".strip() if label else key))
                break
    for inner, inner_prefix in nested:
        if inner_prefix.startswith("telemetry.OpenTelemetry"):
            yield from ((k, t, d, "pyspire only", x) for k, t, d, _, x in _rows(inner, inner_prefix))
        else:
            yield from _rows(inner, inner_prefix)


def _support_rows(section: str, table: Mapping[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    for dotted, rule in sorted(table.items()):
        verdict = rule if isinstance(rule, Verdict) else rule.verdict
        key = dotted[1:] if dotted.startswith("/") else f"{section}.{dotted}"
        status = "ignored with a warning" if verdict is Verdict.IGNORE else "refused"
        reason = getattr(rule, "reason", "") or "nothing about identity or security depends on it"
        yield key, status, _SPIRE_DEFAULT_UNSUPPORTED.get(dotted, "—"), reason


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if "\\|" not in text else text


def config_markdown() -> str:
    """docs/config.md."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config sections (`pyspire.config.sections`) and the table of SPIRE keys pyspire does",
        "not implement (`pyspire.config.support`) by `python -m pyspire.reference docs`; a test fails when it is out",
        "of date. Files are SPIRE's format (HCL or JSON) and SPIRE's keys; an unknown key is an error naming the",
        "file, block and key. *SPIRE's default* says `same` where pyspire's default is SPIRE's.",
        "",
        'Every `plugins { Type "name" { ... } }` declaration takes `plugin_data { }` or `plugin_data_file`, and',
        "`enabled`; `plugin_cmd` and `plugin_checksum` are refused (plugins are Python packages). Each plugin's keys",
        "are in its README.",
        "",
    ]
    for daemon, section, table in (
        ("server", ServerSection, SERVER_UNSUPPORTED),
        ("agent", AgentSection, AGENT_UNSUPPORTED),
    ):
        lines += [f"## {daemon.capitalize()} (`{daemon}.conf`)", "", "### Implemented", ""]
        lines += ["| Key | Type | Default | SPIRE's default | Notes |", "|---|---|---|---|---|"]
        for block, cls in ((daemon, section), ("health_checks", HealthChecks), ("telemetry", Telemetry)):
            for key, tp, default, spire, notes in _rows(cls, block):
                lines.append(f"| `{key}` | {_cell(tp)} | {_cell(default)} | {spire} | {_cell(notes)} |")
        lines += ["", "### SPIRE keys pyspire does not implement", ""]
        lines += ["| Key | pyspire | SPIRE's default | Why |", "|---|---|---|---|"]
        for key, status, spire, reason in _support_rows(daemon, table):
            lines.append(f"| `{key}` | {status} | {spire} | {_cell(reason)} |")
        lines.append("")
    return "\n".join(lines)


def _commands(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub, helps.get(name, "")
                yield from _commands(sub, f"{path} {name}")


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or not action.option_strings:
            continue
        default = "" if action.default in (None, False, argparse.SUPPRESS) else f" (default `{action.default}`)"
        rows.append(f"| `{', '.join(action.option_strings)}` | {_cell(action.help or '')}{default} |")
    return rows


def cli_markdown() -> str:
    """docs/cli.md."""
    from pyspire.agent.cli import build_parser as agent_parser  # noqa: PLC0415 - the CLIs import much
    from pyspire.server.cli import build_parser as server_parser  # noqa: PLC0415

    lines = [
        "# Command-line reference",
        "",
        "Generated from both command lines' parsers by `python -m pyspire.reference docs`; a test fails when it is",
        "out of date. Verbs and single-dash flags are SPIRE's (`spire-server` becomes `pyspire-server`).",
        "`-v`, `-version` or `--version` before any command prints the version on stderr, as SPIRE does.",
        "",
    ]
    for program, build in (("pyspire-server", server_parser), ("pyspire-agent", agent_parser)):
        lines += [f"## {program}", ""]
        for path, parser, help_text in _commands(build(), program):
            flags = _flags(parser)
            if not flags and any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
                continue
            lines += [f"### `{path}`", "", help_text or "", ""]
            if flags:
                lines += ["| Flag | Meaning |", "|---|---|", *flags, ""]
    return "\n".join(lines)


def documents() -> dict[str, str]:
    """File name -> content, for every generated reference."""
    return {"config.md": config_markdown(), "cli.md": cli_markdown(), "metrics.md": catalog.markdown(LIMITED_METHODS)}


def main(argv: Sequence[str] | None = None) -> int:
    """Write the references into DIR, or with ``--check`` say which differ."""
    parser = argparse.ArgumentParser(prog="python -m pyspire.reference", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, text in documents().items():
        target = args.directory / name
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(name)
        else:
            target.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)} (run python -m pyspire.reference {args.directory})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

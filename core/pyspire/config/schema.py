"""Typed configuration sections: a mapping in, a frozen dataclass out, every key checked.

The daemons' config blocks and every plugin's ``plugin_data`` go through
:func:`load_section`, so an operator gets the same kind of message for every mistake:
``server.conf: server: key "bind_port": expected an integer, got "eighty"``.

The dataclass's field types say how to convert: ``str``, ``int`` (numeric strings
accepted, since SPIRE's own files write ``bind_port = "8081"``), ``float``, ``bool``
(booleans or ``"true"``/``"false"``), ``timedelta`` (Go duration strings), ``Path``,
:class:`~pyspire.spiffe.TrustDomain` and :class:`~pyspire.spiffe.SpiffeId` (strict),
enums (by value, case-insensitively), ``Literal[...]`` choices, ``tuple[X, ...]`` and
``list[X]``, ``dict[K, V]`` (also for labelled blocks such as ``federates_with "td" {}``),
nested dataclasses (sub-blocks), ``X | None`` and ``Any`` (kept as given). A field's HCL
name is its Python name unless ``field(metadata={"key": "Name"})`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from pyspire.config.duration import parse_duration
from pyspire.config.errors import ConfigError
from pyspire.spiffe import SpiffeId, SpiffeIdError, TrustDomain

__all__ = ["ConfigError", "config_key", "load_section"]

T = TypeVar("T")

# Markers the HCL reader leaves on blocks; never configuration.
_META_KEYS = frozenset({"__is_block__"})


def config_key(field: dataclasses.Field[Any]) -> str:
    """The name a dataclass field has in config files."""
    return str(field.metadata.get("key", field.name))


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"' if len(value) <= 60 else f'"{value[:60]}..."'
    if isinstance(value, Mapping):
        return "a block"
    if isinstance(value, (list, tuple)):
        return "a list"
    return repr(value)


def _type_name(tp: Any) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        timedelta: 'a duration such as "1h" or "30s"',
        Path: "a path",
        TrustDomain: "a trust domain name",
        SpiffeId: "a SPIFFE ID",
    }
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _single_block(value: Any, where: str, key: str) -> Mapping[str, Any]:
    """A block may arrive as a mapping, or (from HCL) as a one-element list of mappings."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], Mapping):
        value = value[0]
    if isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
        raise ConfigError(where, key, f"block given {len(value)} times; give it once")
    if not isinstance(value, Mapping):
        raise ConfigError(where, key, f"expected a block, got {_describe(value)}")
    return value


def _labelled_blocks(value: Any, where: str, key: str) -> dict[str, Any]:
    """``name "label" { ... }`` blocks (one or many) as a mapping label -> body."""
    items = value if isinstance(value, list) else [value]
    merged: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, Mapping):
            raise ConfigError(where, key, f"expected labelled blocks, got {_describe(item)}")
        for label, body in item.items():
            if label in _META_KEYS:
                continue
            if label in merged:
                raise ConfigError(where, key, f'"{label}" is given twice')
            merged[label] = body
    return merged


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, where, key)
        errors = []
        for option in options:
            try:
                return _convert(option, value, where, key)
            except ConfigError as err:
                errors.append(err.reason)
        raise ConfigError(where, key, "; or ".join(errors))
    if origin is typing.Literal:
        if value in args:
            return value
        choices = ", ".join(f'"{arg}"' if isinstance(arg, str) else repr(arg) for arg in args)
        raise ConfigError(where, key, f"must be one of {choices}, got {_describe(value)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, key, f"expected a list, got {_describe(value)}")
        item_type = args[0] if args else Any
        items = [_convert(item_type, item, where, f"{key}[{index}]") for index, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        key_type, value_type = args if args else (str, Any)
        mapping = _labelled_blocks(value, where, key) if isinstance(value, list) else value
        if not isinstance(mapping, Mapping):
            raise ConfigError(where, key, f"expected a block or map, got {_describe(value)}")
        return {
            _convert(key_type, name, where, f"{key}.{name}"): _convert(value_type, body, where, f"{key}.{name}")
            for name, body in mapping.items()
            if name not in _META_KEYS
        }
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return load_section(tp, _single_block(value, where, key), where=f"{where}: {key}" if where else key)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _convert_enum(tp, value, where, key)
    return _convert_scalar(tp, value, where, key)


def _convert_enum(tp: type[enum.Enum], value: Any, where: str, key: str) -> enum.Enum:
    for member in tp:
        if member.value == value or (
            isinstance(value, str) and isinstance(member.value, str) and member.value.lower() == value.lower()
        ):
            return member
    choices = ", ".join(f'"{member.value}"' for member in tp)
    raise ConfigError(where, key, f"must be one of {choices}, got {_describe(value)}")


def _convert_scalar(tp: Any, value: Any, where: str, key: str) -> Any:
    def wrong() -> ConfigError:
        return ConfigError(where, key, f"expected {_type_name(tp)}, got {_describe(value)}")

    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise wrong()
    if tp is int:
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip(), 10)
            except ValueError:
                raise wrong() from None
        raise wrong()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise wrong() from None
        raise wrong()
    if not isinstance(value, str):
        raise wrong()
    if tp is str:
        return value
    if tp is Path:
        if not value:
            raise ConfigError(where, key, "must not be empty")
        return Path(value)
    if tp is timedelta:
        try:
            return parse_duration(value)
        except ValueError as err:
            raise ConfigError(where, key, str(err)) from None
    if tp is TrustDomain:
        try:
            return TrustDomain.parse(value)
        except SpiffeIdError as err:
            raise ConfigError(where, key, str(err)) from None
    if tp is SpiffeId:
        try:
            return SpiffeId.parse(value)
        except SpiffeIdError as err:
            raise ConfigError(where, key, str(err)) from None
    raise TypeError(f"pyspire.config cannot convert to {tp!r} (field {key})")


def load_section(cls: type[T], raw: Mapping[str, Any], *, where: str = "") -> T:
    """Build the dataclass ``cls`` from ``raw``, or raise :class:`ConfigError`.

    ``where`` prefixes messages (``"server.conf: server"``). Unknown keys, wrong types and
    missing required keys are errors; absent optional keys take the dataclass default.
    A ``__post_init__`` that raises ``ValueError`` is reported as a ConfigError too, so
    cross-field rules live with the dataclass.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(raw, Mapping):
        raise ConfigError(where, None, f"expected a block, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {config_key(field): field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(name for name in raw if name not in fields and name not in _META_KEYS)
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ConfigError(where, unknown[0], f"unknown key (known keys: {known})")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name in raw:
            values[field.name] = _convert(hints[field.name], raw[name], where, name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(where, name, "is required")
    try:
        return cls(**values)
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(where, None, str(err)) from err

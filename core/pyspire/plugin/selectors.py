"""Selectors: the ``type:value`` facts that attestation finds and entries match on."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Selector", "SelectorError"]


class SelectorError(ValueError):
    """A selector string is not of the form ``type:value``."""


@dataclass(frozen=True, order=True, slots=True)
class Selector:
    """One attested fact: ``Selector("unix", "uid:1000")`` is written ``unix:uid:1000``.

    The type is the name of the plugin that produced it; the value is free-form and may
    itself contain colons.
    """

    type: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse the CLI form ``type:value`` (split at the first colon)."""
        selector_type, sep, value = text.partition(":")
        if not sep or not selector_type or not value:
            raise SelectorError(f'selector "{text}" must be of the form type:value, e.g. "unix:uid:1000"')
        return cls(selector_type, value)

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"

"""HCL as SPIRE reads it (hashicorp/hcl v1), from python-hcl2's syntax tree.

python-hcl2 parses HCL 2, a superset of the HCL 1 syntax SPIRE's files are written in, and its
ready-made dict output blurs what HCL 1 keeps apart: an unquoted word arrives as a string, a
heredoc as its literal ``<<EOT`` source, a repeated key silently replaces the first. So this
module walks the tree itself and yields only HCL 1 values:

- strings (escapes decoded; ``${...}`` kept as written, as HCL 1 does), heredocs decoded as
  HCL 1 decodes them (the body with its final newline; ``<<-`` removes the closing marker's
  indentation from every line when each line has it), numbers (a leading ``-`` included),
  ``true``/``false``, lists, objects and blocks;
- anything else (an unquoted word, ``null``, an expression or function call) is refused, as
  HCL 1 refuses it, naming the file, the block, the key and the line;
- a key given twice in one block or object is refused (HCL 1 would merge or pick one
  depending on the target type; either way the operator's intent is unclear).

Blocks come out as python-hcl2's explicit-block shape, which the typed loader understands: a
block is a list of its occurrences, each a mapping marked ``__is_block__``, and a labelled
block ``Type "label" { }`` is ``{label: body}``.
"""

from __future__ import annotations

from typing import Any

import hcl2
from hcl2.rules.abstract import LarkRule
from hcl2.rules.base import AttributeRule, BlockRule, BodyRule
from hcl2.rules.containers import ObjectElemKeyRule, ObjectRule, TupleRule
from hcl2.rules.expressions import ExprTermRule, UnaryOpRule
from hcl2.rules.literal_rules import FloatLitRule, IdentifierRule, IntLitRule, KeywordRule, LiteralValueRule
from hcl2.rules.strings import HeredocTemplateRule, HeredocTrimTemplateRule, StringRule
from hcl2.utils import SerializationOptions

from pyspire.config.schema import ConfigError

__all__ = ["BLOCK_MARKER", "decode_heredoc", "parse_hcl"]

BLOCK_MARKER = "__is_block__"
_VALUE_OPTIONS = SerializationOptions(with_comments=False, strip_string_quotes=True)


def decode_heredoc(token: str) -> str:
    """The value of a heredoc token (``<<EOT\\n...\\nEOT``), as HCL 1 decodes it."""
    marker_line, _, rest = token.partition("\n")
    lines = rest.rstrip("\n").split("\n")
    closing_indent = lines[-1][: len(lines[-1]) - len(lines[-1].lstrip(" \t"))]
    content = lines[:-1]
    if marker_line.startswith("<<-") and all(line.startswith(closing_indent) for line in content):
        content = [line[len(closing_indent) :] for line in content]
    return "".join(f"{line}\n" for line in content)


class _Walker:
    """Turns one document's tree into values; ``source`` names the file in errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: list[str], key: str | None, reason: str) -> ConfigError:
        where = ": ".join([self.source, *path])
        return ConfigError(where, key, reason)

    def body(self, body: BodyRule, path: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        attributes: set[str] = set()
        for child in body.children:
            if isinstance(child, AttributeRule):
                name = str(child.identifier.serialize())
                if name in result:
                    raise self.fail(path, name, f"given twice (again at line {_line(child)}); give it once")
                attributes.add(name)
                result[name] = self.value(child.expression, path, name)
            elif isinstance(child, BlockRule):
                name, occurrence = self.block(child, path)
                if name in attributes:
                    raise self.fail(path, name, f"given both as a key and as a block (line {_line(child)})")
                result.setdefault(name, []).append(occurrence)
        return result

    def block(self, block: BlockRule, path: list[str]) -> tuple[str, Any]:
        name, *labels = [self.label(label) for label in block.labels]
        inner = [*path, " ".join([name, *(f'"{label}"' for label in labels)])]
        occurrence: Any = {**self.body(block.body, inner), BLOCK_MARKER: True}
        for label in reversed(labels):
            occurrence = {label: occurrence}
        return name, occurrence

    def label(self, label: LarkRule) -> str:
        # HCL 1 accepts block labels (object keys) quoted or bare alike.
        return str(label.serialize(_VALUE_OPTIONS))

    def value(self, node: Any, path: list[str], key: str) -> Any:
        if isinstance(node, ExprTermRule) and not node.parentheses:
            return self.value(node.expression, path, key)
        if isinstance(node, StringRule):
            return node.serialize(_VALUE_OPTIONS)
        if isinstance(node, (HeredocTemplateRule, HeredocTrimTemplateRule)):
            return decode_heredoc(str(node.heredoc.value))
        if isinstance(node, (IntLitRule, FloatLitRule)):
            return node.token.serialize()
        if isinstance(node, (LiteralValueRule, KeywordRule)) and str(node.token.value) in ("true", "false"):
            return str(node.token.value) == "true"
        if isinstance(node, TupleRule):
            return [self.value(element, path, f"{key}[{index}]") for index, element in enumerate(node.elements)]
        if isinstance(node, ObjectRule):
            return self.object(node, path, key)
        if isinstance(node, UnaryOpRule) and node.operator.strip() == "-":
            number = self.value(node.expr_term, path, key)
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                return -number
        raise self.not_a_value(node, path, key)

    def object(self, node: ObjectRule, path: list[str], key: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for element in node.elements:
            if not isinstance(element.key, ObjectElemKeyRule) or not isinstance(
                element.key.value, (IdentifierRule, StringRule, IntLitRule)
            ):
                raise self.fail(path, key, f"a computed object key at line {_line(element)} is not HCL 1")
            name = str(element.key.value.serialize(_VALUE_OPTIONS))
            if name in result:
                raise self.fail(path, f"{key}.{name}", f"given twice (again at line {_line(element)}); give it once")
            result[name] = self.value(element.expression, path, f"{key}.{name}")
        return result

    def not_a_value(self, node: Any, path: list[str], key: str) -> ConfigError:
        line = _line(node)
        if isinstance(node, ExprTermRule):
            node = node.expression
        if isinstance(node, IdentifierRule):
            word = str(node.serialize())
            return self.fail(path, key, f'{word} at line {line} is an unquoted word: strings must be quoted ("{word}")')
        if isinstance(node, (LiteralValueRule, KeywordRule)):
            return self.fail(path, key, f"null at line {line} is not a value in SPIRE's HCL; remove the key instead")
        return self.fail(
            path,
            key,
            f"the value at line {line} is an expression; SPIRE's HCL takes only strings, numbers, "
            "true/false, lists, objects and blocks (quote text that holds dots or operators)",
        )


def _line(node: Any) -> str:
    meta = getattr(node, "_meta", None)
    line = getattr(meta, "line", None)
    return str(line) if line is not None else "?"


def parse_hcl(text: str, source: str) -> dict[str, Any]:
    """Parse HCL text into plain values (see the module docstring); ConfigError when invalid."""
    try:
        tree = hcl2.parses(text, discard_comments=True)
    except Exception as err:  # lark raises a family of exceptions; all mean "not valid HCL"
        line, column = getattr(err, "line", None), getattr(err, "column", None)
        where = f" at line {line}, column {column}" if line is not None else ""
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(source, None, f"invalid HCL{where}: {first}") from None
    return _Walker(source).body(tree.body, [])

"""HCL as SPIRE reads it (hashicorp/hcl v1), with a small parser of its own.

SPIRE's files use a handful of HCL 1 forms: ``key = value`` attributes, blocks with zero or
more labels (``NodeAttestor "join_token" { }``), strings, heredocs, numbers, ``true``/``false``,
lists and objects, and ``#``, ``//`` and ``/* */`` comments. This module reads exactly those,
by hand: a general HCL 2 parser (python-hcl2 on lark, used before) cost every daemon, CLI
and ``validate`` start about 0.3 s of CPU loading its grammar tables, for files of a few dozen
lines.

Values come out as HCL 1 gives them:

- strings with their escapes decoded and ``${...}`` kept as written, as HCL 1 does; heredocs
  decoded as HCL 1 decodes them (the body with its final newline; ``<<-`` removes the closing
  marker's indentation from every line when each line has it); numbers (a leading ``-``
  included, ``int`` unless written with a fraction or exponent); ``true``/``false``; lists;
  objects; blocks;
- anything else (an unquoted word, ``null``, an expression or function call) is refused, as
  HCL 1 refuses it, naming the file, the block, the key and the line;
- a key given twice in one block or object is refused (HCL 1 would merge or pick one
  depending on the target type; either way the operator's intent is unclear).

Blocks come out in the shape the typed loader understands: a block is a list of its
occurrences, each a mapping marked ``__is_block__``, and a labelled block
``Type "label" { }`` is ``{label: body}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pyspire.config.schema import ConfigError

__all__ = ["BLOCK_MARKER", "decode_heredoc", "parse_hcl"]

BLOCK_MARKER = "__is_block__"

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-.]*")
_NUMBER = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)")
_HEREDOC_START = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_\-]*)[ \t]*\r?\n")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_PUNCTUATION = "{}[]=,()+-*/%!<>?:&|"


def decode_heredoc(token: str) -> str:
    """The value of a heredoc token (``<<EOT\\n...\\nEOT``), as HCL 1 decodes it."""
    marker_line, _, rest = token.partition("\n")
    lines = rest.rstrip("\n").split("\n")
    closing_indent = lines[-1][: len(lines[-1]) - len(lines[-1].lstrip(" \t"))]
    content = lines[:-1]
    if marker_line.startswith("<<-") and all(line.startswith(closing_indent) for line in content):
        content = [line[len(closing_indent) :] for line in content]
    return "".join(f"{line}\n" for line in content)


def _number(literal: str) -> int | float:
    """HCL 1's number types: an integer unless written with a fraction or an exponent."""
    if literal.lstrip("-")[:2] in ("0x", "0X"):
        return int(literal, 16)
    if any(mark in literal for mark in ".eE"):
        return float(literal)
    return int(literal)


@dataclass(frozen=True)
class _Token:
    kind: str  # "string", "heredoc", "number", "word", "punct" or "end"
    value: Any
    line: int
    column: int

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the file"
        if self.kind == "punct":
            return f"'{self.value}'"
        return f"{self.kind} {self.value!r}"


class _SyntaxError(Exception):
    def __init__(self, line: int, column: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.column = column
        self.reason = reason


class _Scanner:
    """Splits HCL text into tokens; comments and whitespace are dropped."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0
        self.line = 1
        self.line_start = 0

    def tokens(self) -> list[_Token]:
        result: list[_Token] = []
        while True:
            token = self.next()
            result.append(token)
            if token.kind == "end":
                return result

    def fail(self, reason: str, position: int | None = None) -> _SyntaxError:
        at = self.position if position is None else position
        line = self.text.count("\n", 0, at) + 1
        column = at - (self.text.rfind("\n", 0, at) + 1) + 1
        return _SyntaxError(line, column, reason)

    def advance_to(self, position: int) -> None:
        self.line += self.text.count("\n", self.position, position)
        newline = self.text.rfind("\n", self.position, position)
        if newline >= 0:
            self.line_start = newline + 1
        self.position = position

    def skip_blanks(self) -> None:
        text = self.text
        while self.position < len(text):
            char = text[self.position]
            if char in " \t\r\n\ufeff":
                self.advance_to(self.position + 1)
            elif char == "#" or text.startswith("//", self.position):
                end = text.find("\n", self.position)
                self.advance_to(len(text) if end < 0 else end)
            elif text.startswith("/*", self.position):
                end = text.find("*/", self.position + 2)
                if end < 0:
                    raise self.fail("a /* comment is not closed")
                self.advance_to(end + 2)
            else:
                return

    def next(self) -> _Token:
        self.skip_blanks()
        text, start = self.text, self.position
        line, column = self.line, start - self.line_start + 1
        if start >= len(text):
            return _Token("end", None, line, column)
        char = text[start]
        if char == '"':
            value, end = self.string(start)
            self.advance_to(end)
            return _Token("string", value, line, column)
        if text.startswith("<<", start):
            heredoc = _HEREDOC_START.match(text, start)
            if heredoc is None:
                raise self.fail("a heredoc starts with <<MARKER (or <<-MARKER) and a line break")
            end = self.heredoc_end(start, heredoc.end(), heredoc.group(2))
            self.advance_to(end)
            return _Token("heredoc", decode_heredoc(text[start:end]), line, column)
        number = _NUMBER.match(text, start)
        if number is not None and (char != "-" or number.end() > start + 1):
            self.advance_to(number.end())
            return _Token("number", _number(number.group()), line, column)
        word = _WORD.match(text, start)
        if word is not None:
            self.advance_to(word.end())
            return _Token("word", word.group(), line, column)
        if char in _PUNCTUATION:
            self.advance_to(start + 1)
            return _Token("punct", char, line, column)
        raise self.fail(f"unexpected character {char!r}")

    def string(self, start: int) -> tuple[str, int]:
        """A quoted string's value and the position after its closing quote."""
        text, index = self.text, start + 1
        parts: list[str] = []
        while True:
            if index >= len(text) or text[index] == "\n":
                raise self.fail("a string is not closed before the end of its line", start)
            char = text[index]
            if char == '"':
                return "".join(parts), index + 1
            if char == "\\":
                escaped, index = self.escape(index)
                parts.append(escaped)
            elif text.startswith("${", index):
                # An interpolation is kept as written; it may hold quotes of its own.
                end = self.interpolation_end(index)
                parts.append(text[index:end])
                index = end
            else:
                parts.append(char)
                index += 1

    def escape(self, index: int) -> tuple[str, int]:
        text = self.text
        kind = text[index + 1 : index + 2]
        if kind in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[kind], index + 2
        width = {"u": 4, "U": 8, "x": 2}.get(kind)
        if width is not None:
            digits = text[index + 2 : index + 2 + width]
            if len(digits) == width and all(c in "0123456789abcdefABCDEF" for c in digits):
                try:
                    return chr(int(digits, 16)), index + 2 + width
                except ValueError:
                    pass
            raise self.fail(f"invalid \\{kind} escape in a string", index)
        if kind == "":
            raise self.fail("a string is not closed", index)
        # SPIRE's regular expressions and Windows paths: an unknown escape stays as written.
        return text[index : index + 2], index + 2

    def interpolation_end(self, index: int) -> int:
        text, depth, position = self.text, 0, index + 1
        while position < len(text) and text[position] != "\n":
            char = text[position]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return position + 1
            elif char == '"':
                _, position = self.string(position)
                continue
            position += 1
        raise self.fail("a ${ interpolation is not closed before the end of its line", index)

    def heredoc_end(self, start: int, body_start: int, marker: str) -> int:
        """The position after the heredoc's closing marker line (its newline included)."""
        text, position = self.text, body_start
        while position <= len(text):
            end = text.find("\n", position)
            line = text[position : len(text) if end < 0 else end]
            if line.strip(" \t\r") == marker:
                return len(text) if end < 0 else end + 1
            if end < 0:
                break
            position = end + 1
        raise self.fail(f"the heredoc is not closed by a line holding {marker}", start)


class _Parser:
    """Builds values from tokens; ``source`` names the file in errors."""

    def __init__(self, tokens: list[_Token], source: str) -> None:
        self.tokens = tokens
        self.index = 0
        self.source = source

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def is_punct(self, token: _Token, char: str) -> bool:
        return token.kind == "punct" and token.value == char

    def syntax(self, token: _Token, reason: str) -> _SyntaxError:
        return _SyntaxError(token.line, token.column, reason)

    def fail(self, path: list[str], key: str | None, reason: str) -> ConfigError:
        return ConfigError(": ".join([self.source, *path]), key, reason)

    def document(self) -> dict[str, Any]:
        body = self.body([], closing=None)
        end = self.peek()
        if end.kind != "end":
            raise self.syntax(end, f"unexpected {end.describe()}")
        return body

    def key(self, token: _Token) -> str | None:
        if token.kind == "string":
            return str(token.value)
        if token.kind == "word" and "." not in token.value:
            return str(token.value)
        return None

    def body(self, path: list[str], closing: str | None) -> dict[str, Any]:
        result: dict[str, Any] = {}
        attributes: set[str] = set()
        while True:
            token = self.peek()
            if token.kind == "end" or (closing is not None and self.is_punct(token, closing)):
                return result
            name = self.key(token)
            if name is None and self.is_punct(token, "}"):
                raise self.syntax(token, "unexpected '}': no block is open here")
            if name is None:
                raise self.syntax(token, f"expected a key or a block, found {token.describe()}")
            self.take()
            if self.is_punct(self.peek(), "="):
                self.take()
                if name in result:
                    raise self.fail(path, name, f"given twice (again at line {token.line}); give it once")
                attributes.add(name)
                result[name] = self.value(path, name)
                self.end_of_value(path, name)
                if self.is_punct(self.peek(), ","):
                    self.take()
                continue
            labels: list[str] = []
            while (label := self.key(self.peek())) is not None:
                labels.append(label)
                self.take()
            opening = self.peek()
            if not self.is_punct(opening, "{"):
                raise self.syntax(opening, f"expected '=' or a block's '{{' after {name}, found {opening.describe()}")
            if name in attributes:
                raise self.fail(path, name, f"given both as a key and as a block (line {token.line})")
            self.take()
            inner = [*path, " ".join([name, *(f'"{label}"' for label in labels)])]
            occurrence: Any = {**self.body(inner, closing="}"), BLOCK_MARKER: True}
            self.expect_closing("}", opening)
            for label in reversed(labels):
                occurrence = {label: occurrence}
            result.setdefault(name, []).append(occurrence)

    def expect_closing(self, char: str, opening: _Token) -> None:
        token = self.take()
        if not self.is_punct(token, char):
            closes = f"the '{opening.value}' of line {opening.line}"
            raise self.syntax(token, f"expected '{char}' closing {closes}, found {token.describe()}")

    def end_of_value(self, path: list[str], key: str) -> None:
        """A value followed on its line by an operator is an expression HCL 1 lacks.

        The next key may follow on the same line (``{ a = 1 b = 2 }``), as HCL 1 allows.
        """
        value = self.tokens[self.index - 1]
        following = self.peek()
        if following.kind != "punct" or following.line != value.line or following.value in ",}]":
            return
        raise self.expression(path, key, value.line)

    def expression(self, path: list[str], key: str, line: int) -> ConfigError:
        return self.fail(
            path,
            key,
            f"the value at line {line} is an expression; SPIRE's HCL takes only strings, numbers, "
            "true/false, lists, objects and blocks (quote text that holds dots or operators)",
        )

    def value(self, path: list[str], key: str) -> Any:
        token = self.take()
        if token.kind in ("string", "heredoc", "number"):
            return token.value
        if token.kind == "word":
            word = token.value
            if word in ("true", "false"):
                return word == "true"
            if word == "null":
                null = f"null at line {token.line} is not a value in SPIRE's HCL; remove the key instead"
                raise self.fail(path, key, null)
            if "." in word or self.is_punct(self.peek(), "("):
                raise self.expression(path, key, token.line)
            unquoted = f'{word} at line {token.line} is an unquoted word: strings must be quoted ("{word}")'
            raise self.fail(path, key, unquoted)
        if self.is_punct(token, "["):
            return self.list_value(token, path, key)
        if self.is_punct(token, "{"):
            return self.object_value(token, path, key)
        if token.kind == "punct" and token.value not in "]},=":
            raise self.expression(path, key, token.line)
        raise self.syntax(token, f"expected a value for {key}, found {token.describe()}")

    def list_value(self, opening: _Token, path: list[str], key: str) -> list[Any]:
        items: list[Any] = []
        while not self.is_punct(self.peek(), "]"):
            if self.peek().kind == "end":
                break
            element = f"{key}[{len(items)}]"
            items.append(self.value(path, element))
            following = self.peek()
            if self.is_punct(following, ","):
                self.take()
            elif not self.is_punct(following, "]"):
                if following.kind == "punct" and following.value not in "[{}":
                    raise self.expression(path, element, following.line)
                raise self.syntax(following, f"expected ',' or ']' in the list {key}, found {following.describe()}")
        self.expect_closing("]", opening)
        return items

    def object_value(self, opening: _Token, path: list[str], key: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while not self.is_punct(self.peek(), "}"):
            token = self.take()
            if token.kind == "end":
                break
            name = self.key(token) if token.kind != "number" else str(token.value)
            if name is None:
                raise self.syntax(token, f"expected a key in the object {key}, found {token.describe()}")
            if not self.is_punct(self.take(), "="):
                raise self.syntax(token, f"expected '=' after {name} in the object {key}")
            member = f"{key}.{name}"
            if name in result:
                raise self.fail(path, member, f"given twice (again at line {token.line}); give it once")
            result[name] = self.value(path, member)
            self.end_of_value(path, member)
            if self.is_punct(self.peek(), ","):
                self.take()
        self.expect_closing("}", opening)
        return result


def parse_hcl(text: str, source: str) -> dict[str, Any]:
    """Parse HCL text into plain values (see the module docstring); ConfigError when invalid."""
    try:
        return _Parser(_Scanner(text).tokens(), source).document()
    except _SyntaxError as err:
        raise ConfigError(source, None, f"invalid HCL at line {err.line}, column {err.column}: {err.reason}") from None

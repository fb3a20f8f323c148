"""HCL is read as SPIRE's hashicorp/hcl v1 reads it: values, heredocs, refusals, duplicates."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pyspire.config import ConfigError, load_server_config_text
from pyspire.config.hcl import decode_heredoc
from pyspire.config.reader import parse_config_text


def values(body: str) -> dict[str, Any]:
    """The attributes of ``server { <body> }`` without the block marker."""
    document = parse_config_text(f"server {{\n{body}\n}}\n", "server.conf")
    return {key: value for key, value in document["server"][0].items() if key != "__is_block__"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # HCL 1 keeps the body's final newline (hcl/token Value: HEREDOC).
        ("x = <<EOT\nhello\n  world\nEOT", "hello\n  world\n"),
        ("x = <<EOT\nEOT", ""),
        # <<- removes the closing marker's indentation from every line that has it ...
        ("x = <<-EOT\n    hello\n      world\n    EOT", "hello\n  world\n"),
        # ... and leaves the lines alone when one of them is less indented than the marker.
        ("x = <<-EOT\n  hello\n    world\n    EOT", "  hello\n    world\n"),
        ("x = <<PEM\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\nPEM", None),
    ],
)
def test_heredocs_are_decoded_as_hcl1_decodes_them(body: str, expected: str | None) -> None:
    value = values(body)["x"]
    if expected is None:
        assert value == "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    else:
        assert value == expected


def test_decode_heredoc_reads_the_raw_token() -> None:
    assert decode_heredoc("<<-X\n\tline\n\tX\n") == "line\n"


def test_literals_keep_their_hcl1_types() -> None:
    assert values('s = "a\\tb\\"c${VAR}"\nt = true\nf = false\ni = 8081\nn = -3\nr = 1.5\nl = ["a", 2]') == {
        "s": 'a\tb"c${VAR}',
        "t": True,
        "f": False,
        "i": 8081,
        "n": -3,
        "r": 1.5,
        "l": ["a", 2],
    }


def test_objects_and_labelled_blocks_have_the_loaders_shape() -> None:
    document = parse_config_text('plugins {\n  KeyManager disk {}\n  NodeAttestor "x" { o = { k = "v" } }\n}\n', "s")
    plugins = document["plugins"][0]
    assert plugins["KeyManager"] == [{"disk": {"__is_block__": True}}]
    assert plugins["NodeAttestor"] == [{"x": {"o": {"k": "v"}, "__is_block__": True}}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("trust_domain = example", 'server: key "trust_domain": example at line 2 is an unquoted word'),
        ('x = ["a", b]', 'key "x[1]": b at line 2 is an unquoted word: strings must be quoted ("b")'),
        ("trust_domain = example.org", 'key "trust_domain": the value at line 2 is an expression'),
        ('x = upper("a")', 'key "x": the value at line 2 is an expression'),
        ("x = 1 + 2", 'key "x": the value at line 2 is an expression'),
        ("x = (1)", 'key "x": the value at line 2 is an expression'),
        ("x = null", 'key "x": null at line 2 is not a value in SPIRE\'s HCL'),
        ('x = "a"\nx = "b"', 'server: key "x": given twice (again at line 3)'),
        ("x = { a = 1, a = 2 }", 'key "x.a": given twice'),
        ("x = 1\nx {}", 'key "x": given both as a key and as a block'),
    ],
)
def test_what_hcl1_has_no_value_for_is_refused_naming_file_block_key_and_line(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        values(body)
    assert str(caught.value).startswith("server.conf: ")
    assert message in str(caught.value)


def test_nested_paths_are_named() -> None:
    text = 'server {}\nplugins {\n  NodeAttestor "join_token" {\n    plugin_data {\n      a = b\n    }\n  }\n}\n'
    with pytest.raises(
        ConfigError, match=re.escape('server.conf: plugins: NodeAttestor "join_token": plugin_data: key "a"')
    ):
        parse_config_text(text, "server.conf")


def test_duplicate_members_of_a_json_config_are_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape('server.json: key "trust_domain": given twice in one JSON object')):
        parse_config_text('{"server": {"trust_domain": "a.org", "trust_domain": "b.org"}}', "server.json")


def test_a_repeated_key_no_longer_silently_wins() -> None:
    """Before: the second trust_domain replaced the first without a word."""
    text = 'server {\n trust_domain = "a.org"\n trust_domain = "b.org"\n data_dir = "d"\n}\n'
    with pytest.raises(ConfigError, match="given twice"):
        load_server_config_text(text)


def test_hcl1_forms_the_old_hcl2_reader_refused_are_read() -> None:
    """Quoted keys and hexadecimal numbers are HCL 1 (python-hcl2 refused both)."""
    assert values('"trust_domain" = "example.org"\nport = 0x1f') == {"trust_domain": "example.org", "port": 31}


def test_comments_and_several_attributes_on_one_line() -> None:
    text = '# hash\n// slashes\n/* a\nblock */ a = 1 b = "two" /* inline */ c = [1, 2,]  # trailing'
    assert values(text) == {"a": 1, "b": "two", "c": [1, 2]}


def test_interpolations_and_unknown_escapes_are_kept_as_written() -> None:
    assert values(r'x = "${env("HOME")}/a"' + "\n" + r'r = "^a\d+$"') == {"x": '${env("HOME")}/a', "r": r"^a\d+$"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('server {\n  x = "open\n}\n', "line 2, column 7: a string is not closed"),
        ("server {\n  x = <<EOT\nno end\n}\n", "line 2, column 7: the heredoc is not closed"),
        ("server {\n  x = 1\n", "line 3, column 1: expected '}' closing the '{' of line 1"),
        ("server {}\n}\n", "line 2, column 1: unexpected '}'"),
        ("/* open\nserver {}\n", "line 1, column 1: a /* comment is not closed"),
        ("server { x = [1 2] }\n", "expected ',' or ']' in the list x"),
        ('server { x = "\\u12" }\n', "invalid \\u escape"),
    ],
)
def test_syntax_errors_name_line_column_and_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, "server.conf")
    assert str(caught.value).startswith("server.conf: invalid HCL at ")
    assert reason in str(caught.value)

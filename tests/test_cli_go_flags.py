"""Go's flag syntax in both command lines, as SPIRE's Go programs read it (CliParser, in process).

``--flag`` is ``-flag``; a boolean flag takes ``-flag=true|false`` (and strconv.ParseBool's
other spellings); anything else after ``=`` is refused naming the flag. Arguments after
``--`` are not rewritten. tests/interop/differential/test_server_cli.py runs the same lines
through spire-server beside pyspire-server.
"""

from __future__ import annotations

import pytest
from pyspire.command_line import CliParser


def parser() -> CliParser:
    top = CliParser(prog="tool")
    commands = top.add_subparsers(dest="command", parser_class=CliParser)
    create = commands.add_parser("create")
    create.add_argument("-spiffeID", dest="spiffe_id")
    create.add_argument("-admin", action="store_true")
    create.add_argument("rest", nargs="*")
    return top


@pytest.mark.parametrize(
    ("argv", "spiffe_id", "admin"),
    [
        (["create", "--spiffeID", "spiffe://td/a"], "spiffe://td/a", False),
        (["create", "--spiffeID=spiffe://td/a", "--admin"], "spiffe://td/a", True),
        (["create", "-admin=false"], None, False),
        (["create", "-admin=true"], None, True),
        (["create", "-admin=1"], None, True),
        (["create", "-admin=F"], None, False),
        (["create", "-admin=TRUE", "-spiffeID=x=y"], "x=y", True),
    ],
)
def test_go_flag_syntax_is_read_as_go_reads_it(argv: list[str], spiffe_id: str | None, admin: bool) -> None:
    args = parser().parse_args(argv)
    assert (args.spiffe_id, args.admin) == (spiffe_id, admin)


def test_a_boolean_flag_with_another_value_is_refused_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["create", "-admin=maybe"])
    assert exited.value.code == 1
    assert 'invalid boolean value "maybe" for -admin: parse error' in capsys.readouterr().err


def test_arguments_after_a_double_dash_are_left_alone() -> None:
    args = parser().parse_args(["create", "--", "--admin", "-admin=false"])
    assert (args.admin, args.rest) == (False, ["--admin", "-admin=false"])

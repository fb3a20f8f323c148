"""The suite's file order: listed files first, longest first, the rest as collected."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tests.support.file_order import longest_first, read_seconds


@dataclass
class _Item:
    nodeid: str


def _ordered(nodeids: list[str], seconds: dict[str, float]) -> list[str]:
    items = cast("list[Any]", [_Item(nodeid) for nodeid in nodeids])
    return [item.nodeid for item in longest_first(items, seconds)]


def test_listed_files_go_first_longest_first_and_tests_keep_their_order_within_a_file() -> None:
    nodeids = ["a.py::one", "b.py::one", "a.py::two", "c.py::one", "d.py::one", "c.py::two"]
    assert _ordered(nodeids, {"c.py": 30.0, "b.py": 10.0}) == [
        "c.py::one",
        "c.py::two",
        "b.py::one",
        "a.py::one",
        "a.py::two",
        "d.py::one",
    ]


def test_without_a_list_files_keep_the_order_they_were_collected_in() -> None:
    nodeids = ["b.py::one", "a.py::one", "b.py::two"]
    assert _ordered(nodeids, {}) == ["b.py::one", "b.py::two", "a.py::one"]


def test_the_list_reads_seconds_and_paths_and_skips_comments(tmp_path: Path) -> None:
    listed = tmp_path / "file_seconds.txt"
    listed.write_text("# a comment\n12.5 tests/a.py\n\n3 plugins/x/tests/b.py\n")
    assert read_seconds(listed) == {"tests/a.py": 12.5, "plugins/x/tests/b.py": 3.0}
    assert read_seconds(tmp_path / "absent.txt") == {}

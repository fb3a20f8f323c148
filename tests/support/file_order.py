"""The order test files are handed to xdist's workers: the longest first.

With ``--dist loadfile`` each file runs whole on one worker, handed out in collection order.
Collected alphabetically, the longest files (plugins' end-to-end tests, tens of seconds each)
came last, and the run ended with one worker busy for minutes while the other sat idle. Files
listed in ``tests/file_seconds.txt`` (seconds and path, from a recent run) go first, longest
first; the rest keep their order after them. A stale list only costs balance, never a test.

Refresh the list from a run's JUnit report (``.ci/test --junitxml=run.xml``) with
``python -m tests.support.file_order run.xml > tests/file_seconds.txt``.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

SECONDS_FILE = Path(__file__).resolve().parents[1] / "file_seconds.txt"
LISTED = 120
"""How many files the list keeps: the short ones balance themselves."""


def read_seconds(path: Path = SECONDS_FILE) -> dict[str, float]:
    """Path (relative to the repository) to seconds, from the list; empty when there is none."""
    seconds: dict[str, float] = {}
    if not path.exists():
        return seconds
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        value, _, name = line.partition(" ")
        seconds[name.strip()] = float(value)
    return seconds


def longest_first(items: list[pytest.Item], seconds: dict[str, float]) -> list[pytest.Item]:
    """``items`` with the listed files' tests first, longest file first; stable otherwise."""
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(item.nodeid.split("::", 1)[0], index)

    def key(item: pytest.Item) -> tuple[float, int]:
        name = item.nodeid.split("::", 1)[0]
        return (-seconds.get(name, 0.0), first_seen[name])

    return sorted(items, key=key)


def seconds_from_junit(report: Path) -> Counter[str]:
    """Seconds per test file in a JUnit report written by pytest."""
    per_file: Counter[str] = Counter()
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "")
        parts = module.split(".")
        # classname is the dotted module, then the class if any: find the longest prefix that is a file.
        for end in range(len(parts), 0, -1):
            candidate = "/".join(parts[:end]) + ".py"
            if (SECONDS_FILE.parents[1] / candidate).exists():
                per_file[candidate] += float(case.get("time", "0"))
                break
    return per_file


def main(argv: Sequence[str]) -> int:
    per_file = seconds_from_junit(Path(argv[0]))
    print("# seconds per test file in a full run, longest first (see tests/support/file_order.py)")
    for name, seconds in per_file.most_common(LISTED):
        print(f"{seconds:.1f} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Every example of docs/workload-library.md runs, unchanged, against a real agent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.identities import SERVER, Deployment

DOC = Path(__file__).resolve().parents[2] / "docs" / "workload-library.md"
EXAMPLES = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.DOTALL | re.MULTILINE)
FRAMEWORKS = ("asyncio", "grpclib", "httpx", "requests", "aiohttp")


def test_the_guide_has_an_example_for_each_framework() -> None:
    for framework in FRAMEWORKS:
        assert any(re.search(rf"^(import|from) {framework}\b", e, re.MULTILINE) for e in EXAMPLES), framework


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example-{n}" for n in range(len(EXAMPLES))])
def test_the_example_runs(example: str, deployment: Deployment, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SPIFFE_ENDPOINT_SOCKET": deployment.agent.address},
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # The examples run as this process, whose default identity is /server.
    assert SERVER in result.stdout, result.stdout

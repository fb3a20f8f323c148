"""The README's first command, run as a newcomer would (in a scratch directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quickstart_runs_server_agent_and_workload(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYSPIRE_VENV": sys.prefix,  # reuse the suite's virtualenv instead of building .venv
        "PYSPIRE_QUICKSTART_DIR": str(tmp_path / "quickstart"),
    }
    result = subprocess.run(
        [str(REPO / "contrib" / "quickstart.sh")], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SPIFFE ID:\t\tspiffe://example.org/quickstart/workload" in output
    assert "SVID is valid." in output
    assert "Quickstart complete" in output
    assert not list((tmp_path / "quickstart").glob("*.pid"))

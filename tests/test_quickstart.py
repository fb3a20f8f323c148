"""The README's first command, run as a newcomer would (in a scratch directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _layered_virtualenv(path: Path) -> Path:
    """A virtualenv that sees the suite's packages but installs into itself.

    The quickstart runs ``pip install -e`` into the virtualenv it is given. Pointed at the suite's
    own, that reinstall rewrote ``pyspire-server`` while other tests were starting it, and one
    failed with "No such file or directory". Over a path entry to the suite's site-packages the
    dependencies are found already installed (the install stays quick and offline) while the
    editable installs and console scripts land here.
    """
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(path)], check=True)
    layer = subprocess.run(
        [str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(layer) / "pyspire-suite.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path


def test_quickstart_runs_server_agent_and_workload(tmp_path: Path) -> None:
    venv = _layered_virtualenv(tmp_path / "venv")
    suite_script = Path(sys.executable).parent / "pyspire-server"
    before = suite_script.stat().st_ino
    env = {
        **os.environ,
        "PYSPIRE_VENV": str(venv),
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
    assert (venv / "bin" / "pyspire-server").exists()
    # Regression: the suite's console script was rewritten under the tests running beside this one.
    assert suite_script.stat().st_ino == before

"""A file pyspire replaces (the agent's SVID and bundle, keys, written bundles) survives a crash mid-write.

Reliability case 21: a writer killed at any moment leaves the previous version or the new one,
whole, never a truncated mix. A real process writes one large document over and over and is
killed with SIGKILL at varied points of its loop; after each kill the file must parse and be one
of the versions written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WRITER = """
import json, sys
from pathlib import Path
from pyspire.files import atomic_write

path = Path(sys.argv[1])
version = int(sys.argv[2])
print("ready", flush=True)
while True:
    version += 1
    atomic_write(path, json.dumps({"version": version, "padding": "x" * 4_000_000}).encode())
"""


def test_a_writer_killed_mid_write_leaves_a_whole_version(tmp_path: Path) -> None:
    target = tmp_path / "agent-data.json"
    target.write_text(json.dumps({"version": 0, "padding": ""}))
    os.chmod(target, 0o600)
    last = 0
    for attempt in range(12):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target), str(last * 1000)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        assert writer.stdout.readline() == "ready\n"
        time.sleep(0.05 + 0.037 * attempt)  # a different point of the write each time
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        document = json.loads(target.read_text())  # never a torn file
        assert document["version"] == 0 or document["padding"] == "x" * 4_000_000
        last = document["version"] // 1000 + 1
        assert target.stat().st_mode & 0o777 == 0o600
    assert last > 1, "no write completed before a kill: the test showed nothing"

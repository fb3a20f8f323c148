"""A spire-server and a pyspire-server started from one config, for the differential corpus.

Both live for the module (each corpus module gets a fresh pair): every case makes the same
calls on both, so their datastores hold the same records whichever cases ran before.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemons import ServerDaemon, start_server


@pytest.fixture(scope="module")
def server_pair(tmp_path_factory: pytest.TempPathFactory, spire_server_bin: Path) -> Iterator[dict[str, ServerDaemon]]:
    directory = tmp_path_factory.mktemp("differential")
    spire = start_server(directory / "spire", executable=spire_server_bin, log_level="WARN")
    try:
        pyspire = start_server(directory / "pyspire", log_level="WARN")
    except BaseException:
        spire.stop()
        raise
    yield {"spire": spire, "pyspire": pyspire}
    pyspire.stop()
    spire.stop()

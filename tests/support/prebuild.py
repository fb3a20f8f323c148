"""Build the tools the suite builds from package registries before its tests ask for them.

``python3 -m tests.support.prebuild`` (standard library only: it runs before the virtualenv
exists) builds SPIRE, the go-spiffe peer, fake-gcs-server and the OpenTelemetry Collector one
after another, and the java-spiffe peer beside them. On a fresh machine a cold SPIRE build
spends its first two minutes downloading modules with the CPUs idle, then four compiling.
``.ci/run`` and ``.ci/test`` start this in the background first, so the downloads overlap with
the virtualenv and the database servers and the compiling with the tests that need nothing built
(tests/support/peer_builds.py orders those first). Nothing here decides an outcome: the tests
take the builds through the same cache and locks (tests/support/peers.py), wait for one still
running, and report a failed one themselves.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from tests.support import otelcol, peers

BUILDS: dict[str, Callable[[], peers.BuiltPeer]] = {
    "spire": peers.spire,
    "go-peer": peers.go_peer,
    "fake-gcs-server": peers.fake_gcs_server,
    "otelcol": otelcol.collector,
    "java-peer": peers.java_peer,
}
"""Every build, by the name ``needs_build`` marks give it (tests/support/peer_builds.py)."""

_GO = ("spire", "go-peer", "fake-gcs-server", "otelcol")
"""The Go builds, run one after another, SPIRE first (most tests wait for it): side by side, each
would compile the standard library and the modules they share for itself."""


def _build_each(names: tuple[str, ...]) -> None:
    for name in names:
        started = time.monotonic()
        try:
            BUILDS[name]()
        except (peers.PeerBuildError, OSError) as err:
            print(f"prebuild: {name} failed after {time.monotonic() - started:.0f} s: {err}", flush=True)
        else:
            print(f"prebuild: {name} ready after {time.monotonic() - started:.0f} s", flush=True)


def main() -> int:
    others = tuple(name for name in BUILDS if name not in _GO)
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(_build_each, (_GO, others)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

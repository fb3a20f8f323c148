"""The peer implementations the interop tests run beside pyspire, built from package registries.

- ``spire-server`` and ``spire-agent`` of SPIRE_VERSION, from the Go module proxy. The module
  cannot be ``go install``-ed with a version, so a throwaway module requires both commands as
  tools and ``go install`` builds them.
- ``go-peer``: a Workload API client on go-spiffe (tests/peers/go).
- ``java-peer``: a Workload API client on java-spiffe (tests/peers/java), built with Maven.

Everything built is cached outside the checkout, under
``${XDG_CACHE_HOME:-~/.cache}/pyspire/peers/<name>-<key>/``, keyed by version (and by a hash of
our own sources for the clients), so a second run on the same machine, CI included, builds
nothing. A build holds a file lock (parallel pytest workers wait for one build instead of
racing), writes its output to ``build.log`` in the cache, and records its wall time in
``build-seconds``. A failed build raises PeerBuildError naming the log; the pytest fixtures turn
it into a failure under CI=true and a skip (with the reason) elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SPIRE_VERSION = "v1.13.3"
"""The newest SPIRE the Go module proxy serves here (the v1.15 line is refused with 403)."""

GO_SPIFFE_VERSION = "v2.9.0"
"""The go-spiffe release tests/peers/go/go.mod requires (kept in step with it by a test)."""

JAVA_SPIFFE_VERSION = "0.8.17"
"""The java-spiffe release tests/peers/java/pom.xml uses (the newest Maven Central serves here)."""

PEER_SOURCES = Path(__file__).resolve().parent.parent / "peers"

BUILD_TIMEOUT = 3600.0
"""A cold SPIRE build compiles about two thousand packages; on two busy cores that took over 30 min."""


class PeerBuildError(RuntimeError):
    """A peer could not be built; the message names the step and the log holding its output."""


def cache_root() -> Path:
    """Where built peers are kept: outside any checkout, shared by every run on this machine."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pyspire" / "peers"


@dataclass(frozen=True)
class BuiltPeer:
    """A peer's cache directory once its build completed."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def build_seconds(self) -> float:
        """The wall time of the build that filled this directory (a cold build's cost)."""
        return float((self.directory / "build-seconds").read_text())


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_logged(argv: Sequence[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> None:
    """Run one build step with its output appended to ``log``; PeerBuildError (with the log's tail) if it fails."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}   (in {cwd})\n")
        out.flush()
        try:
            result = subprocess.run(
                list(argv), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=BUILD_TIMEOUT, check=False
            )
        except FileNotFoundError as err:
            raise PeerBuildError(f"{argv[0]} is not installed ({err}); see {log}") from err
        except subprocess.TimeoutExpired as err:
            raise PeerBuildError(f"{' '.join(argv)} did not finish within {BUILD_TIMEOUT} s; see {log}") from err
    if result.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise PeerBuildError(f"{' '.join(argv)} failed with exit code {result.returncode}; see {log}:\n{tail}")


def cached_build(
    name: str, key: str, outputs: Sequence[str], build: Callable[[Path, Path], None], *, prune: bool = False
) -> BuiltPeer:
    """``build(staging, log)`` once per (name, key); later calls find its outputs in the cache.

    ``prune`` removes the builds of other keys once this one is in place (our own clients: an
    edit of their sources leaves the old build useless).
    """
    root = cache_root()
    final = root / f"{name}-{key}"
    if all((final / output).exists() for output in outputs):
        return BuiltPeer(final)
    with _lock(root / f"{name}-{key}.lock"):
        if all((final / output).exists() for output in outputs):
            return BuiltPeer(final)  # another worker built it while this one waited
        staging = Path(tempfile.mkdtemp(prefix=f"{name}-{key}.", dir=root))
        log = staging / "build.log"
        started = time.monotonic()
        try:
            build(staging, log)
            missing = [output for output in outputs if not (staging / output).exists()]
            if missing:
                raise PeerBuildError(f"building {name} {key} produced no {', '.join(missing)}; see {log}")
        except PeerBuildError:
            failed = root / f"{name}-{key}.failed.log"
            shutil.copyfile(log, failed)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        (staging / "build-seconds").write_text(f"{time.monotonic() - started:.1f}\n")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        if prune:
            for other in root.glob(f"{name}-*"):
                if other != final and other.is_dir() and not other.name.startswith(f"{name}-{key}"):
                    shutil.rmtree(other, ignore_errors=True)
    return BuiltPeer(final)


GO_BUILD_FLAGS = ("-ldflags=-s -w", "-gcflags=all=-dwarf=false")
"""Every Go build here leaves out the symbol table and debug information, which no test reads.

SPIRE's own release builds link with ``-s -w``; not generating DWARF while compiling as well
saves a tenth of a cold build's CPU (the machine code is the same).
"""

FAKE_BUILD_FLAGS = ("-ldflags=-s -w", "-gcflags=all=-N -l -dwarf=false")
"""For the stand-ins of other services (fake-gcs-server, the OpenTelemetry Collector), which
tests only talk to: not optimised either, a fifth less CPU to build. SPIRE and the go-spiffe peer,
whose behaviour and speed pyspire is measured against, are built as their releases are."""


def go_env(work: Path) -> dict[str, str]:
    """The environment of a Go build: the machine's module cache, no VCS stamping, this toolchain."""
    return {**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local", "GOBIN": str(work)}


SPIRE_COMMANDS = ("spire-server", "spire-agent")


def spire(version: str = SPIRE_VERSION) -> BuiltPeer:
    """SPIRE's ``spire-server`` and ``spire-agent`` of ``version``, built from the Go module proxy."""

    def build(staging: Path, log: Path) -> None:
        module = staging / "module"
        module.mkdir()
        env = go_env(staging)
        run_logged(["go", "mod", "init", "pyspire.test/spire-peer"], module, log, env)
        for command in SPIRE_COMMANDS:
            run_logged(["go", "get", "-tool", f"github.com/spiffe/spire/cmd/{command}@{version}"], module, log, env)
        commands = (f"github.com/spiffe/spire/cmd/{c}" for c in SPIRE_COMMANDS)
        run_logged(["go", "install", *GO_BUILD_FLAGS, *commands], module, log, env)
        shutil.rmtree(module)

    return cached_build("spire", version, SPIRE_COMMANDS, build)


def spire_source(version: str = SPIRE_VERSION) -> Path:
    """SPIRE's module source of ``version`` (read-only, in the Go module cache): its config corpus.

    ``conf/`` and ``test/integration/`` hold the server and agent configs SPIRE ships and tests
    with; the validate corpus reads them where Go keeps them instead of copying them here.
    """
    try:
        found = subprocess.run(
            ["go", "mod", "download", "-json", f"github.com/spiffe/spire@{version}"],
            capture_output=True,
            text=True,
            env=go_env(Path(tempfile.gettempdir())),
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PeerBuildError(f"cannot download SPIRE {version}'s source: {err}") from None
    if found.returncode != 0:
        raise PeerBuildError(f"cannot download SPIRE {version}'s source: {found.stderr.strip() or found.stdout}")
    return Path(json.loads(found.stdout)["Dir"])


def _sources_key(directory: Path, *extra: str) -> str:
    """A short hash of our own sources of a peer (and ``extra``): an edit rebuilds it."""
    digest = hashlib.sha256()
    for value in extra:
        digest.update(value.encode() + b"\0")
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _go_version() -> str:
    try:
        return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as err:
        raise PeerBuildError(f"cannot run the Go toolchain: {err}") from err


def go_peer() -> BuiltPeer:
    """``go-peer``: tests/peers/go built against the go-spiffe release its go.mod requires."""
    source = PEER_SOURCES / "go"

    def build(staging: Path, log: Path) -> None:
        work = staging / "src"
        shutil.copytree(source, work)
        env = {**go_env(staging), "GOFLAGS": "-buildvcs=false -mod=readonly"}
        run_logged(["go", "build", *GO_BUILD_FLAGS, "-o", str(staging / "go-peer"), "."], work, log, env)
        shutil.rmtree(work)

    return cached_build("go-peer", _sources_key(source, _go_version()), ["go-peer"], build, prune=True)


JAVA_MAIN = "test.pyspire.Peer"


def java_peer() -> BuiltPeer:
    """``java-peer``: tests/peers/java built with Maven; run through the ``java-peer`` launcher it leaves."""
    source = PEER_SOURCES / "java"

    def build(staging: Path, log: Path) -> None:
        work = staging / "src"
        shutil.copytree(source, work)
        run_logged(
            ["mvn", "-B", "-q", "package", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={staging / 'lib'}"],
            work, log,
        )  # fmt: skip
        shutil.copyfile(work / "target" / "java-peer.jar", staging / "lib" / "java-peer.jar")
        shutil.rmtree(work)
        launcher = staging / "java-peer"
        java = shutil.which("java") or "java"
        launcher.write_text(f'#!/bin/sh\nexec "{java}" -cp "$(dirname "$0")/lib/*" {JAVA_MAIN} "$@"\n')
        launcher.chmod(0o755)

    return cached_build("java-peer", _sources_key(source), ["java-peer", "lib/java-peer.jar"], build, prune=True)


FAKE_GCS_VERSION = "v1.56.1"
"""The fake-gcs-server release the GCS plugins' tests run against (tests/support/fake_gcs.py)."""


def fake_gcs_server(version: str = FAKE_GCS_VERSION) -> BuiltPeer:
    """``fake-gcs-server`` of ``version``, the Cloud Storage emulator, built from the Go module proxy."""

    def build(staging: Path, log: Path) -> None:
        module = f"github.com/fsouza/fake-gcs-server@{version}"
        run_logged(["go", "install", *FAKE_BUILD_FLAGS, module], staging, log, go_env(staging))

    return cached_build("fake-gcs-server", version, ["fake-gcs-server"], build)

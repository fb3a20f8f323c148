"""The workload library as its own distribution: pyspire-spiffe (core/pyproject.toml).

- The operator's wheel and the library's split the ``pyspire`` package between them: no file
  in both, none in neither, and the operator's depends on the library.
- ``pip install ./core`` into an empty virtualenv pulls no server or agent dependency, and the
  library works there, on the oldest protobuf it allows, against a real agent: an X509Source,
  a mutual TLS handshake through the tls contexts, a JWT-SVID fetched and validated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.identities import CLIENT, SERVER, Deployment

REPO = Path(__file__).resolve().parents[2]
LIBRARY_FILES = (
    "pyspire/__init__.py",
    "pyspire/py.typed",
    "pyspire/spiffe/",
    "pyspire/proto/__init__.py",
    "pyspire/proto/spiffe/",
)
SERVER_SIDE = {"sqlalchemy", "alembic", "xds-protos", "grpcio", "pluggy", "prometheus-client"}
OLDEST_PROTOBUF = "3.20.0"


def _wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if ".dist-info/" not in name}


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name).decode().splitlines()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            ".",
            "./core",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {
        "operator": next(out.glob("pyspire-*.whl")),
        "library": next(out.glob("pyspire_spiffe-*.whl")),
    }


def test_the_two_wheels_split_the_package_and_the_operators_needs_the_library(wheels: dict[str, Path]) -> None:
    operator, library = _wheel_files(wheels["operator"]), _wheel_files(wheels["library"])
    assert operator.isdisjoint(library)
    tracked = subprocess.run(
        ["git", "ls-files", "core/pyspire"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split()
    assert operator | library == {path.removeprefix("core/") for path in tracked}
    assert library == {path for path in operator | library if path.startswith(LIBRARY_FILES)}
    assert "pyspire/spiffe/tls.py" in library
    assert "pyspire/server/daemon.py" in operator

    requirements = [
        line.split(": ", 1)[1] for line in _metadata(wheels["operator"]) if line.startswith("Requires-Dist")
    ]
    assert f"pyspire-spiffe @ {(REPO / 'core').as_uri()}" in requirements
    versions = {
        tomllib.loads((REPO / p).read_text())["project"]["version"] for p in ("pyproject.toml", "core/pyproject.toml")
    }
    assert len(versions) == 1, f"the two distributions must carry one version: {versions}"


WORKLOAD = textwrap.dedent(
    """
    import json, socket, sys, threading
    import google.protobuf
    from pyspire.spiffe import BlockingWorkloadApiClient, JwtSource, X509Source, tls

    def pick(hint):
        return lambda svids: next(s for s in svids if s.hint == hint)

    result = {"protobuf": google.protobuf.__version__}
    try:
        import pyspire.server
    except ModuleNotFoundError:
        result["server_code"] = False
    with X509Source(picker=pick("server")) as server_source, X509Source(picker=pick("client")) as client_source:
        server = tls.server_context(server_source, tls.authorize_id(sys.argv[2]))
        client = tls.client_context(client_source, tls.authorize_id(sys.argv[1]))
        listener = server.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
        def serve():
            connection, _ = listener.accept()
            result["server_saw"] = str(tls.peer_spiffe_id(connection))
            connection.sendall(connection.recv(10))
            connection.close()
        thread = threading.Thread(target=serve)
        thread.start()
        with client.wrap_socket(socket.create_connection(listener.getsockname()), server_hostname="x") as connection:
            connection.sendall(b"ping")
            result["echo"] = connection.recv(10).decode()
            result["client_saw"] = str(tls.peer_spiffe_id(connection))
        thread.join()
    with JwtSource() as jwt_source:
        token = jwt_source.fetch_svid("billing").token
        result["jwt"] = str(jwt_source.validate(token, "billing").spiffe_id)
    with BlockingWorkloadApiClient() as client:  # claims come back through protobuf's json_format
        spiffe_id, claims = client.validate_jwt_svid(token, "billing")
        result["agent_validated"] = [str(spiffe_id), claims["aud"]]
    print(json.dumps(result))
    """
)


@pytest.mark.slow
def test_the_library_installs_alone_and_works_on_the_oldest_protobuf(tmp_path: Path, deployment: Deployment) -> None:
    environment = tmp_path / "workload"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(REPO / "core"), f"protobuf=={OLDEST_PROTOBUF}"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"], check=True, capture_output=True, text=True
    ).stdout
    installed = {item["name"].lower().replace("_", "-") for item in json.loads(listed)}
    assert "pyspire-spiffe" in installed
    assert not installed & (SERVER_SIDE | {"pyspire"}), installed & (SERVER_SIDE | {"pyspire"})

    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    run = subprocess.run(
        [str(python), str(script), SERVER, CLIENT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SPIFFE_ENDPOINT_SOCKET": deployment.agent.address, "PYTHONPATH": ""},
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "protobuf": OLDEST_PROTOBUF,
        "server_code": False,
        "server_saw": CLIENT,
        "echo": "ping",
        "client_saw": SERVER,
        "jwt": SERVER,
        "agent_validated": [SERVER, ["billing"]],
    }


@pytest.mark.slow
def test_pip_install_dot_still_installs_everything_in_one_command_and_nothing_that_clashes(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            ".[opentelemetry]",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=600,
    )
    chosen = {
        item["metadata"]["name"].lower(): item["download_info"]["url"]
        for item in json.loads(report.read_text())["install"]
    }
    assert chosen["pyspire"] == REPO.as_uri()
    assert chosen["pyspire-spiffe"] == (REPO / "core").as_uri()  # from the checkout, not an index
    assert {"sqlalchemy", "alembic", "opentelemetry-proto"} <= set(chosen)
    # Regression: xds-protos installs an old copy of opentelemetry/proto over opentelemetry-proto's
    # files, and the OTLP exporters could not start. The agent's SDS messages are its own now.
    assert "xds-protos" not in chosen


def test_a_wheel_built_from_the_operators_sdist_requires_the_library_by_version(tmp_path: Path) -> None:
    # A release builds its wheel from the sdist, where no core/pyproject.toml is: the dependency
    # is then the library at the same version, from the index.
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    [sdist] = tmp_path.glob("pyspire-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        archive.extractall(tmp_path, filter="data")
    top = names[0].split("/")[0]
    assert [n for n in names if n.endswith("pyproject.toml")] == [f"{top}/pyproject.toml"]  # no plugin's, no core's
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "out"), str(tmp_path / top)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [wheel] = (tmp_path / "out").glob("pyspire-*.whl")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f"Requires-Dist: pyspire-spiffe=={version}" in _metadata(wheel)

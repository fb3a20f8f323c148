"""What installing the workload library costs on disk, next to py-spiffe and the operator's install (issue 14).

Each install goes into a fresh virtualenv with one pip command; the footprint is the disk usage
of its site-packages (as ``du`` counts it) minus that of the same virtualenv before the install
(pip and setuptools alone), so only what the command brought in is counted. The whole
virtualenv's size is given too: that is how issue 14 measured py-spiffe's 71 MB and pyspire's
136 MB.

- ``pip install ./core``: pyspire-spiffe, the workload library;
- ``pip install spiffe``: py-spiffe (its Workload API client pulls grpcio);
- ``pip install spiffe spiffe-tls``: py-spiffe with its TLS helper (pyOpenSSL);
- ``pip install .``: the operator's pyspire (server, agent, and the library).

Target: the workload library at most py-spiffe's footprint. Run:
python bench/library_footprint.py [--write]   (needs the package index)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import venv
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import update_section  # noqa: E402

SERVER_SIDE = ("sqlalchemy", "alembic", "xds-protos", "grpcio")
INSTALLS = {
    "pyspire-spiffe (`pip install ./core`)": [str(REPO / "core")],
    "py-spiffe (`pip install spiffe`)": ["spiffe"],
    "py-spiffe with spiffe-tls (`pip install spiffe spiffe-tls`)": ["spiffe", "spiffe-tls"],
    "pyspire, the operator's (`pip install .`)": [str(REPO)],
}


def disk_usage(directory: Path) -> int:
    """Bytes of disk the files under ``directory`` occupy (512-byte blocks, as du counts)."""
    return sum(path.lstat().st_blocks * 512 for path in directory.rglob("*") if not path.is_symlink())


def site_packages(environment: Path) -> Path:
    return next((environment / "lib").glob("python3*/site-packages"))


def measure(requirements: list[str], scratch: Path) -> tuple[float, float, list[str]]:
    """MiB a fresh virtualenv's site-packages grows by when pip installs ``requirements``, MiB of the
    whole virtualenv then, and what it installed."""
    environment = scratch / "venv"
    venv.create(environment, with_pip=True, clear=True)
    python = str(environment / "bin" / "python")
    before = disk_usage(site_packages(environment))
    before_list = {item["name"] for item in _listed(python)}
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-cache-dir", *requirements],
        check=True,
        timeout=1800,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    grown = disk_usage(site_packages(environment)) - before
    installed = sorted(
        f"{item['name']} {item['version']}" for item in _listed(python) if item["name"] not in before_list
    )
    return grown / 2**20, disk_usage(environment) / 2**20, installed


def _listed(python: str) -> list[dict[str, str]]:
    out = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"], check=True, capture_output=True, text=True
    ).stdout
    return list(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    results: dict[str, tuple[float, float, list[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="pyspire-footprint-") as scratch:
        for name, requirements in INSTALLS.items():
            results[name] = measure(requirements, Path(scratch))
            print(f"{name}: {results[name][0]:.1f} MiB, {len(results[name][2])} distributions", flush=True)

    library_name, spiffe_name = list(INSTALLS)[:2]
    library_packages = results[library_name][2]
    pyspiffe = results[spiffe_name][0]
    server_side = [p for p in library_packages if p.split()[0].lower() in SERVER_SIDE]
    table = [
        "| install | added to site-packages | whole virtualenv | distributions | target |",
        "|---|---|---|---|---|",
    ]
    for name, (size, whole, packages) in results.items():
        target = ""
        if name == library_name:
            target = "met" if size <= pyspiffe and not server_side else "NOT MET"
        table.append(f"| {name} | {size:.1f} MiB | {whole:.1f} MiB | {len(packages)} | {target} |")
    body = "\n".join(
        [
            "Target (issue 14): the workload library installs with one pip command, pulls no server or agent",
            "dependency (SQLAlchemy, Alembic, the HCL parser, xds-protos, grpcio) and takes at most py-spiffe's space.",
            "",
            *table,
            "",
            f"The library's install: {', '.join(library_packages)}.",
            "",
            f"Disk usage (du's count) of what one `pip install` added to a fresh virtualenv's site-packages, "
            f"and of the whole virtualenv after it; "
            f"Python {platform.python_version()}, {platform.machine()}, wheels for this platform; "
            f"{datetime.now(UTC):%Y-%m-%d}",
        ]
    )
    print(body)
    if args.write:
        update_section("Workload library footprint (bench/library_footprint.py)", body)


if __name__ == "__main__":
    main()

"""The plugin starter: one package of each type, generated, linted, installed, listed and tested.

The packages are written by the real ``plugins new`` commands, built and installed by pip
(into a target folder put on ``PYTHONPATH``, so the test environment's own plugins are left
alone), found by ``plugins`` under their type, and their generated tests (the contract
suites) are run by pytest in each package's folder, as an integrator would run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pyspire.plugin.starter import STARTERS, StarterError, write_starter
from pyspire.plugin.types import PLUGIN_TYPES

from tests.support.daemons import console_script

NAMES = {key: f"kit_{key[0]}_{key[1].lower()}" for key in STARTERS}
"""One plugin per (role, type) the starter offers, each with a name of its own."""


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, (
        f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Every starter package, written by the CLI and installed into a target folder: (packages, site)."""
    root = tmp_path_factory.mktemp("starters")

    def new(key: tuple[str, str]) -> None:
        (role, type_name), name = key, NAMES[key]
        written = run([console_script(f"pyspire-{role}"), "plugins", "new", type_name, name, "-dir", str(root)])
        assert f"Wrote {root / ('pyspire-' + name.replace('_', '-'))}" in written.stdout

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(new, NAMES))
    site = root / "site"
    packages = sorted(str(path) for path in root.glob("pyspire-*"))
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            *packages,
        ]
    )
    return root, site


def environment(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


@pytest.mark.slow
def test_generated_packages_are_lint_and_type_clean(generated: tuple[Path, Path]) -> None:
    root, _ = generated
    tools = Path(sys.executable).parent
    packages = [str(path) for path in root.glob("pyspire-*")]
    for package in packages:
        run([str(tools / "ruff"), "check", "--quiet", "--select", "E,F,W,I,B,UP,SIM,RUF", package], cwd=package)
        run([str(tools / "ruff"), "format", "--check", "--quiet", package], cwd=package)
    modules = [str(path) for path in root.glob("pyspire-*/pyspire_*")]
    run([str(tools / "mypy"), "--strict", "--no-incremental", *modules], cwd=root)


@pytest.mark.slow
def test_installed_starters_are_listed_under_their_types(generated: tuple[Path, Path]) -> None:
    _, site = generated
    for role in ("server", "agent"):
        listing = run([console_script(f"pyspire-{role}"), "plugins", "-output", "json"], env=environment(site)).stdout
        rows = {(row["type"], row["name"]): row for row in json.loads(listing)}
        for (starter_role, type_name), name in NAMES.items():
            halves = {r for r, _, _ in STARTERS[(starter_role, type_name)].entry_points}
            if role not in halves:
                continue
            row = rows[(type_name, name)]
            assert row["distribution"] == "pyspire-" + name.replace("_", "-"), row
            assert row["version"] == "0.1.0"
            assert not row["problem"], row


@pytest.mark.slow
def test_generated_tests_pass(generated: tuple[Path, Path]) -> None:
    root, site = generated

    def pytest_in(package: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=package,
            env=environment(site),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )

    packages = sorted(root.glob("pyspire-*"))
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(packages, pool.map(pytest_in, packages), strict=True))
    failures = {package.name: result.stdout[-3000:] for package, result in results.items() if result.returncode != 0}
    assert not failures, failures
    for package, result in results.items():
        assert " passed" in result.stdout, f"{package.name} ran no tests:\n{result.stdout}"
        assert "skipped" not in result.stdout, f"{package.name} skipped tests:\n{result.stdout}"


@pytest.mark.parametrize(
    ("role", "type_name", "name", "message"),
    [
        ("server", "NodeAttestor", "Acme", "is not a plugin name"),
        ("server", "NodeAttestor", "1acme", "is not a plugin name"),
        ("server", "NodeAttestor", "x509pop", 'a server plugin named "x509pop" is installed already (pyspire 0.1.0'),
        ("agent", "KeyManager", "disk", 'an agent plugin named "disk"'),
        ("server", "WorkloadAttestor", "acme", "WorkloadAttestor is an agent plugin: use pyspire-agent plugins new"),
        ("agent", "Gadget", "acme", 'unknown agent plugin type "Gadget"'),
    ],
)
def test_the_starter_refuses_what_would_not_work(
    tmp_path: Path, role: str, type_name: str, name: str, message: str
) -> None:
    with pytest.raises(StarterError, match=message.replace("(", r"\(").replace(".", r"\.")):
        write_starter(role, type_name, name, tmp_path)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_an_existing_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "pyspire-acme").mkdir()
    with pytest.raises(StarterError, match="exists already"):
        write_starter("server", "Notifier", "acme", tmp_path)
    refused = subprocess.run(
        [console_script("pyspire-server"), "plugins", "new", "Notifier", "acme", "-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: ")
    assert "Traceback" not in refused.stderr


def test_every_type_has_a_starter() -> None:
    assert {(declared.role, declared.name) for declared in PLUGIN_TYPES} == set(STARTERS)

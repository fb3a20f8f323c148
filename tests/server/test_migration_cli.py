"""migrate-from-spire refuses what is not a SPIRE datastore it can read, clearly and without writing.

The import itself runs against datastores written by a real spire-server (tests/interop).
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from tests.support.daemons import console_script, server_config


def _config(directory: Path) -> Path:
    text, _, _ = server_config(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pyspire-server.conf"
    path.write_text(text)
    return path


def _migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("pyspire-server"), "migrate-from-spire", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_missing_spire_database_is_named(tmp_path: Path) -> None:
    result = _migrate(
        "-config",
        str(_config(tmp_path)),
        "-spireDatabaseType",
        "sqlite3",
        "-spireConnectionString",
        str(tmp_path / "nope.db"),
    )
    assert result.returncode == 1
    assert "cannot open the SPIRE SQLite database" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "nope.db").exists()  # opened read-only: never created


def test_a_database_that_is_not_spires_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as database:
        database.execute("create table things (id integer)")
    result = _migrate(
        "-config", str(_config(tmp_path / "py")), "-spireDatabaseType", "sqlite3", "-spireConnectionString", str(other)
    )
    assert result.returncode == 1
    assert "this is not a SPIRE datastore" in result.stderr


def test_another_schema_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as database:
        database.execute("create table migrations (id integer, version integer, code_version text)")
        database.execute("insert into migrations values (1, 19, '1.9.0')")
    result = _migrate(
        "-config", str(_config(tmp_path / "py")), "-spireDatabaseType", "sqlite3", "-spireConnectionString", str(old)
    )
    assert result.returncode == 1
    assert "schema version 19" in result.stderr
    assert "upgrade SPIRE to 1.13 first" in result.stderr


def test_pyspires_datastore_cannot_be_spires_own(tmp_path: Path) -> None:
    config = _config(tmp_path)
    same = tmp_path / "data" / "datastore.sqlite3"
    result = _migrate("-config", str(config), "-spireDatabaseType", "sqlite3", "-spireConnectionString", str(same))
    assert result.returncode == 1
    assert "pyspire's DataStore is SPIRE's own database" in result.stderr


def test_a_spire_config_without_a_sql_datastore_is_refused(tmp_path: Path) -> None:
    spire = tmp_path / "spire.conf"
    spire.write_text(
        'server {\n  trust_domain = "example.org"\n}\nplugins {\n  KeyManager "memory" {\n    plugin_data {}\n  }\n}\n'
    )
    result = _migrate("-config", str(_config(tmp_path / "py")), "-spireConfig", str(spire))
    assert result.returncode == 1
    assert 'no DataStore "sql" declaration' in result.stderr
    assert _migrate("-config", str(_config(tmp_path / "py2"))).returncode == 1

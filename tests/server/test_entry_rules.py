"""Entries a real server refuses as SPIRE's datastore does, and entry fields the CLI keeps from -data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemons import ServerDaemon, start_server

PARENT = "spiffe://example.org/spire/agent/x"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    yield daemon
    daemon.stop()


def create(server: ServerDaemon, spiffe_id: str, *flags: str, selectors: tuple[str, ...] = ("unix:uid:1",)) -> str:
    """``entry create``'s combined output; raises nothing (the caller checks)."""
    args = ["entry", "create", "-parentID", PARENT, "-spiffeID", spiffe_id, *flags]
    for selector in selectors:
        args += ["-selector", selector]
    result = server.cli(*args, check=False)
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("entry_id", "message"),
    [
        ("\U0001f648\U0001f649\U0001f64a", "entry ID contains invalid characters"),
        ("white space", "entry ID contains invalid characters"),
        ("slash/in/id", "entry ID contains invalid characters"),
        ("y" * 256, "entry ID too long"),
    ],
)
def test_entry_ids_outside_spires_character_set_or_length_are_refused(
    server: ServerDaemon, entry_id: str, message: str
) -> None:
    out = create(server, "spiffe://example.org/ids/refused", "-entryID", entry_id)
    assert f"failed to create entry: datastore-validation: invalid registration entry: {message}" in out


def test_entry_ids_in_spires_character_set_are_kept(server: ServerDaemon) -> None:
    entry_id = "Aa0-._" + "z" * 249
    out = create(server, "spiffe://example.org/ids/kept", "-entryID", entry_id)
    assert f"Entry ID         : {entry_id}" in out, out


def test_a_store_svid_entry_needs_selectors_of_one_type(server: ServerDaemon) -> None:
    out = create(
        server,
        "spiffe://example.org/stored/mixed",
        "-storeSVID",
        selectors=("svidstore:name:db", "unix:uid:1"),
    )
    assert "selector types must be the same when store SVID is enabled" in out
    assert "Entry ID" not in out


def test_a_store_svid_entry_cannot_disable_prefetch(server: ServerDaemon) -> None:
    out = create(
        server,
        "spiffe://example.org/stored/prefetch",
        "-storeSVID",
        "-disableX509SVIDPrefetch",
        selectors=("svidstore:name:db",),
    )
    assert "specifying cache behaviour is incompatible with storable SVIDs" in out


def test_an_update_cannot_make_a_store_svid_entry_spire_would_refuse(server: ServerDaemon) -> None:
    out = create(server, "spiffe://example.org/stored/update", "-storeSVID", selectors=("svidstore:name:a",))
    entry_id = out.split("Entry ID         : ", 1)[1].split()[0]
    update = server.cli(
        "entry", "update", "-entryID", entry_id, "-parentID", PARENT, "-spiffeID", "spiffe://example.org/stored/update",
        "-storeSVID", "-selector", "svidstore:name:a", "-selector", "unix:uid:1", check=False,
    )  # fmt: skip
    assert update.returncode == 1
    assert "failed to update entry: datastore-validation: invalid registration entry: selector types must be" in (
        update.stderr
    )


def test_additional_attributes_are_kept_from_data(server: ServerDaemon, tmp_path: Path) -> None:
    data = tmp_path / "entries.json"
    data.write_text(
        json.dumps(
            {
                "entries": [
                    {
                        "selectors": [{"type": "unix", "value": "uid:1"}],
                        "spiffe_id": "spiffe://example.org/data/attributes",
                        "parent_id": PARENT,
                        "additional_attributes": {"disable_x509_svid_prefetch": True, "jwt_svid_include_jti": True},
                    }
                ]
            }
        )
    )
    out = server.cli("entry", "create", "-data", str(data), "-output", "json").stdout
    entry = json.loads(out)["results"][0]["entry"]
    assert entry["additional_attributes"] == {"disable_x509_svid_prefetch": True, "jwt_svid_include_jti": True}
    shown = json.loads(server.cli("entry", "show", "-entryID", entry["id"], "-output", "json").stdout)
    assert shown["entries"][0]["additional_attributes"] == entry["additional_attributes"]

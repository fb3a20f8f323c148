"""The key sources' polling: what a failed fetch keeps, when the keys count as changed, and stopping."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.spiffe import Bundle, TrustDomain
from pyspire_oidc_discovery.sources import FileSource


def _bundle_file(path: Path, **keys: ec.EllipticCurvePrivateKey) -> Path:
    bundle = Bundle(TrustDomain.parse("example.org"))
    for kid, key in keys.items():
        bundle = bundle.with_jwt_authority(kid, key.public_key())
    path.write_bytes(bundle.marshal())
    return path


async def test_a_failed_fetch_keeps_the_keys_fetched_before(tmp_path: Path) -> None:
    path = _bundle_file(tmp_path / "bundle.json", first=ec.generate_private_key(ec.SECP256R1()))
    source = FileSource(path, timedelta(seconds=1))
    assert source.key_set is None
    await source.poll_once()
    fetched = source.key_set
    assert fetched is not None
    assert [key.key_id for key in fetched.keys] == ["first"]
    succeeded_at = source.last_successful_poll

    path.write_text("{ not json")
    await source.poll_once()
    assert source.key_set is fetched
    assert source.last_successful_poll == succeeded_at


async def test_the_modification_time_moves_only_when_the_keys_change(tmp_path: Path) -> None:
    first = ec.generate_private_key(ec.SECP256R1())
    path = _bundle_file(tmp_path / "bundle.json", first=first)
    source = FileSource(path, timedelta(seconds=1))
    await source.poll_once()
    before = source.key_set
    assert before is not None
    # The same keys written again (another sequence number, say) are not a change.
    document = json.loads(path.read_text())
    document["spiffe_sequence"] = 7
    path.write_text(json.dumps(document))
    await source.poll_once()
    assert source.key_set is before

    _bundle_file(path, first=first, second=ec.generate_private_key(ec.SECP256R1()))
    await source.poll_once()
    after = source.key_set
    assert after is not None
    assert [key.key_id for key in after.keys] == ["first", "second"]
    # Regression: a change within the second of the one before kept its Last-Modified second,
    # and If-Modified-Since got 304 for a JWKS with a new key.
    assert int(after.modified) > int(before.modified)


async def test_a_stopped_poll_loop_ends_even_when_cancelled_as_a_fetch_completes(tmp_path: Path) -> None:
    # Regression: with asyncio.wait_for around the fetch, Python 3.11 swallowed a cancellation
    # that arrived as the fetch completed, and the loop polled on after the provider was told
    # to stop (the process then ignored SIGTERM). About one in four hung before the fix.
    path = _bundle_file(tmp_path / "bundle.json", first=ec.generate_private_key(ec.SECP256R1()))
    rng = random.Random(15)
    for _ in range(100):
        source = FileSource(path, timedelta(milliseconds=1))
        task = asyncio.create_task(source.run())
        await asyncio.sleep(rng.random() * 0.01)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert done, "the poll loop kept running after it was cancelled"

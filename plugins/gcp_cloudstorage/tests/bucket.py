"""The bucket a GCS plugin test writes to, read back through google-cloud-storage."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from google.cloud import storage

from tests.support.fake_gcs import FakeGcsServer

_serial = itertools.count()


@dataclass(frozen=True)
class Gcs:
    """A bucket of its own on the fake, for one test (the fake keeps buckets for the session)."""

    server: FakeGcsServer
    bucket: str

    @classmethod
    def with_new_bucket(cls, server: FakeGcsServer) -> Gcs:
        name = f"bundles-{os.getpid()}-{next(_serial)}"
        client().create_bucket(name)
        return cls(server, name)

    def read(self, name: str) -> bytes | None:
        """The object's content, or None when there is none."""
        blob = client().bucket(self.bucket).get_blob(name)
        return None if blob is None else blob.download_as_bytes()

    def blob(self, name: str) -> storage.Blob | None:
        return client().bucket(self.bucket).get_blob(name)


def client() -> storage.Client:
    """A client of the fake (STORAGE_EMULATOR_HOST is set by the ``gcs`` fixture)."""
    return storage.Client(project="test-project")

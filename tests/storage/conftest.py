"""Every storage backend, built fresh for each test: the conformance suite runs on each.

A backend is added to the suite by adding its name to ``BACKENDS`` and a branch to
``backend``; it is done when every test in ``test_conformance.py`` passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from eagle.storage import BlobStorage, StorageConfig, open_storage
from eagle.storage.fs import FsStorage
from eagle.storage.s3 import S3Storage
from eagle.testing.s3 import MotoS3

BACKENDS = ["fs", "s3"]
MiB = 1 << 20
# The smallest part S3 accepts: multipart paths are exercised with modest blobs.
PART_SIZE = 5 * MiB


@dataclass
class Backend:
    """A started backend plus what the suite needs to look behind its interface."""

    storage: BlobStorage
    leftovers: Callable[[], Awaitable[list[str]]]
    """Traces of unfinished writes (temp files, open multipart uploads): must stay empty."""


async def _fs_leftovers(storage: FsStorage) -> list[str]:
    return sorted(p.name for p in storage.tmp_dir.iterdir())


async def _s3_leftovers(storage: S3Storage) -> list[str]:
    uploads = await storage.client.list_multipart_uploads(Bucket=storage.bucket)
    listed = await storage.client.list_objects_v2(Bucket=storage.bucket)
    stray = [
        o["Key"]
        for o in listed.get("Contents", [])
        if not o["Key"].startswith(f"{storage.prefix}sha256/")
    ]
    return [f"upload:{u['Key']}" for u in uploads.get("Uploads", [])] + stray


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, no_aws_env: None
) -> AsyncIterator[Backend]:
    """A fresh, started backend of each kind, built through the registry as a seeder would."""
    leftovers: Callable[[], Awaitable[list[str]]]
    if request.param == "fs":
        fs = open_storage(StorageConfig(location=f"fs:{tmp_path / 'store'}"))
        assert isinstance(fs, FsStorage)
        storage: BlobStorage = fs
        leftovers = lambda: _fs_leftovers(fs)  # noqa: E731
    else:
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        location = f"s3://{moto.bucket()}/some/prefix"
        s3 = open_storage(StorageConfig(location=location, s3=moto.options(part_size=PART_SIZE)))
        assert isinstance(s3, S3Storage)
        storage = s3
        leftovers = lambda: _s3_leftovers(s3)  # noqa: E731
    await storage.start()
    try:
        yield Backend(storage, leftovers)
    finally:
        await storage.close()

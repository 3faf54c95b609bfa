"""The seeder's blob life cycle: origin → storage + local copy, LRU of local copies, restart,
corrupt storage, and storage faults. Real origin registry, real storage, real libtorrent."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import aiohttp
import pytest

from eagle.core.errors import StorageError
from eagle.seeder.server import SeederServer
from eagle.storage import NotFound, StorageUnavailable
from eagle.storage.fs import FsStorage
from eagle.testing import OriginRegistry
from eagle.testing.s3 import MotoS3
from eagle.utils.net import free_port

from .conftest import REPO, MiB, SeederFactory, random_blob, resolve, upload_blob


def sample(server: SeederServer, name: str, **labels: str) -> float:
    value = server.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def test_first_request_fetches_from_origin_once_and_stores(
    origin: OriginRegistry, seeder_factory: SeederFactory
) -> None:
    data = random_blob(3 * MiB + 17)
    digest = upload_blob(origin, data)
    seeder = await seeder_factory(origin)

    metas = await asyncio.gather(*(resolve(seeder, origin, digest) for _ in range(5)))

    assert {m.infohash for m in metas} == {metas[0].infohash}
    assert origin.blob_gets(digest) == 1
    storage = seeder.service.storage
    assert (await storage.stat(digest)).size == len(data)
    assert seeder.copies.blobs.path(digest).read_bytes() == data
    assert seeder.engine.has(metas[0].infohash)

    # fs storage beside the local copies (the default) takes the local copy itself:
    # the blob is on disk once, not twice.
    stored = FsStorage(seeder.config.data_dir / "storage").path(digest)
    assert stored.stat().st_ino == seeder.copies.blobs.path(digest).stat().st_ino


async def test_metainfo_api_answers_202_then_200(
    origin: OriginRegistry, seeder_factory: SeederFactory
) -> None:
    digest = upload_blob(origin, random_blob(100_000))
    seeder = await seeder_factory(origin)
    url = f"{seeder.url}/v1/metainfo"
    query = {"origin": origin.url, "repo": REPO, "digest": str(digest)}
    statuses = []
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            async with http.get(url, params=query) as resp:
                statuses.append(resp.status)
                if resp.status == 200:
                    assert resp.headers["Content-Type"] == "application/x-bittorrent"
                    break
            await asyncio.sleep(0.02)
    assert statuses[0] == 202 and statuses[-1] == 200


# -- local copies: LRU ----------------------------------------------------------------------


async def test_lru_evicts_least_recently_used_and_refetches_from_storage(
    origin: OriginRegistry, seeder_factory: SeederFactory
) -> None:
    blobs = [random_blob(MiB) for _ in range(3)]
    a, b, c = (upload_blob(origin, blob) for blob in blobs)
    seeder = await seeder_factory(origin, cache_size=int(2.5 * MiB))
    meta_a = await resolve(seeder, origin, a)
    meta_b = await resolve(seeder, origin, b)
    await resolve(seeder, origin, a)  # a is now more recently used than b

    await resolve(seeder, origin, c)

    assert set(seeder.copies.digests()) == {a, c}
    assert not seeder.copies.blobs.path(b).exists()
    assert not seeder.engine.has(meta_b.infohash)  # an evicted blob stops seeding
    assert seeder.engine.has(meta_a.infohash)
    assert seeder.copies.total <= seeder.copies.capacity
    assert sample(seeder, "eagle_seeder_evictions_total") == 1

    # Asked again, b comes back from storage, not from the origin.
    again = await resolve(seeder, origin, b)
    assert again.infohash == meta_b.infohash
    assert origin.blob_gets(b) == 1
    assert sample(seeder, "eagle_seeder_storage_fetches_total", result="ok") == 1
    assert seeder.copies.blobs.path(b).read_bytes() == blobs[1]
    assert len(seeder.copies.digests()) == 2


async def test_copies_in_use_are_not_evicted(
    origin: OriginRegistry, seeder_factory: SeederFactory
) -> None:
    digests = [upload_blob(origin, random_blob(MiB)) for _ in range(4)]
    seeder = await seeder_factory(origin, cache_size=int(2.5 * MiB), cache_lease=1.0)
    for digest in digests:
        await resolve(seeder, origin, digest)
    # Every copy was handed out within its lease: over capacity, but nothing evicted.
    assert len(seeder.copies.digests()) == 4
    assert seeder.copies.sweep() == 0

    await asyncio.sleep(1.2)
    assert seeder.copies.sweep() == 2
    assert seeder.copies.digests() == digests[2:]
    assert seeder.copies.total <= seeder.copies.capacity


async def test_a_blob_larger_than_the_cache_is_seeded_while_in_use(
    origin: OriginRegistry, seeder_factory: SeederFactory
) -> None:
    digest = upload_blob(origin, random_blob(2 * MiB))
    seeder = await seeder_factory(origin, cache_size=MiB, cache_lease=30.0)
    meta = await resolve(seeder, origin, digest)
    assert seeder.engine.has(meta.infohash)
    assert seeder.copies.sweep() == 0


# -- restart --------------------------------------------------------------------------------


async def test_restart_reindexes_local_copies_and_seeds_them_without_fetching(
    origin: OriginRegistry, seeder_factory: SeederFactory, tmp_path: Path
) -> None:
    digests = [upload_blob(origin, random_blob(MiB + i)) for i in range(3)]
    data_dir = tmp_path / "restarted"
    first = await seeder_factory(origin, data_dir=data_dir)
    metas = [await resolve(first, origin, d) for d in digests]
    await resolve(first, origin, digests[0])  # most recently used: digests[1], [2], [0]
    await first.stop()
    (data_dir / "tmp" / "leftover.partial").write_bytes(b"half a blob")

    second = await seeder_factory(origin, data_dir=data_dir, cache_size=int(2.5 * MiB))

    # The smaller cache keeps the two most recently used; both seed at once.
    assert second.copies.digests() == [digests[2], digests[0]]
    assert second.engine.has(metas[0].infohash) and second.engine.has(metas[2].infohash)
    assert not (data_dir / "tmp" / "leftover.partial").exists()
    ready = second.service.lookup(second.origins.origins.default, REPO, digests[0])
    assert getattr(ready, "infohash", None) == metas[0].infohash  # no 202: nothing to fetch
    for digest in digests:
        assert origin.blob_gets(digest) == 1
    assert sample(second, "eagle_seeder_storage_fetches_total", result="ok") == 0


# -- faults ---------------------------------------------------------------------------------


async def test_corrupt_blob_in_storage_is_never_seeded_and_is_refetched(
    origin: OriginRegistry, seeder_factory: SeederFactory, tmp_path: Path
) -> None:
    data = random_blob(MiB)
    digest = upload_blob(origin, data)
    storage_dir = tmp_path / "shared-storage"
    # Another seeder stored the blob; then a byte rotted.
    bad = FsStorage(storage_dir).path(digest)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])

    seeder = await seeder_factory(origin, storage=f"fs:{storage_dir}")
    await resolve(seeder, origin, digest)

    assert seeder.copies.blobs.path(digest).read_bytes() == data
    assert bad.read_bytes() == data  # the origin fetch replaced the bad object
    assert origin.blob_gets(digest) == 1
    assert sample(seeder, "eagle_seeder_storage_fetches_total", result="corrupt") == 1


async def test_storage_unreachable_fails_blobs_not_held_locally(
    origin: OriginRegistry,
    seeder_factory: SeederFactory,
    moto_s3: MotoS3,
    no_aws_env: None,
) -> None:
    digest = upload_blob(origin, random_blob(200_000))
    dead = moto_s3.options(endpoint=f"http://127.0.0.1:{free_port()}", connect_timeout=0.5)
    seeder = await seeder_factory(origin, storage="s3://bucket/eagle", s3=dead)

    with pytest.raises(StorageUnavailable):
        await resolve(seeder, origin, digest)
    assert seeder.copies.digests() == []
    assert origin.blob_gets(digest) == 0
    # The HTTP API says so with a 503, which sends agents to the next seeder or the origin.
    async with aiohttp.ClientSession() as http:
        query = {"origin": origin.url, "repo": REPO, "digest": str(digest)}
        async with http.get(f"{seeder.url}/v1/metainfo", params=query) as resp:
            assert resp.status == 503
            assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"


async def test_storage_full_leaves_no_copy_anywhere(
    origin: OriginRegistry, seeder_factory: SeederFactory, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    small = tmp_path / "small"
    small.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]
    mounted = await asyncio.to_thread(subprocess.run, mount, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        digest = upload_blob(origin, random_blob(2 * MiB))
        seeder = await seeder_factory(origin, storage=f"fs:{small}")
        with pytest.raises(StorageError, match="storage full"):
            await resolve(seeder, origin, digest)
        assert seeder.copies.digests() == []
        assert not seeder.copies.blobs.path(digest).exists()
        with pytest.raises(NotFound):
            await seeder.service.storage.stat(digest)
        await seeder.stop()
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(small)], check=False)

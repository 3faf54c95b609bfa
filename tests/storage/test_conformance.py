"""The Seeder Storage Interface conformance suite: the same rules checked on every backend."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eagle.core.digest import Digest
from eagle.core.errors import DigestMismatch, StorageError
from eagle.storage import BlobStorage, NotFound, RangeNotSatisfiable

from .conftest import PART_SIZE, Backend

MiB = 1 << 20
KiB = 1 << 10


def payload(size: int, seed: int = 0) -> bytes:
    return hashlib.sha256(f"seed{seed}".encode()).digest() * (size // 32) + os.urandom(size % 32)


async def chunks_of(data: bytes, chunk: int = 64 * KiB) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]
        await asyncio.sleep(0)


async def read_all(
    storage: BlobStorage, digest: Digest, start: int = 0, length: int | None = None
) -> bytes:
    parts = []
    async with storage.open(digest, start, length) as reader:
        async for chunk in reader:
            parts.append(chunk)
    return b"".join(parts)


async def listed(storage: BlobStorage, prefix: str = "") -> set[Digest]:
    return {d async for d in storage.list(prefix)}


async def assert_absent(backend: Backend, digest: Digest) -> None:
    with pytest.raises(NotFound):
        await backend.storage.stat(digest)
    with pytest.raises(NotFound):
        async with backend.storage.open(digest):
            pass
    assert digest not in await listed(backend.storage)
    assert await backend.leftovers() == []


class Boom(Exception):
    pass


async def failing_after(data: bytes, fail_at: int) -> AsyncIterator[bytes]:
    async for chunk in chunks_of(data):
        if fail_at <= 0:
            raise Boom("source broke")
        fail_at -= len(chunk)
        yield chunk


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 300 * KiB, 2 * PART_SIZE + 12345])
async def test_round_trip(backend: Backend, size: int) -> None:
    data = payload(size, seed=size)
    digest = Digest.of(data)
    stat = await backend.storage.write(digest, chunks_of(data), size)
    assert (stat.digest, stat.size) == (digest, size)
    assert (await backend.storage.stat(digest)).size == size
    assert await read_all(backend.storage, digest) == data
    assert digest in await listed(backend.storage)
    assert await backend.leftovers() == []


async def test_write_without_a_known_size(backend: Backend) -> None:
    data = payload(PART_SIZE + 7)
    digest = Digest.of(data)
    assert (await backend.storage.write(digest, chunks_of(data, 100 * KiB))).size == len(data)
    assert await read_all(backend.storage, digest) == data


async def test_ranges(backend: Backend) -> None:
    data = payload(PART_SIZE + 1000, seed=3)
    digest = Digest.of(data)
    await backend.storage.write(digest, chunks_of(data), len(data))
    size = len(data)
    cases = [(0, None), (0, 10), (5, 1), (size - 1, None), (size - 1, 50), (1234, PART_SIZE)]
    for start, length in cases:
        end = size if length is None else start + length
        assert await read_all(backend.storage, digest, start, length) == data[start:end], (
            start,
            length,
        )
    async with backend.storage.open(digest, 100, 10) as reader:
        assert (reader.size, reader.start, reader.length) == (size, 100, 10)
    assert await read_all(backend.storage, digest, size) == b""
    assert await read_all(backend.storage, digest, 10, 0) == b""
    with pytest.raises(RangeNotSatisfiable):
        await read_all(backend.storage, digest, size + 1)
    with pytest.raises(RangeNotSatisfiable):
        await read_all(backend.storage, digest, -1)


# -- absence --------------------------------------------------------------------------------


async def test_missing_blob_is_not_found_everywhere(backend: Backend) -> None:
    digest = Digest.of(b"never stored")
    with pytest.raises(NotFound):
        await backend.storage.stat(digest)
    with pytest.raises(NotFound):
        async with backend.storage.open(digest):
            pass
    with pytest.raises(NotFound):
        async with backend.storage.open(digest, 10, 5):
            pass
    with pytest.raises(NotFound):
        await backend.storage.delete(digest)
    assert await listed(backend.storage) == set()


async def test_delete(backend: Backend) -> None:
    data = payload(1000)
    digest = Digest.of(data)
    await backend.storage.write(digest, chunks_of(data), len(data))
    await backend.storage.delete(digest)
    await assert_absent(backend, digest)
    with pytest.raises(NotFound):
        await backend.storage.delete(digest)


async def test_list_by_prefix(backend: Backend) -> None:
    digests = set()
    for i in range(12):
        data = payload(100 + i, seed=i)
        digest = Digest.of(data)
        await backend.storage.write(digest, chunks_of(data), len(data))
        digests.add(digest)
    assert await listed(backend.storage) == digests
    some = sorted(digests)[3]
    for prefix in (some.hex[:1], some.hex[:2], some.hex[:5], some.hex):
        assert await listed(backend.storage, prefix) == {
            d for d in digests if d.hex.startswith(prefix)
        }
    assert await listed(backend.storage, "0" * 64) == set()
    with pytest.raises(StorageError):
        await listed(backend.storage, "../etc")


# -- atomic visibility ----------------------------------------------------------------------


async def test_failed_source_leaves_nothing(backend: Backend) -> None:
    data = payload(2 * PART_SIZE + 10)
    digest = Digest.of(data)
    # Past the first part, so a multipart upload was already under way.
    with pytest.raises(Boom):
        await backend.storage.write(digest, failing_after(data, PART_SIZE + MiB), len(data))
    await assert_absent(backend, digest)


async def test_digest_mismatch_leaves_nothing(backend: Backend) -> None:
    for size in (100, PART_SIZE + 10):
        data = payload(size)
        wrong = Digest.of(data + b"x")
        with pytest.raises(DigestMismatch):
            await backend.storage.write(wrong, chunks_of(data), len(data))
        await assert_absent(backend, wrong)


async def test_wrong_length_leaves_nothing(backend: Backend) -> None:
    data = payload(PART_SIZE + 10)
    digest = Digest.of(data)
    with pytest.raises(StorageError, match="of"):
        await backend.storage.write(digest, chunks_of(data[:-1]), len(data))
    await assert_absent(backend, digest)
    with pytest.raises(StorageError, match="longer"):
        await backend.storage.write(digest, chunks_of(data), len(data) - 1)
    await assert_absent(backend, digest)


async def test_cancelled_write_leaves_nothing(backend: Backend) -> None:
    data = payload(2 * PART_SIZE)
    digest = Digest.of(data)
    halfway = asyncio.Event()
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data[: PART_SIZE + MiB]):
            yield chunk
        halfway.set()
        await never.wait()
        yield b"unreachable"

    task = asyncio.create_task(backend.storage.write(digest, stalls(), len(data)))
    await asyncio.wait_for(halfway.wait(), 30)
    await asyncio.sleep(0.2)  # let the first part's upload get going
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_absent(backend, digest)


async def test_rewriting_a_stored_blob_keeps_it_whole(backend: Backend) -> None:
    data = payload(PART_SIZE + 99)
    digest = Digest.of(data)
    await backend.storage.write(digest, chunks_of(data), len(data))
    with pytest.raises(Boom):
        await backend.storage.write(digest, failing_after(data, MiB), len(data))
    assert await read_all(backend.storage, digest) == data
    await backend.storage.write(digest, chunks_of(data), len(data))
    assert await read_all(backend.storage, digest) == data
    assert await backend.leftovers() == []


async def test_concurrent_writers_of_one_blob(backend: Backend) -> None:
    data = payload(PART_SIZE + 4321, seed=9)
    digest = Digest.of(data)
    writers = [
        backend.storage.write(digest, chunks_of(data, 50 * KiB), len(data)) for _ in range(3)
    ]
    # A fourth writer fails half way while the others succeed: it must not spoil their blob.
    writers.append(backend.storage.write(digest, failing_after(data, PART_SIZE), len(data)))
    results = await asyncio.gather(*writers, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["BlobStat"] * 3 + ["Boom"]
    assert await read_all(backend.storage, digest) == data
    assert await listed(backend.storage) == {digest}
    assert await backend.leftovers() == []


async def test_concurrent_readers_and_writers_of_different_blobs(backend: Backend) -> None:
    blobs = [payload(200 * KiB + i, seed=i) for i in range(8)]
    digests = [Digest.of(b) for b in blobs]
    await asyncio.gather(
        *(
            backend.storage.write(d, chunks_of(b), len(b))
            for d, b in zip(digests, blobs, strict=True)
        )
    )
    read = await asyncio.gather(*(read_all(backend.storage, d) for d in digests))
    assert read == blobs


# -- big blobs stream -----------------------------------------------------------------------

BIG = 100 * MiB


def big_chunks(chunk: int = 256 * KiB) -> Iterator[bytes]:
    block = hashlib.sha256(b"big").digest() * (chunk // 32)
    for i in range(BIG // chunk):
        yield i.to_bytes(8, "big") + block[8:]


async def big_stream() -> AsyncIterator[bytes]:
    for chunk in big_chunks():
        yield chunk


async def test_100_mib_blob_streams_in_bounded_memory(backend: Backend) -> None:
    sha = hashlib.sha256()
    for chunk in big_chunks():
        sha.update(chunk)
    digest = Digest(sha.hexdigest())
    # S3 buffers up to two parts (one uploading, one filling); files only a chunk or two.
    bound = 2 * PART_SIZE + 10 * MiB if backend.storage.name == "s3" else 6 * MiB

    started = time.monotonic()
    tracemalloc.start()
    try:
        await backend.storage.write(digest, big_stream(), BIG)
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        check = hashlib.sha256()
        got = 0
        async with backend.storage.open(digest) as reader:
            async for chunk in reader:
                check.update(chunk)
                got += len(chunk)
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started

    assert got == BIG and check.hexdigest() == digest.hex
    assert write_peak < bound, f"write peaked at {write_peak / MiB:.1f} MiB"
    assert read_peak < 6 * MiB, f"read peaked at {read_peak / MiB:.1f} MiB"
    assert elapsed < 20, f"100 MiB round trip took {elapsed:.1f}s"


# -- adopting a local file ------------------------------------------------------------------


async def test_adopt_takes_a_verified_file_or_declines_leaving_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    data = payload(300 * KiB, seed=7)
    digest = Digest.of(data)
    local = tmp_path / "local-copy"
    local.write_bytes(data)

    if not backend.storage.adopts_from(tmp_path):
        # Backends that cannot take a file say so, and store nothing.
        assert await backend.storage.adopt(digest, local) is None
        await assert_absent(backend, digest)
        return
    stat = await backend.storage.adopt(digest, local)
    assert stat is not None and (stat.digest, stat.size) == (digest, len(data))
    local.unlink()  # the local copy may go (evicted): the stored blob stays whole
    assert await read_all(backend.storage, digest) == data
    assert digest in await listed(backend.storage)
    assert await backend.leftovers() == []

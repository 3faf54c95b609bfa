"""GrowingBlob: readers follow a blob as it is written, never getting an unverified whole."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eagle.core.digest import Digest
from eagle.core.errors import DigestMismatch, OriginError
from eagle.p2p.growing import CacheWriteFailed, GrowingBlob, verified_stream

DATA = os.urandom(300_000)
DIGEST = Digest.of(DATA)


class Feed:
    """Chunks handed to the writer one at a time, when the test says so."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.queue.get()) is not None:
            yield chunk


async def read_all(blob: GrowingBlob, into: bytearray) -> None:
    async with contextlib.aclosing(blob.read()) as chunks:
        async for chunk in chunks:
            into += chunk


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_readers_follow_the_writer_and_get_the_last_byte_only_once_verified(
    tmp_path: Path,
) -> None:
    blob = GrowingBlob(DIGEST, len(DATA), tmp_path)
    feed = Feed()
    writer = asyncio.create_task(blob.write_from(feed.chunks()))
    early, late = bytearray(), bytearray()
    reader = asyncio.create_task(read_all(blob, early))

    await feed.queue.put(DATA[:100_000])
    await settle()
    assert len(early) == 100_000 - 1  # everything but the held-back last byte
    await feed.queue.put(DATA[100_000:])
    await settle()
    assert len(early) == len(DATA) - 1  # all written, not yet verified
    late_reader = asyncio.create_task(read_all(blob, late))
    await feed.queue.put(None)
    meta = await writer
    await asyncio.gather(reader, late_reader)

    assert bytes(early) == bytes(late) == DATA
    assert meta.digest == DIGEST and meta.length == len(DATA)
    assert blob.verified and blob.path is not None and blob.path.read_bytes() == DATA


async def test_a_wrong_blob_never_reaches_a_reader_whole(tmp_path: Path) -> None:
    wrong = bytearray(DATA)
    wrong[-1] ^= 0xFF
    blob = GrowingBlob(DIGEST, len(DATA), tmp_path)
    feed = Feed()
    got = bytearray()
    reader = asyncio.create_task(read_all(blob, got))
    await feed.queue.put(bytes(wrong))
    await feed.queue.put(None)
    with pytest.raises(DigestMismatch):
        await blob.write_from(feed.chunks())
    with pytest.raises(DigestMismatch):
        await reader
    assert len(got) == len(DATA) - 1


async def test_a_short_origin_answer_fails_the_readers(tmp_path: Path) -> None:
    blob = GrowingBlob(DIGEST, len(DATA), tmp_path)
    feed = Feed()
    await feed.queue.put(DATA[:1000])
    await feed.queue.put(None)
    with pytest.raises(OriginError, match="1000 of 300000"):
        await blob.write_from(feed.chunks())
    with pytest.raises(OriginError):
        await read_all(blob, bytearray())


async def test_an_unknown_size_is_hashed_from_the_file(tmp_path: Path) -> None:
    blob = GrowingBlob(DIGEST, None, tmp_path)
    feed = Feed()
    for i in range(0, len(DATA), 65536):
        await feed.queue.put(DATA[i : i + 65536])
    await feed.queue.put(None)
    meta = await blob.write_from(feed.chunks())
    assert meta.length == len(DATA)
    got = bytearray()
    await read_all(blob, got)
    assert bytes(got) == DATA


async def test_a_directory_that_refuses_files_is_a_cache_write_failure(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    blob = GrowingBlob(DIGEST, len(DATA), missing)
    with pytest.raises(CacheWriteFailed):
        await blob.write_from(Feed().chunks())
    with pytest.raises(CacheWriteFailed):
        await read_all(blob, bytearray())


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_verified_stream_continues_a_hash_and_holds_back_the_last_byte() -> None:
    sha = hashlib.sha256(DATA[:1000])
    out = [c async for c in verified_stream(chunks_of(DATA[1000:5000], DATA[5000:]), sha, DIGEST)]
    assert b"".join(out) == DATA[1000:]
    assert out[-1] == DATA[-1:]


async def test_verified_stream_refuses_to_finish_a_wrong_blob() -> None:
    sha = hashlib.sha256(DATA[:1000])
    got = bytearray()
    with pytest.raises(DigestMismatch):
        async for chunk in verified_stream(chunks_of(DATA[1000:-1], b"x"), sha, DIGEST):
            got += chunk
    assert bytes(got) == DATA[1000:-1]

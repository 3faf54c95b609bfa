"""StreamTee: one stream, two consumers, bounded lag, failures of either side surface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from eagle.seeder.tee import StreamTee


async def source(n: int) -> AsyncIterator[bytes]:
    for i in range(n):
        yield bytes([i % 256]) * 10


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


async def test_both_consumers_see_every_byte() -> None:
    tee = StreamTee(source(100), collect, depth=4)
    first = b"".join([c async for c in tee])
    assert await tee.result() == first == b"".join([c async for c in source(100)])


async def test_a_failing_second_consumer_stops_the_reader_even_with_a_full_queue() -> None:
    async def dies(chunks: AsyncIterator[bytes]) -> bytes:
        await chunks.__anext__()
        await asyncio.sleep(0.05)  # the reader fills the queue meanwhile
        raise OSError("disk full")

    tee = StreamTee(source(1000), dies, depth=2)
    with pytest.raises(OSError, match="disk full"):
        async with asyncio.timeout(5):
            async for _ in tee:
                pass


async def test_cancel_stops_the_second_consumer() -> None:
    started = asyncio.Event()

    async def slow(chunks: AsyncIterator[bytes]) -> bytes:
        started.set()
        await asyncio.sleep(60)
        return b""

    tee = StreamTee(source(3), slow)
    await started.wait()
    await tee.cancel()
    with pytest.raises(asyncio.CancelledError):
        await tee.result()

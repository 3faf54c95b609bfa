"""The token bucket that limits origin downloads: rate, fairness, runtime changes."""

from __future__ import annotations

import asyncio
import time

import pytest

from eagle.utils.ratelimit import TokenBucket

MiB = 1 << 20


async def _drain(bucket: TokenBucket, total: int, chunk: int = 64 * 1024) -> float:
    """Push ``total`` bytes through in chunks; return when it finished (monotonic)."""
    while total > 0:
        await bucket.consume(min(chunk, total))
        total -= chunk
    return time.monotonic()


async def test_unlimited_never_waits() -> None:
    bucket = TokenBucket(0)
    started = time.monotonic()
    await _drain(bucket, 100 * MiB)
    assert time.monotonic() - started < 0.5
    assert bucket.consumed == 100 * MiB


async def test_rate_is_held_after_the_burst() -> None:
    bucket = TokenBucket(8 * MiB)  # burst: 0.1 s worth
    started = time.monotonic()
    await _drain(bucket, 4 * MiB)
    elapsed = time.monotonic() - started
    # (4 MiB - 0.8 MiB burst) / 8 MiB/s = 0.4 s; generous margins for a loaded machine.
    assert 0.3 < elapsed < 1.0, elapsed


async def test_concurrent_streams_share_the_rate_evenly() -> None:
    bucket = TokenBucket(8 * MiB)
    started = time.monotonic()
    first, second = await asyncio.gather(_drain(bucket, 2 * MiB), _drain(bucket, 2 * MiB))
    # Together 4 MiB at 8 MiB/s; fair turns make both end near the end, not one at half.
    assert 0.3 < max(first, second) - started < 1.0
    assert abs(first - second) < 0.15


async def test_raising_the_rate_wakes_waiters_at_once() -> None:
    bucket = TokenBucket(64 * 1024)
    waiter = asyncio.create_task(_drain(bucket, 10 * MiB))  # ~160 s at this rate
    await asyncio.sleep(0.2)
    assert not waiter.done()
    started = time.monotonic()
    bucket.set_rate(0)
    await asyncio.wait_for(waiter, 2)
    assert time.monotonic() - started < 1.0


async def test_lowering_the_rate_slows_streams_down() -> None:
    bucket = TokenBucket(0)
    bucket.set_rate(2 * MiB)
    started = time.monotonic()
    await _drain(bucket, 1 * MiB)
    assert time.monotonic() - started > 0.3


def test_negative_rates_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(-1)
    with pytest.raises(ValueError):
        TokenBucket(1).set_rate(-5)

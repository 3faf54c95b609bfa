"""A token bucket for asyncio byte streams, with a rate that can change while in use."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

# A bucket holds this many seconds of traffic: enough to absorb scheduling jitter
# on a loaded machine, small enough that a long transfer's average stays on the rate.
BURST_SECONDS = 0.1
MIN_BURST = 64 * 1024


class TokenBucket:
    """Bytes per second shared by every caller of :meth:`consume`; rate 0 means unlimited.

    Callers are served first come, first served, one burst at a time, so concurrent
    streams share the rate about evenly. Not thread-safe: use it from one event loop.
    """

    def __init__(self, rate: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self._clock = clock
        self._rate = rate
        self._burst = self._burst_for(rate)
        self._tokens = float(self._burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self.consumed = 0

    @property
    def rate(self) -> int:
        """Bytes per second now (0 = unlimited)."""
        return self._rate

    @staticmethod
    def _burst_for(rate: int) -> int:
        return max(MIN_BURST, int(rate * BURST_SECONDS))

    def set_rate(self, rate: int) -> None:
        """Change the rate; callers waiting now re-plan with the new one at once."""
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self._refill()
        self._rate = rate
        self._burst = self._burst_for(rate)
        self._tokens = min(self._tokens, float(self._burst))
        self._changed.set()
        self._changed = asyncio.Event()

    def _refill(self) -> None:
        now = self._clock()
        if self._rate:
            self._tokens = min(float(self._burst), self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def consume(self, amount: int) -> None:
        """Wait until ``amount`` bytes may pass, then account for them."""
        self.consumed += max(0, amount)
        while amount > 0:
            # A request larger than the burst is taken in bursts, so that other
            # streams get their turns in between.
            part = min(amount, self._burst)
            async with self._lock:
                await self._take(part)
            amount -= part

    async def _take(self, part: int) -> None:
        while True:
            self._refill()
            if not self._rate:
                return
            part = min(part, self._burst)  # the rate (and burst) may have shrunk meanwhile
            if self._tokens >= part:
                self._tokens -= part
                return
            wait = (part - self._tokens) / self._rate
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)

    async def limit(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Pass ``chunks`` through at no more than the bucket's rate."""
        async for chunk in chunks:
            await self.consume(len(chunk))
            yield chunk

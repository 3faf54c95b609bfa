"""One byte stream read once, consumed twice: by the caller, and by a second consumer task.

The seeder streams an origin response into its local copy and into storage at the
same time, so a blob crosses the network from the origin once and neither copy
waits for the other to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from eagle.core.errors import StorageError

T = TypeVar("T")


class StreamTee(Generic[T]):
    """Iterate this to read ``source``; every chunk also goes to ``consumer`` (run as a task).

    Backpressure: the second consumer may lag at most ``depth`` chunks. If it fails,
    iteration raises its error at the next chunk; if iteration stops early, call
    :meth:`cancel`. :meth:`result` waits for the consumer after a full read.
    """

    def __init__(
        self,
        source: AsyncIterable[bytes],
        consumer: Callable[[AsyncIterator[bytes]], Awaitable[T]],
        depth: int = 16,
    ) -> None:
        self._source = source
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(depth)  # None: the end
        self._task: asyncio.Task[T] = asyncio.ensure_future(consumer(self._drain()))

    async def _drain(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def _put(self, chunk: bytes | None) -> None:
        if self._task.done():
            self._task.result()  # raises the consumer's error
            raise StorageError("the second consumer stopped before the stream ended")
        if not self._queue.full():
            self._queue.put_nowait(chunk)
            return
        putter = asyncio.ensure_future(self._queue.put(chunk))
        await asyncio.wait({putter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not putter.done():
            putter.cancel()
            await self._put(chunk)  # reports the consumer's end

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._source:
            if chunk:
                await self._put(chunk)
                yield chunk
        await self._put(None)

    async def result(self) -> T:
        """The consumer's result, once the stream was read to its end."""
        return await self._task

    async def cancel(self) -> None:
        """Stop the consumer (after a failed or abandoned read) and wait for it to clean up."""
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

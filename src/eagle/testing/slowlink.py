"""A TCP relay on loopback whose answers flow at a set rate: a slow link to a real server.

Tests use it to hold a real origin's blob download open long enough to act while it
runs (ask a second time, stop the origin half-way), without sleeping and hoping.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from eagle.utils.net import free_port
from eagle.utils.ratelimit import TokenBucket


class SlowLink:
    """Relays ``127.0.0.1:port`` to ``127.0.0.1:target_port``; answers flow at ``rate`` bytes/s.

    Runs its own event loop in a thread, so it serves synchronous and asynchronous
    tests alike. Use as a context manager.
    """

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port = target_port
        self.rate = rate
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SlowLink:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def cut(self) -> None:
        """Drop every relayed connection now: a link (or an origin) failing mid-transfer."""
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._bucket = TokenBucket(self.rate)
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._cut()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        origin_r, origin_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {client_w, origin_w}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, slow: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    if slow:
                        await self._bucket.consume(len(data))
                    w.write(data)
                    await w.drain()
            w.close()
            self._writers.discard(w)

        await asyncio.gather(pipe(client_r, origin_w, False), pipe(origin_r, client_w, True))

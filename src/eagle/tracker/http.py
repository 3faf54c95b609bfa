"""A small HTTP/1.1 server for the tracker: GET only, no request bodies, keep-alive.

Why not aiohttp, which every other Eagle server uses: a tracker answers tens of
thousands of tiny requests a second, most on a fresh connection, and aiohttp's
request handling alone measured ~40 µs a request on this kind of machine against
~10 µs for this hand-written protocol (../shared/CALIBRATION.md). The handler may
answer synchronously (no task is created, the common case with the memory store)
or return an awaitable (the Redis store); either way requests on one connection
are answered in order.

What it refuses, and how: a request head over ``max_head`` bytes → 431, a request
with a body → 400, anything but GET or HEAD → 405, a malformed request line → 400;
the connection is closed after each of those. Idle connections and heads that
trickle in are closed after ``keepalive_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple, cast

log = logging.getLogger(__name__)

MAX_HEAD = 16384
_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class Request(NamedTuple):
    """One request: its line split up, its raw head, and the connection's peer address."""

    method: bytes
    path: bytes
    query: bytes
    head: bytes
    remote: str

    def header(self, name: bytes) -> bytes | None:
        """The last value of header ``name`` (case-insensitive), or None. Parsed on demand."""
        wanted = name.lower()
        found = None
        for line in self.head.split(b"\r\n")[1:]:
            key, sep, value = line.partition(b":")
            if sep and key.strip().lower() == wanted:
                found = value.strip()
        return found


class Response(NamedTuple):
    """What a handler answers."""

    status: int
    body: bytes
    content_type: bytes = b"text/plain"


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class _Connection(asyncio.Protocol):
    """One client connection: parse heads from the buffer, answer them in order."""

    __slots__ = ("buffer", "busy", "keep_alive", "last_active", "remote", "server", "transport")

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False
        self.keep_alive = True
        self.remote = ""
        self.last_active = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if peer else ""
        self.last_active = time.monotonic()
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        self.last_active = time.monotonic()
        if not self.busy:
            self._process()
        elif len(self.buffer) > MAX_HEAD and self.transport is not None:
            # A client pipelining while we wait on the store: stop reading until we catch up.
            self.transport.pause_reading()

    def _process(self) -> None:
        while self.transport is not None and not self.busy:
            buffer = self.buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._fail(431, b"request head too large")
                return
            if end > MAX_HEAD:
                self._fail(431, b"request head too large")
                return
            head = buffer[:end]
            self.buffer = buffer[end + 4 :]
            self._request(head)

    def _request(self, head: bytes) -> None:
        line_end = head.find(b"\r\n")
        line = head if line_end < 0 else head[:line_end]
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._fail(400, b"malformed request line")
            return
        method, target, version = parts
        if method != b"GET" and method != b"HEAD":
            self._fail(405, b"only GET and HEAD")
            return
        lower = head.lower() if line_end >= 0 else b""
        if b"\r\ncontent-length:" in lower or b"\r\ntransfer-encoding:" in lower:
            length = Request(method, b"", b"", head, "").header(b"content-length")
            if length != b"0" or b"\r\ntransfer-encoding:" in lower:
                self._fail(400, b"request bodies are not accepted")
                return
        if version == b"HTTP/1.1":
            self.keep_alive = b"\r\nconnection: close" not in lower
        else:
            self.keep_alive = b"\r\nconnection: keep-alive" in lower
        path, _, query = target.partition(b"?")
        request = Request(method, path, query, head, self.remote)
        try:
            result = self.server.handler(request)
        except Exception:
            log.exception("request handler failed path=%r", path[:100])
            result = Response(500, b"internal error\n")
        if isinstance(result, Response):
            self._send(result, method == b"HEAD")
        else:
            self.busy = True
            task = asyncio.ensure_future(result)
            self.server.pending.add(task)
            task.add_done_callback(lambda done: self._finished(done, method == b"HEAD"))

    def _finished(self, task: asyncio.Future[Response], head_only: bool) -> None:
        self.server.pending.discard(task)
        self.busy = False
        if self.transport is None or task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("request handler failed error=%r", error)
            self._send(Response(500, b"internal error\n"), head_only)
        else:
            self._send(task.result(), head_only)
        if self.transport is not None:
            self.transport.resume_reading()
            self._process()

    def _send(self, response: Response, head_only: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        status, body, content_type = response
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            status,
            _REASONS.get(status, b"Unknown"),
            content_type,
            len(body),
            b"" if self.keep_alive else b"Connection: close\r\n",
        )
        transport.write(head if head_only else head + body)
        self.last_active = time.monotonic()
        if not self.keep_alive:
            transport.close()
            self.transport = None

    def _fail(self, status: int, message: bytes) -> None:
        self.keep_alive = False
        self.buffer = b""
        self._send(Response(status, message + b"\n"))

    def close_if_idle(self, idle_since: float) -> None:
        """Close the connection if nothing happened on it since ``idle_since``."""
        if not self.busy and self.last_active < idle_since:
            self.close()

    def close(self) -> None:
        """Close now; a response not yet written is dropped."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class HttpServer:
    """Serves ``handler`` on ``host:port`` until :meth:`stop`."""

    def __init__(
        self, handler: Handler, host: str, port: int, *, keepalive_timeout: float = 15.0
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[_Connection] = set()
        self.pending: set[asyncio.Future[Response]] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; OSError if the address is taken."""
        loop = asyncio.get_running_loop()
        # A large backlog: new-connection-per-announce clients arrive in bursts.
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True, backlog=4096
        )
        self._sweeper = asyncio.create_task(self._sweep(), name="tracker-http-sweep")

    async def stop(self) -> None:
        """Stop accepting, close every connection, cancel handlers still running."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            for connection in list(self.connections):
                connection.close()
            for task in list(self.pending):
                task.cancel()
            await asyncio.gather(*self.pending, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.keepalive_timeout / 4))
            idle_since = time.monotonic() - self.keepalive_timeout
            for connection in list(self.connections):
                connection.close_if_idle(idle_since)

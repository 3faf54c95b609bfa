"""The agent's listening socket: one port for mirror requests, proxy requests and CONNECT.

Each new connection's first bytes decide. A ``CONNECT`` request is handled
here: refused, tunnelled byte for byte to its target, or intercepted (TLS
terminated with an Eagle CA certificate, then the decrypted connection handed
to the aiohttp application like any other). Any other connection goes to
aiohttp as soon as its first bytes cannot start a CONNECT, with those bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from eagle.core.errors import InvalidInput, NotAllowed
from eagle.utils.net import HostPort

if TYPE_CHECKING:
    from collections.abc import Callable

    from eagle.agent.proxy import ForwardProxy, ProxyTarget

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 32 * 1024
HEAD_TIMEOUT = 30.0
HANDSHAKE_TIMEOUT = 15.0
# After an error answer, unread input is drained this long before closing: closing with
# unread data makes the kernel send a reset, which can destroy the answer in flight.
LINGER_SECONDS = 2.0
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
CONNECT = b"CONNECT "


class ProxyListener:
    """Serves ``app`` on ``listen`` and answers ``CONNECT`` itself (same interface as
    :class:`eagle.utils.http.HttpServer`: ``start``, ``stop``, ``listen``)."""

    def __init__(self, app: web.Application, listen: HostPort, proxy: ForwardProxy) -> None:
        self.app = app
        self.listen = listen
        self.proxy = proxy
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.fronts: set[_Front] = set()

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        factory = runner.server
        if factory is None:
            raise RuntimeError("aiohttp runner has no server after setup")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Front(self, factory),
            self.listen.host,
            self.listen.port,
            reuse_address=True,
        )
        if self.listen.port == 0:
            port = self._server.sockets[0].getsockname()[1]
            self.listen = HostPort(self.listen.host, int(port))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for front in list(self.fronts):
            front.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None


class _Front(asyncio.Protocol):
    """One client connection until it is handed over (to aiohttp) or becomes a tunnel."""

    def __init__(self, listener: ProxyListener, factory: Callable[[], RequestHandler]) -> None:
        self.listener = listener
        self.factory = factory
        self.proxy = listener.proxy
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.state = "head"  # head → connect → tunnel | tls → handed; or closed
        self.eofs = 0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.listener.fronts.add(self)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(HEAD_TIMEOUT, self._head_timeout)

    def data_received(self, data: bytes) -> None:
        if self.state == "tunnel":
            assert self.upstream is not None
            self.upstream.write(data)
            return
        if self.state == "closed":
            return  # draining after an error answer
        self.buffer += data
        if self.state != "head":
            return  # the TLS handshake's first bytes, or data racing a hand-over
        if not self.buffer.startswith(CONNECT[: len(self.buffer)]):
            # Not a CONNECT: aiohttp parses it (and answers garbage, such as a TLS hello
            # from a client probing for https, with a 400 at once).
            self._cancel_timer()
            assert self.transport is not None
            self._hand_over(self.transport)
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or end + 4 > MAX_HEAD_BYTES:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self.reject(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
            return
        self._cancel_timer()
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        self.state = "connect"
        assert self.transport is not None
        self.transport.pause_reading()
        self.proxy.tasks.spawn(self._connect(head), name="connect")

    def eof_received(self) -> bool | None:
        if self.state == "closed" and self.transport is not None:
            self.transport.close()
            return None
        if self.state == "tunnel" and self.upstream is not None:
            if self.upstream.can_write_eof():
                self.upstream.write_eof()
            return self._half_closed()
        return None  # anything else: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self.state != "handed":
            self.state = "closed"
        self.listener.fronts.discard(self)
        if self.upstream is not None:
            self.upstream.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    # -- outcomes --------------------------------------------------------------------------

    def reject(self, status: int, message: str) -> None:
        """Answer with a short error, close the connection, keep serving everyone else."""
        self.proxy.connections.labels("reject").inc()
        transport = self.transport
        self.state = "closed"
        if transport is None or transport.is_closing():
            return
        peer = transport.get_extra_info("peername")
        log.info("proxy connection rejected status=%d peer=%s reason=%s", status, peer, message)
        body = f"eagle proxy: {message}\n".encode()
        reason = HTTPStatus(status).phrase
        transport.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        self.buffer.clear()
        self._cancel_timer()
        if transport.can_write_eof():
            transport.write_eof()
            transport.resume_reading()
            self.timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def abort(self) -> None:
        """Close the connection now (agent shutting down)."""
        if self.transport is not None:
            self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()

    def _hand_over(self, transport: asyncio.Transport) -> None:
        handler = self.factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        self.state = "handed"
        self.listener.fronts.discard(self)
        data, self.buffer = bytes(self.buffer), bytearray()
        if data:
            handler.data_received(data)

    def _head_timeout(self) -> None:
        if self.state == "head":
            self.reject(408, f"no complete request head within {HEAD_TIMEOUT:.0f}s")

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _half_closed(self) -> bool:
        # Each direction's EOF is passed on; once both have ended, close both sockets.
        self.eofs += 1
        if self.eofs >= 2:
            if self.transport is not None:
                self.transport.close()
            if self.upstream is not None:
                self.upstream.close()
            return False
        return True

    # -- CONNECT ---------------------------------------------------------------------------

    async def _connect(self, head: bytes) -> None:
        from eagle.agent.proxy import parse_connect

        try:
            target = parse_connect(head)
        except InvalidInput as exc:
            self.reject(400, str(exc))
            return
        if not self.proxy.enabled:
            self.reject(405, "this agent is not an HTTP proxy (start it with --proxy)")
            return
        try:
            if self.proxy.rules.intercepts(target):
                await self._intercept(target)
            else:
                await self._tunnel(target)
        except Exception:
            log.exception("proxy connection failed target=%s", target.authority)
            self.abort()

    async def _tunnel(self, target: ProxyTarget) -> None:
        try:
            address = await self.proxy.tunnel_address(target)
        except NotAllowed as exc:
            self.reject(403, str(exc))
            return
        except OSError as exc:
            self.reject(502, f"cannot resolve {target.host}: {exc}")
            return
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Pipe(self), address, target.port),
                self.proxy.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self.reject(502, f"cannot connect to {target.authority}: {exc!r}")
            return
        if self.state == "closed" or self.transport is None:
            upstream.close()
            return
        self.upstream = upstream
        self.state = "tunnel"
        self.proxy.connections.labels("tunnel").inc()
        log.debug("tunnel open target=%s address=%s", target.authority, address)
        self.transport.write(ESTABLISHED)
        if self.buffer:
            upstream.write(bytes(self.buffer))
            self.buffer.clear()
        self.transport.resume_reading()

    async def _intercept(self, target: ProxyTarget) -> None:
        assert self.transport is not None
        if self.buffer:
            # A client must wait for our 200 before its TLS ClientHello.
            self.reject(400, "data sent before the tunnel was established")
            return
        context = self.proxy.leaf_context(target.host)
        self.proxy.connections.labels("intercept").inc()
        self.transport.write(ESTABLISHED)
        self.state = "tls"
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                self.transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            # By far the most common cause: the runtime does not trust the Eagle CA.
            log.warning(
                "TLS handshake with proxy client failed host=%s error=%r; does the client"
                " trust the Eagle CA (%s)?",
                target.authority,
                exc,
                self.proxy.ca.cert,
            )
            self.abort()
            return
        if tls is None or self.state == "closed":
            return
        self.proxy.remember(tls, target)
        log.debug("intercepting host=%s", target.authority)
        self._hand_over(tls)


class _Pipe(asyncio.Protocol):
    """The target side of a tunnel: bytes go to the client as they come, with back-pressure."""

    def __init__(self, front: _Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.front.transport is not None:
            self.front.transport.write(data)

    def eof_received(self) -> bool | None:
        client = self.front.transport
        if client is not None and client.can_write_eof():
            client.write_eof()
        return self.front._half_closed()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.front.transport is not None:
            self.front.transport.close()

    def pause_writing(self) -> None:
        if self.front.transport is not None:
            self.front.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.front.transport is not None:
            self.front.transport.resume_reading()

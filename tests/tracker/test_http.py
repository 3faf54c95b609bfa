"""The tracker's small HTTP/1.1 server, spoken to over raw sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest

from eagle.tracker.http import MAX_HEAD, HttpServer, Request, Response
from eagle.utils.net import free_port


async def _slow(request: Request) -> Response:
    await asyncio.sleep(0.05)
    return Response(200, b"slow " + request.query + b"\n")


async def _broken_later() -> Response:
    await asyncio.sleep(0)
    raise RuntimeError("boom")


def handler(request: Request) -> Response | Awaitable[Response]:
    if request.path == b"/slow":
        return _slow(request)
    if request.path == b"/boom":
        raise RuntimeError("boom")
    if request.path == b"/boom-later":
        return _broken_later()
    if request.path == b"/header":
        return Response(200, request.header(b"X-Test") or b"none")
    return Response(200, b"fast " + request.query + b"\n")


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    http = HttpServer(handler, "127.0.0.1", free_port(), keepalive_timeout=0.3)
    await http.start()
    try:
        yield http
    finally:
        await http.stop()


async def exchange(server: HttpServer, data: bytes, *, wait_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    try:
        if wait_close:
            return await asyncio.wait_for(reader.read(), 5)
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


def responses(raw: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each response in a byte stream."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.startswith(b"Content-Length")
            )
        )
        found.append((status, rest[:length]))
        raw = rest[length:]
    return found


GET = b"GET /x?%s HTTP/1.1\r\nHost: t\r\n\r\n"


async def test_keep_alive_and_pipelining_in_order(server: HttpServer) -> None:
    data = (
        GET % b"1"
        + b"GET /slow?2 HTTP/1.1\r\nHost: t\r\n\r\n"
        + GET % b"3"
        + b"GET /x?4 HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    raw = await exchange(server, data)
    assert responses(raw) == [
        (200, b"fast 1\n"),
        (200, b"slow 2\n"),
        (200, b"fast 3\n"),
        (200, b"fast 4\n"),
    ]
    assert raw.count(b"Connection: close") == 1


async def test_http10_closes_unless_keep_alive(server: HttpServer) -> None:
    raw = await exchange(server, b"GET /x?a HTTP/1.0\r\n\r\n")
    assert responses(raw) == [(200, b"fast a\n")]
    raw = await exchange(
        server, b"GET /x?a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", wait_close=False
    )
    assert b"Connection: close" not in raw


async def test_head_has_no_body(server: HttpServer) -> None:
    raw = await exchange(server, b"HEAD /x?abc HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert raw.endswith(b"Content-Length: 9\r\nConnection: close\r\n\r\n")


async def test_headers_on_demand(server: HttpServer) -> None:
    raw = await exchange(
        server, b"GET /header HTTP/1.1\r\nx-test:  yes \r\nConnection: close\r\n\r\n"
    )
    assert responses(raw) == [(200, b"yes")]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400),
        (b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET /x\r\n\r\n", 400),
        (b"GET  /x HTTP/1.1\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        (b"GET /x?" + b"a" * MAX_HEAD + b" HTTP/1.1\r\n\r\n", 431),
        (b"GET /x?" + b"a" * (2 * MAX_HEAD), 431),
    ],
)
async def test_refusals_close_the_connection(server: HttpServer, data: bytes, status: int) -> None:
    raw = await exchange(server, data)
    assert responses(raw)[0][0] == status
    assert b"Connection: close" in raw
    # The server keeps serving.
    assert responses(await exchange(server, b"GET /x?ok HTTP/1.0\r\n\r\n")) == [(200, b"fast ok\n")]


async def test_a_zero_content_length_is_fine(server: HttpServer) -> None:
    raw = await exchange(
        server, b"GET /x?z HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert responses(raw) == [(200, b"fast z\n")]


async def test_handler_errors_are_500_and_the_connection_goes_on(server: HttpServer) -> None:
    raw = await exchange(
        server,
        b"GET /boom HTTP/1.1\r\n\r\nGET /boom-later HTTP/1.1\r\n\r\n"
        b"GET /x?after HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert [status for status, _ in responses(raw)] == [500, 500, 200]


async def test_idle_and_trickling_connections_are_closed(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /x HTTP/1.1\r\n")  # never finished
    # The sweeper closes it after keepalive_timeout (0.3 s); allow for a loaded machine.
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    assert not server.connections


async def test_stop_closes_connections_and_cancels_handlers() -> None:
    http = HttpServer(handler, "127.0.0.1", free_port())
    await http.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    writer.write(b"GET /slow HTTP/1.1\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.01)
    await http.stop()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert not http.connections and not http.pending

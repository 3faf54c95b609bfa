"""Random query strings thrown at a running tracker: every answer is a bencoded dict, a
failure reason or a valid answer, and the tracker keeps serving."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eagle.core.bencode import bdecode
from eagle.tracker.config import TrackerConfig
from eagle.tracker.server import TrackerServer
from eagle.utils.net import free_port

VALID = (
    "info_hash=%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%14"
    "&peer_id=-EG0001-000000000001&port=6881&uploaded=0&downloaded=0&left=10"
)


class ThreadedTracker:
    """A tracker on its own uvloop in a thread, so a synchronous test can talk to it."""

    def __init__(self) -> None:
        self.config = TrackerConfig(listen=f"127.0.0.1:{free_port()}", numwant_max=50)
        self.loop = uvloop.new_event_loop()
        self.server = TrackerServer(self.config)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedTracker:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened if the tracker closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def get(self, target: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += self._recv()
        if b"Connection: close" in head:
            self.close()
        return int(head.split(b" ")[1]), body

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("tracker closed the connection mid-answer")
        return chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@pytest.fixture(scope="module")
def connection() -> Iterator[Connection]:
    with ThreadedTracker() as tracker:
        conn = Connection(tracker.config.listen_address.port)
        yield conn
        conn.close()


_keys = st.sampled_from(
    ["info_hash", "peer_id", "port", "uploaded", "downloaded", "left", "event", "numwant",
     "compact", "idc", "rack", "region", "seeder", "ip", "key", "x%41", "%69dc", ""]
)  # fmt: skip
_values = st.one_of(
    st.binary(max_size=30).map(lambda b: quote_from_bytes(b, safe="")),
    st.text(alphabet="abcXYZ019-_.~%=+!*'()", max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["started", "stopped", "completed", "paused", "", "1", "0", "-1"]),
)
_pairs = st.lists(st.tuples(_keys, _values), max_size=15)


def _query(pairs: list[tuple[str, str]], start_valid: bool) -> bytes:
    text = "&".join(f"{k}={v}" for k, v in pairs)
    return ((VALID + "&" + text) if start_valid else text).encode()


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(_pairs, st.booleans(), st.sampled_from([b"/announce", b"/scrape"]))
def test_random_queries_get_bencoded_answers(
    connection: Connection, pairs: list[tuple[str, str]], start_valid: bool, path: bytes
) -> None:
    status, body = connection.get(path + b"?" + _query(pairs, start_valid))
    assert status == 200
    decoded = bdecode(body)
    assert isinstance(decoded, dict)
    if path == b"/announce":
        assert (b"failure reason" in decoded) != (b"interval" in decoded)
        if b"peers" in decoded:
            assert isinstance(decoded[b"peers"], bytes | list)
    else:
        assert (b"failure reason" in decoded) != (b"files" in decoded)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=9000))
def test_oversized_and_binary_queries(connection: Connection, junk: bytes) -> None:
    escaped = quote_from_bytes(junk, safe="&=%").encode()
    status, body = connection.get(b"/announce?" + VALID.encode() + b"&k=" + escaped)
    assert status in (200, 431)
    if status == 200:
        decoded = bdecode(body)
        assert isinstance(decoded, dict)
        assert (b"failure reason" in decoded) != (b"interval" in decoded)


def test_still_serving_afterwards(connection: Connection) -> None:
    status, body = connection.get(b"/announce?" + VALID.encode())
    assert status == 200
    assert b"interval" in bdecode(body)  # type: ignore[operator]
    assert connection.get(b"/healthz") == (200, b"ok\n")

"""TrackerServer over loopback HTTP: aiohttp clients with hand-built queries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
import yarl

from eagle.core.bencode import bdecode
from eagle.testing.redis import RedisServer
from eagle.tracker.config import TrackerConfig
from eagle.tracker.memstore import MemoryPeerStore
from eagle.tracker.server import TrackerServer
from eagle.utils.net import free_port

from .helpers import FakeClock

INFO_HASH = bytes(range(0xEC, 0x100))
OTHER_HASH = b"%&=+" * 5


def esc(value: bytes) -> str:
    return quote_from_bytes(value, safe="")


def announce_query(
    port: int,
    *,
    info_hash: bytes = INFO_HASH,
    left: int = 100,
    event: str | None = "started",
    compact: int = 1,
    extra: str = "",
) -> str:
    peer_id = b"-EG0001-" + str(port).encode().rjust(12, b"0")
    query = (
        f"info_hash={esc(info_hash)}&peer_id={esc(peer_id)}&port={port}"
        f"&uploaded=0&downloaded=0&left={left}&compact={compact}&numwant=50{extra}"
    )
    return query + (f"&event={event}" if event else "")


class Client:
    """An aiohttp session pointed at one tracker."""

    def __init__(self, session: aiohttp.ClientSession, tracker: TrackerServer) -> None:
        self.session = session
        self.base = tracker.url.removesuffix("/announce")

    async def get(
        self, path: str, raw_query: str = "", headers: dict[str, str] | None = None
    ) -> tuple[int, str, bytes]:
        url = yarl.URL(
            f"{self.base}{path}?{raw_query}" if raw_query else self.base + path, encoded=True
        )
        async with self.session.get(url, headers=headers) as response:
            return response.status, response.content_type, await response.read()

    async def announce(
        self, raw_query: str, headers: dict[str, str] | None = None
    ) -> dict[bytes, object]:
        status, content_type, body = await self.get("/announce", raw_query, headers)
        assert status == 200
        assert content_type == "text/plain"
        decoded = bdecode(body)
        assert isinstance(decoded, dict)
        return decoded


def config(**overrides: object) -> TrackerConfig:
    return TrackerConfig.model_validate(
        {"listen": f"127.0.0.1:{free_port()}", "interval": 5, "peer_ttl": 15, **overrides}
    )


@pytest.fixture
async def tracker(clock: FakeClock) -> AsyncIterator[TrackerServer]:
    cfg = config()
    server = TrackerServer(cfg, MemoryPeerStore.from_config(cfg, clock))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(tracker: TrackerServer) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, tracker)


def compact_ports(response: dict[bytes, object], ip: bytes = b"\x7f\x00\x00\x01") -> list[int]:
    peers = response[b"peers"]
    assert isinstance(peers, bytes)
    assert len(peers) % 6 == 0
    chunks = [peers[i : i + 6] for i in range(0, len(peers), 6)]
    assert all(chunk[:4] == ip for chunk in chunks)
    return sorted(int.from_bytes(chunk[4:], "big") for chunk in chunks)


async def test_url(tracker: TrackerServer) -> None:
    assert tracker.url == f"http://{tracker.config.listen}/announce"
    assert TrackerServer(TrackerConfig(listen="0.0.0.0:1")).url == "http://127.0.0.1:1/announce"


async def test_two_peers_see_each_other(client: Client) -> None:
    first = await client.announce(announce_query(6881))
    assert first[b"interval"] == 5
    assert compact_ports(first) == []
    second = await client.announce(announce_query(6882, left=0))
    assert compact_ports(second) == [6881]
    assert (second[b"complete"], second[b"incomplete"]) == (1, 1)
    again = await client.announce(announce_query(6881, event=None))
    assert compact_ports(again) == [6882]
    # Another swarm sees none of them.
    assert compact_ports(await client.announce(announce_query(7000, info_hash=OTHER_HASH))) == []


async def test_non_compact(client: Client) -> None:
    await client.announce(announce_query(6881))
    response = await client.announce(announce_query(6882, compact=0))
    assert response[b"peers"] == [
        {b"ip": b"127.0.0.1", b"port": 6881, b"peer id": b"-EG0001-000000006881"}
    ]


async def test_stopped_and_completed(client: Client) -> None:
    await client.announce(announce_query(6881))
    await client.announce(announce_query(6882))
    done = await client.announce(announce_query(6881, left=0, event="completed"))
    assert (done[b"complete"], done[b"incomplete"]) == (1, 1)
    stopped = await client.announce(announce_query(6882, event="stopped"))
    assert compact_ports(stopped) == []
    assert (stopped[b"complete"], stopped[b"incomplete"]) == (1, 0)
    assert compact_ports(await client.announce(announce_query(6883))) == [6881]


async def test_expiry(client: Client, clock: FakeClock) -> None:
    await client.announce(announce_query(6881))
    clock.advance(10)
    await client.announce(announce_query(6882))
    clock.advance(5)  # 6881 has been silent for its whole ttl (15 s)
    response = await client.announce(announce_query(6883))
    assert compact_ports(response) == [6882]
    assert response[b"incomplete"] == 2


async def test_scrape(client: Client) -> None:
    await client.announce(announce_query(6881, left=0))
    await client.announce(announce_query(6882))
    await client.announce(announce_query(6882, left=0, event="completed"))
    await client.announce(announce_query(6883, info_hash=OTHER_HASH))
    status, content_type, body = await client.get("/scrape", f"info_hash={esc(INFO_HASH)}")
    assert (status, content_type) == (200, "text/plain")
    assert bdecode(body) == {
        b"files": {INFO_HASH: {b"complete": 2, b"incomplete": 0, b"downloaded": 1}}
    }
    _, _, body = await client.get("/scrape")
    files = bdecode(body)
    assert isinstance(files, dict)
    assert set(files[b"files"]) == {INFO_HASH, OTHER_HASH}
    _, _, body = await client.get("/scrape", "info_hash=short")
    assert b"failure reason" in body


async def test_swarms_view(client: Client) -> None:
    await client.announce(announce_query(6881, left=0, extra="&idc=fra1&seeder=1"))
    await client.announce(announce_query(6882, extra="&idc=fra1&rack=r1"))
    await client.announce(announce_query(6883, left=0, event="completed", extra="&idc=ams1"))
    await client.announce(announce_query(6884))
    status, content_type, body = await client.get("/v1/swarms")
    assert (status, content_type) == (200, "application/json")
    view = json.loads(body)
    assert view == {
        "policy": "default",
        "swarms": {
            INFO_HASH.hex(): {
                "complete": 2,
                "incomplete": 2,
                "seeders": 1,
                "downloaded": 1,
                "idcs": {
                    "": {"complete": 0, "seeders": 0, "incomplete": 1},
                    "ams1": {"complete": 1, "seeders": 0, "incomplete": 0},
                    "fra1": {"complete": 1, "seeders": 1, "incomplete": 1},
                },
            }
        },
    }
    _, _, body = await client.get("/v1/swarms", f"info_hash={OTHER_HASH.hex()}&limit=5")
    assert json.loads(body)["swarms"] == {
        OTHER_HASH.hex(): {
            "complete": 0,
            "incomplete": 0,
            "seeders": 0,
            "downloaded": 0,
            "idcs": {},
        }
    }
    for bad in ("info_hash=zz", "limit=0", "limit=abc", "bogus=1"):
        status, _, body = await client.get("/v1/swarms", bad)
        assert status == 400
        assert "error" in json.loads(body)


async def test_ops_routes(client: Client) -> None:
    status, _, body = await client.get("/healthz")
    assert (status, body) == (200, b"ok\n")
    await client.announce(announce_query(6881))
    await client.announce(announce_query(6882))
    await client.announce("garbage")
    status, _, body = await client.get("/metrics")
    text = body.decode()
    assert status == 200
    assert 'eagle_tracker_announces_total{event="started",result="ok"} 2.0' in text
    assert 'eagle_tracker_announces_total{event="invalid",result="invalid"} 1.0' in text
    assert "eagle_tracker_peers_handed_out_total 1.0" in text
    assert "eagle_tracker_peers 2.0" in text
    assert "eagle_tracker_swarms 1.0" in text
    status, _, _ = await client.get("/nowhere")
    assert status == 404


async def test_two_trackers_in_one_process() -> None:
    # Each has its own metrics registry: creating the second must not collide.
    servers = [TrackerServer(config()) for _ in range(2)]
    for server in servers:
        await server.start()
    for server in servers:
        await server.stop()


@pytest.mark.parametrize(
    ("raw_query", "reason"),
    [
        (announce_query(6881).replace(esc(INFO_HASH), esc(INFO_HASH[:10])), b"info_hash"),
        (announce_query(6881).replace("peer_id=", "peer_id=xx"), b"peer_id"),
        (announce_query(6881).replace("port=6881", "port=99999"), b"port"),
        (announce_query(6881).replace("port=6881", "port=-1"), b"port"),
        (announce_query(6881).replace("port=6881", "port=http"), b"port"),
        (announce_query(6881, event="bogus"), b"unknown event"),
        (announce_query(6881) + "&key=" + "k" * 5000, b"too long"),
        (announce_query(6881) + f"&info_hash={esc(INFO_HASH)}", b"repeated"),
        (announce_query(6881, extra="&idc=a%20b"), b"idc label"),
        (announce_query(6881, extra="&seeder=2"), b"seeder"),
        ("", b"missing"),
        ("%%%&&&===", b"missing"),
    ],
)
async def test_garbage_gets_failure_reason(client: Client, raw_query: str, reason: bytes) -> None:
    response = await client.announce(raw_query)
    failure = response[b"failure reason"]
    assert isinstance(failure, bytes)
    assert reason in failure
    # The tracker still serves the next valid announce.
    assert b"interval" in await client.announce(announce_query(6882))


async def test_huge_numwant_is_clamped(client: Client) -> None:
    for port in range(7000, 7005):
        await client.announce(announce_query(port))
    query = announce_query(6881).replace("numwant=50", f"numwant={10**12}")
    assert len(compact_ports(await client.announce(query))) == 5


async def test_store_error_is_internal_error(
    client: Client, tracker: TrackerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("store down")

    monkeypatch.setattr(tracker.store, "announce_nowait", broken)
    response = await client.announce(announce_query(6881))
    assert response == {b"failure reason": b"internal error"}
    monkeypatch.undo()
    assert b"interval" in await client.announce(announce_query(6881))


async def test_trusted_proxy_names_the_client() -> None:
    server = TrackerServer(config(trusted_proxies=["127.0.0.0/8"]))
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(session, server)
            forwarded = {"X-Forwarded-For": "203.0.113.9, 10.1.2.3"}
            await client.announce(announce_query(6881), forwarded)
            response = await client.announce(announce_query(6882))
            assert compact_ports(response, ip=bytes([10, 1, 2, 3])) == [6881]
            bad = await client.announce(announce_query(6883), {"X-Forwarded-For": "nope"})
            assert b"client address" in bad[b"failure reason"]  # type: ignore[operator]
    finally:
        await server.stop()


async def test_untrusted_forwarded_header_is_ignored(client: Client) -> None:
    await client.announce(announce_query(6881), {"X-Forwarded-For": "10.1.2.3"})
    assert compact_ports(await client.announce(announce_query(6882))) == [6881]


async def test_locations_file_labels_stock_clients(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "loc.yaml").write_text("127.0.0.0/8: {region: eu, idc: lo}\n")
    cfg = config(locations=str(tmp_path / "loc.yaml"))
    server = TrackerServer(cfg, MemoryPeerStore.from_config(cfg, clock))
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(session, server)
            await client.announce(announce_query(6881))
            # Labels on the URL win, label by label, over the map's.
            await client.announce(announce_query(6882, extra="&idc=own&rack=r1"))
            _, _, body = await client.get("/v1/swarms")
            idcs = json.loads(body)["swarms"][INFO_HASH.hex()]["idcs"]
            assert set(idcs) == {"lo", "own"}
    finally:
        await server.stop()


async def test_health_reports_an_unreachable_store(tmp_path: Path) -> None:
    # A Redis that is not running: the tracker starts, and says it is unhealthy.
    cfg = config(peer_store=f"redis://127.0.0.1:{free_port()}/0")
    server = TrackerServer(cfg)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(session, server)
            status, _, body = await client.get("/healthz")
            assert (status, body) == (503, b"peer store unavailable\n")
            response = await client.announce(announce_query(6881))
            assert response == {b"failure reason": b"peer store unavailable"}
            status, _, _ = await client.get("/metrics")
            assert status == 200
    finally:
        await server.stop()


async def test_two_trackers_share_one_redis(redis_server: RedisServer) -> None:
    servers = [TrackerServer(config(peer_store=redis_server.url)) for _ in range(2)]
    for server in servers:
        await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            a, b = (Client(session, server) for server in servers)
            await a.announce(announce_query(6881, left=0))
            response = await b.announce(announce_query(6882))
            assert compact_ports(response) == [6881]
            assert (response[b"complete"], response[b"incomplete"]) == (1, 1)
            _, _, body = await a.get("/scrape", f"info_hash={esc(INFO_HASH)}")
            assert bdecode(body) == {
                b"files": {INFO_HASH: {b"complete": 1, b"incomplete": 1, b"downloaded": 0}}
            }
            status, _, _ = await b.get("/healthz")
            assert status == 200
    finally:
        for server in servers:
            await server.stop()


async def test_periodic_purge(clock: FakeClock) -> None:
    cfg = config(interval=1, peer_ttl=None)
    store = MemoryPeerStore.from_config(cfg, clock)
    server = TrackerServer(cfg, store, purge_interval=0.05)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            await Client(session, server).announce(announce_query(6881))
        assert await store.totals() == (1, 1)
        clock.advance(3)
        for _ in range(100):
            if await store.totals() == (0, 0):
                break
            await asyncio.sleep(0.02)
        assert await store.totals() == (0, 0)
    finally:
        await server.stop()
    # A store it was given is left open, still usable.
    assert await store.swarms(10) == []

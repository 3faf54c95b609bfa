"""TrackerServer over loopback HTTP: aiohttp clients with hand-built queries, and libtorrent."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
import yarl

from eagle.core.bencode import bdecode
from eagle.tracker.config import TrackerConfig
from eagle.tracker.peerstore import MemoryPeerStore
from eagle.tracker.server import TrackerServer
from eagle.utils.net import free_port

from .test_peerstore import FakeClock

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
) -> str:
    peer_id = b"-EG0001-" + str(port).encode().rjust(12, b"0")
    query = (
        f"info_hash={esc(info_hash)}&peer_id={esc(peer_id)}&port={port}"
        f"&uploaded=0&downloaded=0&left={left}&compact={compact}&numwant=50"
    )
    return query + (f"&event={event}" if event else "")


class Client:
    """An aiohttp session pointed at one tracker."""

    def __init__(self, session: aiohttp.ClientSession, tracker: TrackerServer) -> None:
        self.session = session
        self.base = tracker.url.removesuffix("/announce")

    async def get(self, path: str, raw_query: str = "") -> tuple[int, str, bytes]:
        url = yarl.URL(
            f"{self.base}{path}?{raw_query}" if raw_query else self.base + path, encoded=True
        )
        async with self.session.get(url) as response:
            return response.status, response.content_type, await response.read()

    async def announce(self, raw_query: str) -> dict[bytes, object]:
        status, content_type, body = await self.get("/announce", raw_query)
        assert status == 200
        assert content_type == "text/plain"
        decoded = bdecode(body)
        assert isinstance(decoded, dict)
        return decoded


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def tracker(clock: FakeClock) -> AsyncIterator[TrackerServer]:
    config = TrackerConfig(listen=f"127.0.0.1:{free_port()}", interval=5, peer_ttl=15)
    server = TrackerServer(config, MemoryPeerStore.from_config(config, clock))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(tracker: TrackerServer) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, tracker)


def compact_ports(response: dict[bytes, object]) -> list[int]:
    peers = response[b"peers"]
    assert isinstance(peers, bytes)
    assert len(peers) % 6 == 0
    chunks = [peers[i : i + 6] for i in range(0, len(peers), 6)]
    assert all(chunk[:4] == b"\x7f\x00\x00\x01" for chunk in chunks)
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
    assert "eagle_tracker_peers 2.0" in text
    assert "eagle_tracker_swarms 1.0" in text


async def test_two_trackers_in_one_process() -> None:
    # Each has its own metrics registry: creating the second must not collide.
    servers = [TrackerServer(TrackerConfig(listen=f"127.0.0.1:{free_port()}")) for _ in range(2)]
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
        (announce_query(6881, event="bogus"), b"unknown event"),
        (announce_query(6881) + "&key=" + "k" * 5000, b"too long"),
        (announce_query(6881) + f"&info_hash={esc(INFO_HASH)}", b"repeated"),
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
    async def broken(*_: object) -> None:
        raise RuntimeError("store down")

    monkeypatch.setattr(tracker.store, "announce", broken)
    response = await client.announce(announce_query(6881))
    assert response == {b"failure reason": b"internal error"}
    monkeypatch.undo()
    assert b"interval" in await client.announce(announce_query(6881))


async def test_periodic_purge(clock: FakeClock) -> None:
    config = TrackerConfig(listen=f"127.0.0.1:{free_port()}", interval=1)
    store = MemoryPeerStore.from_config(config, clock)
    server = TrackerServer(config, store, purge_interval=0.05)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            await Client(session, server).announce(announce_query(6881))
        assert await store.totals() == (1, 1)
        clock.advance(3)
        for _ in range(100):
            if store._swarms == {}:
                break
            await asyncio.sleep(0.02)
        assert await store.totals() == (0, 0)
    finally:
        await server.stop()
    assert await store.totals() == (0, 0)  # a store it was given: left open, still usable


# --- a real BitTorrent client -------------------------------------------------------------

lt = pytest.importorskip("libtorrent")


def _session() -> object:
    return lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "allow_multiple_connections_per_ip": True,
            # libtorrent ignores tracker intervals below this (default five minutes).
            "min_announce_interval": 1,
            "alert_mask": 0,
        }
    )


def _add_torrent(session: object, info: object, save_path: Path, flags: int = 0) -> object:
    params = lt.add_torrent_params()
    params.ti, params.save_path, params.flags = info, str(save_path), flags
    return session.add_torrent(params)  # type: ignore[attr-defined]


async def _wait_for(predicate: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_libtorrent_download_through_tracker(tmp_path: Path) -> None:
    config = TrackerConfig(listen=f"127.0.0.1:{free_port()}", interval=1)
    tracker = TrackerServer(config)
    await tracker.start()
    seed_dir, leech_dir = tmp_path / "seed", tmp_path / "leech"
    seed_dir.mkdir()
    leech_dir.mkdir()
    payload = hashlib.sha256(b"eagle").digest() * 4096  # 128 KiB: 8 pieces
    (seed_dir / "blob").write_bytes(payload)

    creator = lt.create_torrent(
        lt.list_files(str(seed_dir / "blob")), 16 * 1024, lt.create_torrent.v1_only
    )
    creator.add_tracker(tracker.url)
    lt.set_piece_hashes(creator, str(seed_dir))
    info = lt.torrent_info(creator.generate())
    info_hash = info.info_hashes().v1.to_bytes()
    store = tracker.store

    async def counts_are(expected: tuple[int, int]) -> bool:
        return await store.counts(info_hash) == expected

    seeder, leecher = _session(), _session()
    try:
        seed = _add_torrent(seeder, info, seed_dir, lt.torrent_flags.seed_mode)
        # The seeder announces first, so the leecher's first answer already holds it.
        assert await _wait_for(lambda: counts_are((1, 0)), 10)
        leech = _add_torrent(leecher, lt.torrent_info(info), leech_dir)

        async def leech_done() -> bool:
            return bool(leech.status().is_seeding)  # type: ignore[attr-defined]

        assert await _wait_for(leech_done, 30), leech.status().state  # type: ignore[attr-defined]
        assert (leech_dir / "blob").read_bytes() == payload
        assert await _wait_for(lambda: counts_are((2, 0)), 10)
        assert await store.downloaded(info_hash) == 1

        # Removing the torrents sends event=stopped, which empties the swarm. It also
        # spares the session destructors from blocking the loop (and so this tracker)
        # while they wait for stop announces.
        seeder.remove_torrent(seed)  # type: ignore[attr-defined]
        leecher.remove_torrent(leech)  # type: ignore[attr-defined]
        assert await _wait_for(lambda: counts_are((0, 0)), 10)
    finally:
        del seeder, leecher
        await tracker.stop()

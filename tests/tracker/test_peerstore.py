"""MemoryPeerStore: refresh, expiry on an injected clock, exclusion, bounds, counts."""

from __future__ import annotations

import random

import pytest

from eagle.core.peer import Peer, PeerAddress
from eagle.tracker.config import TrackerConfig
from eagle.tracker.peerstore import MemoryPeerStore

SWARM = b"s" * 20
OTHER = b"o" * 20


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def peer(port: int, complete: bool = False, ip: str = "127.0.0.1", pid: bytes = b"") -> Peer:
    return Peer((pid or b"%05d" % port).ljust(20, b"-"), PeerAddress(ip, port), complete)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryPeerStore:
    return MemoryPeerStore(clock=clock, rng=random.Random(1))


async def test_insert_and_sample(store: MemoryPeerStore) -> None:
    await store.announce(SWARM, peer(1), ttl=10)
    await store.announce(SWARM, peer(2, complete=True), ttl=10)
    assert sorted(p.address.port for p in await store.sample(SWARM, 50)) == [1, 2]
    assert await store.counts(SWARM) == (1, 1)
    assert await store.swarms() == [SWARM]
    assert await store.totals() == (1, 2)
    assert await store.sample(OTHER, 50) == []
    assert await store.counts(OTHER) == (0, 0)


async def test_sample_excludes_requester(store: MemoryPeerStore) -> None:
    for port in range(1, 6):
        await store.announce(SWARM, peer(port), ttl=10)
    me = PeerAddress("127.0.0.1", 3)
    for numwant in range(7):
        got = await store.sample(SWARM, numwant, exclude=me)
        ports = [p.address.port for p in got]
        assert len(ports) == min(numwant, 4)
        assert 3 not in ports
        assert len(set(ports)) == len(ports)
    # Excluding a peer that is not in the swarm takes nothing away.
    assert len(await store.sample(SWARM, 50, exclude=PeerAddress("127.0.0.1", 99))) == 5


async def test_sample_sizes_and_distinctness(clock: FakeClock) -> None:
    for size in range(1, 25):
        store = MemoryPeerStore(clock=clock, rng=random.Random(size))
        for port in range(1, size + 1):
            await store.announce(SWARM, peer(port), ttl=10)
        for numwant in range(size + 3):
            for me in (None, PeerAddress("127.0.0.1", 1 + numwant % size)):
                ports = [p.address.port for p in await store.sample(SWARM, numwant, me)]
                assert len(ports) == min(numwant, size - (me is not None))
                assert len(set(ports)) == len(ports)
                assert me is None or me.port not in ports


async def test_only_peer_gets_nobody(store: MemoryPeerStore) -> None:
    await store.announce(SWARM, peer(1), ttl=10)
    assert await store.sample(SWARM, 50, exclude=PeerAddress("127.0.0.1", 1)) == []


async def test_sample_is_spread_over_swarm(store: MemoryPeerStore) -> None:
    for port in range(1, 1001):
        await store.announce(SWARM, peer(port), ttl=10)
    seen: set[int] = set()
    for _ in range(50):
        got = await store.sample(SWARM, 20)
        assert len({p.address for p in got}) == 20
        seen.update(p.address.port for p in got)
    # 50 draws of 20 from 1000: random offsets should reach far more than one slice.
    assert len(seen) > 500


async def test_refresh_replaces_same_address(store: MemoryPeerStore) -> None:
    await store.announce(SWARM, peer(1, pid=b"old"), ttl=10)
    await store.announce(SWARM, peer(1, complete=True, pid=b"new"), ttl=10)
    (only,) = await store.sample(SWARM, 50)
    assert only.peer_id.startswith(b"new")
    assert await store.counts(SWARM) == (1, 0)
    assert await store.totals() == (1, 1)
    # Same port on another IP is another peer.
    await store.announce(SWARM, peer(1, ip="127.0.0.2"), ttl=10)
    assert await store.counts(SWARM) == (1, 1)


async def test_expiry(store: MemoryPeerStore, clock: FakeClock) -> None:
    await store.announce(SWARM, peer(1), ttl=10)
    await store.announce(SWARM, peer(2), ttl=10)
    clock.advance(6)
    await store.announce(SWARM, peer(2), ttl=10)  # refresh: lives until +16
    clock.advance(4)  # peer 1 expires exactly now
    assert [p.address.port for p in await store.sample(SWARM, 50)] == [2]
    assert await store.counts(SWARM) == (0, 1)
    clock.advance(6)
    assert await store.sample(SWARM, 50) == []
    assert await store.swarms() == []
    assert await store.totals() == (0, 0)


async def test_periodic_purge(store: MemoryPeerStore, clock: FakeClock) -> None:
    await store.announce(SWARM, peer(1), ttl=10)
    await store.announce(OTHER, peer(1), ttl=30)
    assert await store.purge(clock.now + 5) == 0
    assert await store.purge(clock.now + 10) == 1
    assert await store.totals() == (1, 1)
    clock.advance(30)
    assert await store.purge() == 1
    assert await store.totals() == (0, 0)


async def test_many_refreshes_keep_heap_bounded(store: MemoryPeerStore, clock: FakeClock) -> None:
    for _ in range(1000):
        clock.advance(0.01)
        await store.announce(SWARM, peer(1), ttl=10)
    swarm = store._swarms[SWARM]
    assert len(swarm.heap) <= 2 * len(swarm) + 64 + 1
    clock.advance(9.99)
    assert len(await store.sample(SWARM, 5)) == 1
    clock.advance(0.01)
    assert await store.sample(SWARM, 5) == []


async def test_stopped_removal(store: MemoryPeerStore) -> None:
    await store.announce(SWARM, peer(1, complete=True), ttl=10)
    await store.announce(SWARM, peer(2), ttl=10)
    await store.remove(SWARM, PeerAddress("127.0.0.1", 1))
    assert await store.counts(SWARM) == (0, 1)
    await store.remove(SWARM, PeerAddress("127.0.0.1", 1))  # again: no error
    await store.remove(OTHER, PeerAddress("127.0.0.1", 1))  # unknown swarm: no error
    await store.remove(SWARM, PeerAddress("127.0.0.1", 2))
    assert await store.swarms() == []
    assert await store.totals() == (0, 0)


async def test_swarm_bound_evicts_oldest_expiring(clock: FakeClock) -> None:
    store = MemoryPeerStore(max_swarm_peers=3, clock=clock)
    for port in (1, 2, 3):
        await store.announce(SWARM, peer(port), ttl=10)
        clock.advance(1)
    await store.announce(SWARM, peer(1), ttl=10)  # refreshed: now 2 is the oldest
    await store.announce(SWARM, peer(4), ttl=10)
    assert sorted(p.address.port for p in await store.sample(SWARM, 50)) == [1, 3, 4]
    # A refresh of a present peer evicts nobody.
    await store.announce(SWARM, peer(3), ttl=10)
    assert await store.totals() == (1, 3)


async def test_swarm_count_bound(clock: FakeClock) -> None:
    store = MemoryPeerStore(max_swarms=2, clock=clock)
    hashes = [bytes([i]) * 20 for i in range(3)]
    await store.announce(hashes[0], peer(1), ttl=10)
    await store.announce(hashes[1], peer(1), ttl=10)
    await store.announce(hashes[0], peer(2), ttl=10)  # swarm 0 is now the fresher one
    await store.announce(hashes[2], peer(1), ttl=10)
    assert sorted(await store.swarms()) == [hashes[0], hashes[2]]
    assert await store.totals() == (2, 3)


async def test_downloaded(store: MemoryPeerStore) -> None:
    await store.announce(SWARM, peer(1, complete=True), ttl=10)
    await store.record_completed(SWARM)
    await store.record_completed(SWARM)
    await store.record_completed(OTHER)  # unknown swarm: ignored
    assert await store.downloaded(SWARM) == 2
    assert await store.downloaded(OTHER) == 0


async def test_from_config_and_close(clock: FakeClock) -> None:
    store = MemoryPeerStore.from_config(TrackerConfig(max_swarm_peers=7, max_swarms=9), clock)
    assert (store.max_swarm_peers, store.max_swarms) == (7, 9)
    await store.announce(SWARM, peer(1), ttl=10)
    await store.close()
    assert await store.totals() == (0, 0)


def test_config_ttl_and_validation() -> None:
    assert TrackerConfig(interval=5).effective_ttl == 15
    assert TrackerConfig(interval=5, peer_ttl=7).effective_ttl == 7
    assert TrackerConfig(listen="[::1]:80").listen_address == ("::1", 80)
    for bad in ({"listen": "nope"}, {"interval": 0}, {"numwant_default": 300}, {"bogus": 1}):
        with pytest.raises(ValueError):
            TrackerConfig.model_validate(bad)

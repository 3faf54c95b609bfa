"""The PeerStore conformance suite: every backend (memory, Redis) must pass all of it.

A new backend is done when it is added to the ``make_store`` fixture and this passes.
"""

from __future__ import annotations

import asyncio
import random

from eagle.tracker.handout import DefaultPolicy, HandoutPolicy, Kind, RandomPolicy
from eagle.tracker.locations import Location
from eagle.tracker.peerstore import PeerStore

from .conftest import StoreMaker
from .helpers import OTHER, SWARM, FakeClock, address, peer_announce, ports

ME = 9999


def default() -> HandoutPolicy:
    return DefaultPolicy(rng=random.Random(0))


async def test_peers_see_each_other_never_themselves(store: PeerStore) -> None:
    policy = default()
    first = await store.announce(peer_announce(1), policy)
    assert (first.addresses, first.complete, first.incomplete) == ([], 0, 1)
    second = await store.announce(peer_announce(2, kind=Kind.COMPLETE), policy)
    assert ports(second.addresses) == [1]
    assert (second.complete, second.incomplete) == (1, 1)
    again = await store.announce(peer_announce(1), policy)
    assert ports(again.addresses) == [2]
    # Another swarm sees none of them.
    other = await store.announce(peer_announce(3, info_hash=OTHER), policy)
    assert (other.addresses, other.complete, other.incomplete) == ([], 0, 1)


async def test_numwant_and_no_duplicates(store: PeerStore) -> None:
    policy = RandomPolicy(rng=random.Random(1))
    for port in range(1, 31):
        await store.announce(peer_announce(port, numwant=0), policy)
    for numwant in (0, 1, 7, 29, 30, 200):
        handout = await store.announce(peer_announce(5, numwant=numwant), policy)
        got = ports(handout.addresses)
        assert len(got) == min(numwant, 29)
        assert len(set(got)) == len(got)
        assert 5 not in got


async def test_least_recently_handed_out_first(store: PeerStore) -> None:
    policy = default()
    for port in range(1, 10):
        await store.announce(peer_announce(port, numwant=0), policy)
    seen: list[int] = []
    for _ in range(3):
        seen += ports((await store.announce(peer_announce(ME, numwant=3), policy)).addresses)
    # Nine peers, three answers of three: every peer once before any twice.
    assert sorted(seen) == list(range(1, 10))


async def test_refresh_replaces_same_address(store: PeerStore) -> None:
    policy = default()
    await store.announce(peer_announce(1, peer_id=b"old"), policy)
    await store.announce(peer_announce(1, peer_id=b"new", kind=Kind.COMPLETE), policy)
    handout = await store.announce(peer_announce(2, with_peer_ids=True), policy)
    assert handout.peer_ids is not None and handout.peer_ids[0].startswith(b"new")
    assert (handout.complete, handout.incomplete) == (1, 1)
    (stats,) = await store.stats([SWARM])
    assert stats.locations == {Location(): (1, 0, 1)}
    # The same port on another IP is another peer.
    await store.announce(peer_announce(1, ip="127.0.0.2"), policy)
    (stats,) = await store.stats([SWARM])
    assert (stats.complete, stats.incomplete) == (1, 2)


async def test_peer_ids_only_when_asked(store: PeerStore) -> None:
    policy = default()
    await store.announce(peer_announce(1), policy)
    assert (await store.announce(peer_announce(2), policy)).peer_ids is None
    with_ids = await store.announce(peer_announce(3, with_peer_ids=True), policy)
    assert with_ids.peer_ids is not None
    assert len(with_ids.peer_ids) == len(with_ids.addresses) == 2
    assert all(len(pid) == 20 for pid in with_ids.peer_ids)


async def test_ipv6_peers(store: PeerStore) -> None:
    policy = default()
    await store.announce(peer_announce(1, ip="2001:db8::1"), policy)
    handout = await store.announce(peer_announce(2), policy)
    assert handout.addresses == [address(1, "2001:db8::1")]


async def test_stopped_removes_and_empty_swarm_is_forgotten(store: PeerStore) -> None:
    policy = default()
    await store.announce(peer_announce(1, kind=Kind.COMPLETE), policy)
    await store.announce(peer_announce(2), policy)
    stopped = await store.announce(peer_announce(1, event="stopped"), policy)
    assert (stopped.addresses, stopped.complete, stopped.incomplete) == ([], 0, 1)
    again = await store.announce(peer_announce(1, event="stopped"), policy)  # no error
    assert (again.complete, again.incomplete) == (0, 1)
    unknown = await store.announce(peer_announce(1, event="stopped", info_hash=OTHER), policy)
    assert (unknown.complete, unknown.incomplete) == (0, 0)
    await store.announce(peer_announce(2, event="stopped"), policy)
    assert await store.swarms(10) == []
    assert await store.totals() == (0, 0)
    (stats,) = await store.stats([SWARM])
    assert (stats.locations, stats.downloaded) == ({}, 0)


async def test_expiry(store: PeerStore, clock: FakeClock) -> None:
    policy = default()
    await store.announce(peer_announce(1, ttl=10), policy)
    await store.announce(peer_announce(2, ttl=10), policy)
    clock.advance(6)
    await store.announce(peer_announce(2, ttl=10, numwant=0), policy)  # lives until +16
    clock.advance(4)  # peer 1 expires exactly now
    handout = await store.announce(peer_announce(3, ttl=10), policy)
    assert ports(handout.addresses) == [2]
    assert (handout.complete, handout.incomplete) == (0, 2)
    clock.advance(10)
    (stats,) = await store.stats([SWARM])
    assert stats.locations == {}
    assert await store.swarms(10) == []
    await store.purge()
    assert await store.totals() == (0, 0)


async def test_purge_forgets_dead_swarms(store: PeerStore, clock: FakeClock) -> None:
    policy = default()
    await store.announce(peer_announce(1, ttl=10), policy)
    await store.announce(peer_announce(1, ttl=30, info_hash=OTHER), policy)
    assert await store.totals() == (2, 2)
    clock.advance(10)
    await store.purge()
    assert await store.swarms(10) == [OTHER]
    assert await store.totals() == (1, 1)
    clock.advance(20)
    await store.purge()
    assert await store.totals() == (0, 0)


async def test_downloaded_counts_completed_events(store: PeerStore) -> None:
    policy = default()
    await store.announce(peer_announce(1), policy)
    await store.announce(peer_announce(1, kind=Kind.COMPLETE, event="completed"), policy)
    await store.announce(peer_announce(2, kind=Kind.COMPLETE, event="completed"), policy)
    await store.announce(peer_announce(2, kind=Kind.COMPLETE), policy)  # not an event
    (stats, other) = await store.stats([SWARM, OTHER])
    assert stats.downloaded == 2
    assert (stats.complete, stats.incomplete) == (2, 0)
    assert (other.info_hash, other.downloaded, other.locations) == (OTHER, 0, {})


async def test_stats_by_location_and_kind(store: PeerStore) -> None:
    policy = default()
    a, b = Location("eu", "a", "r1"), Location("eu", "b", "")
    await store.announce(peer_announce(1, location=a, kind=Kind.SEEDER), policy)
    await store.announce(peer_announce(2, location=a), policy)
    await store.announce(peer_announce(3, location=b, kind=Kind.COMPLETE), policy)
    await store.announce(peer_announce(4), policy)
    (stats,) = await store.stats([SWARM])
    assert stats.locations == {a: (0, 1, 1), b: (1, 0, 0), Location(): (0, 0, 1)}
    # Moving a peer to another location or kind moves its count.
    await store.announce(peer_announce(2, location=b, kind=Kind.COMPLETE), policy)
    (stats,) = await store.stats([SWARM])
    assert stats.locations == {a: (0, 1, 0), b: (2, 0, 0), Location(): (0, 0, 1)}


async def test_gateways_are_the_first_in_progress_peers_of_an_idc(store: PeerStore) -> None:
    policy = DefaultPolicy(bridge_peers=2, gateways_per_idc=1, rng=random.Random(0))
    a, b = Location("eu", "a", ""), Location("eu", "b", "")
    for port in (1, 2, 3):
        await store.announce(peer_announce(port, location=a, kind=Kind.COMPLETE), policy)
    first = await store.announce(peer_announce(10, location=b), policy)
    second = await store.announce(peer_announce(11, location=b), policy)
    # The first peer of IDC b is its gateway: it gets two peers from a; the second
    # gets only local peers (the gateway).
    assert sorted(ports(first.addresses)) != [] and set(ports(first.addresses)) <= {1, 2, 3}
    assert len(first.addresses) == 2
    assert ports(second.addresses) == [10]
    # The gateway leaves: the next in-progress peer of b to announce takes its place.
    await store.announce(peer_announce(10, location=b, event="stopped"), policy)
    third = await store.announce(peer_announce(11, location=b), policy)
    assert len(third.addresses) == 2 and set(ports(third.addresses)) <= {1, 2, 3}


async def test_swarm_peer_bound_evicts_oldest_expiring(
    make_store: StoreMaker, clock: FakeClock
) -> None:
    store = make_store(max_swarm_peers=3)
    policy = default()
    for port in (1, 2, 3):
        await store.announce(peer_announce(port, numwant=0), policy)
        clock.advance(1)
    await store.announce(peer_announce(1, numwant=0), policy)  # refreshed: 2 is now oldest
    await store.announce(peer_announce(4, numwant=0), policy)
    handout = await store.announce(peer_announce(3), policy)
    assert sorted(ports(handout.addresses)) == [1, 4]
    assert handout.incomplete == 3
    assert await store.totals() == (1, 3)


async def test_swarm_count_bound(make_store: StoreMaker, clock: FakeClock) -> None:
    store = make_store(max_swarms=2)
    policy = default()
    hashes = [bytes([i]) * 20 for i in range(3)]
    await store.announce(peer_announce(1, info_hash=hashes[0]), policy)
    clock.advance(1)
    await store.announce(peer_announce(1, info_hash=hashes[1]), policy)
    clock.advance(1)
    await store.announce(peer_announce(2, info_hash=hashes[0]), policy)  # 0 is fresher now
    clock.advance(1)
    await store.announce(peer_announce(1, info_hash=hashes[2]), policy)
    assert sorted(await store.swarms(10)) == [hashes[0], hashes[2]]
    assert await store.totals() == (2, 3)


async def test_swarms_most_recent_first_and_limited(store: PeerStore, clock: FakeClock) -> None:
    policy = default()
    hashes = [bytes([i]) * 20 for i in range(5)]
    for info_hash in hashes:
        await store.announce(peer_announce(1, info_hash=info_hash), policy)
        clock.advance(1)
    assert await store.swarms(2) == [hashes[4], hashes[3]]


async def test_concurrent_announces_stay_consistent(store: PeerStore) -> None:
    policy = default()
    await asyncio.gather(
        *(store.announce(peer_announce(port, numwant=5), policy) for port in range(1, 101))
    )
    (stats,) = await store.stats([SWARM])
    assert stats.incomplete == 100
    assert await store.totals() == (1, 100)


async def test_ping_and_close(make_store: StoreMaker) -> None:
    store = make_store()
    await store.ping()
    await store.close()


async def test_shared_backends_share_one_view(make_store: StoreMaker) -> None:
    tracker_a, tracker_b = make_store(), make_store()
    policy = default()
    await tracker_a.announce(peer_announce(1, kind=Kind.COMPLETE), policy)
    handout = await tracker_b.announce(peer_announce(2), policy)
    if make_store.backend == "memory":
        # A memory store is one process's view by design: nothing leaks between two.
        assert ports(handout.addresses) == []
        assert await tracker_a.totals() == await tracker_b.totals() == (1, 1)
        return
    # Two trackers, two stores, one Redis: what one is told, the other hands out.
    assert ports(handout.addresses) == [1]
    assert (handout.complete, handout.incomplete) == (1, 1)
    assert ports((await tracker_a.announce(peer_announce(3), policy)).addresses) != []
    assert await tracker_a.totals() == await tracker_b.totals() == (1, 3)

"""What only the memory store promises: bounded memory and round-robin buckets."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from eagle.tracker.config import TrackerConfig
from eagle.tracker.handout import DefaultPolicy, Kind
from eagle.tracker.locations import Location
from eagle.tracker.memstore import MemoryPeerStore

from .helpers import SWARM, FakeClock, peer_announce, ports

POLICY = DefaultPolicy(rng=random.Random(0))


async def test_many_refreshes_keep_the_heap_bounded(clock: FakeClock) -> None:
    store = MemoryPeerStore(clock=clock)
    for _ in range(1000):
        clock.advance(0.01)
        store.announce_nowait(peer_announce(1, ttl=10), POLICY)
    swarm = store._swarms[SWARM]
    assert len(swarm.heap) <= 2 * len(swarm) + 64 + 1
    clock.advance(9.99)
    assert store.announce_nowait(peer_announce(2, ttl=10), POLICY).addresses != []
    clock.advance(0.01)
    assert store.announce_nowait(peer_announce(2, ttl=10), POLICY).addresses == []


async def test_locations_per_swarm_are_bounded(clock: FakeClock) -> None:
    store = MemoryPeerStore(clock=clock, max_locations=3)
    for port in range(1, 11):
        store.announce_nowait(peer_announce(port, location=Location(idc=f"dc{port}")), POLICY)
    (stats,) = await store.stats([SWARM])
    # Three labelled locations; the fourth on were filed as unlabelled.
    assert len(stats.locations) == 4
    assert stats.locations[Location()] == (0, 0, 7)


def test_from_config() -> None:
    config = TrackerConfig(max_swarm_peers=7, max_swarms=9, max_locations=5)
    store = MemoryPeerStore.from_config(config)
    assert (store.max_swarm_peers, store.max_swarms, store.max_locations) == (7, 9, 5)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(1, 30)), max_size=120),
    st.integers(1, 10),
    st.integers(0, 2**32),
)
def test_round_robin_survives_joins_and_leaves(
    operations: list[tuple[bool, int]], numwant: int, seed: int
) -> None:
    """Whatever joins and leaves, a bucket hands out each of its peers once before any twice."""
    store = MemoryPeerStore(rng=random.Random(seed))
    for join, port in operations:
        event = None if join else "stopped"
        store.announce_nowait(peer_announce(port, event=event, numwant=0), POLICY)
    swarm = store._swarms.get(SWARM)
    live = sorted(ports([address for address in (swarm.peers if swarm else {})]))
    for bucket in swarm.buckets.values() if swarm else []:
        assert [e.pos for e in bucket.entries] == list(range(len(bucket.entries)))
        assert bucket.addresses == [e.address for e in bucket.entries]
        assert 0 <= bucket.cursor < max(1, len(bucket.entries))
    seen: list[int] = []
    for _ in range(-(-len(live) // numwant) if live else 0):
        handout = store.announce_nowait(peer_announce(999, numwant=numwant), POLICY)
        seen += ports(handout.addresses)
        store.announce_nowait(peer_announce(999, event="stopped"), POLICY)
    assert sorted(seen[: len(live)]) == live
    assert store.announce_nowait(peer_announce(999, kind=Kind.COMPLETE), POLICY).complete == 1

"""Handout policies: the default's rules one by one, and properties over random swarms."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eagle.core.errors import ConfigError
from eagle.tracker.handout import (
    POLICIES,
    Allocation,
    DefaultPolicy,
    Kind,
    RandomPolicy,
    Requester,
    make_policy,
)
from eagle.tracker.locations import Location
from eagle.tracker.memstore import MemoryPeerStore

from .helpers import peer_announce, ports

C, S, D = Kind.COMPLETE, Kind.SEEDER, Kind.INCOMPLETE  # D: downloading
ME = Location("eu", "fra", "r1")
SAME_RACK = ME
SAME_IDC = Location("eu", "fra", "r2")
SAME_REGION = Location("eu", "ams", "r1")
ELSEWHERE = Location("us", "iad", "r1")
UNLABELLED = Location()


def policy(**options: int) -> DefaultPolicy:
    return DefaultPolicy(rng=random.Random(0), **options)


def downloader(location: Location = ME, gateway: bool = False) -> Requester:
    return Requester(location, complete=False, seeder=False, gateway=gateway)


def as_dict(allocation: Allocation) -> dict[tuple[Location, Kind], int]:
    return {(location, kind): count for location, kind, count in allocation}


def test_tiers_then_kinds_in_order() -> None:
    sizes = {
        SAME_IDC: [1, 1, 1],
        SAME_RACK: [1, 1, 1],
    }
    allocation = policy().allocate(downloader(), sizes, 50)
    assert [(loc, kind) for loc, kind, _ in allocation] == [
        (SAME_RACK, C),
        (SAME_RACK, S),
        (SAME_RACK, D),
        (SAME_IDC, C),
        (SAME_IDC, S),
        (SAME_IDC, D),
    ]
    # With room for two, the two best: the rack's complete peer, then its seeder.
    assert as_dict(policy().allocate(downloader(), sizes, 2)) == {
        (SAME_RACK, C): 1,
        (SAME_RACK, S): 1,
    }


def test_downloader_gets_local_peers_only() -> None:
    sizes = {SAME_RACK: [0, 0, 2], SAME_REGION: [5, 1, 0], ELSEWHERE: [5, 0, 0]}
    assert as_dict(policy().allocate(downloader(), sizes, 50)) == {(SAME_RACK, D): 2}


def test_gateway_bridges_while_its_idc_has_no_copy() -> None:
    sizes = {SAME_RACK: [0, 0, 4], SAME_REGION: [1, 1, 3], ELSEWHERE: [5, 0, 0]}
    allocation = policy(bridge_peers=2).allocate(downloader(gateway=True), sizes, 50)
    # Local first; then two bridges: the same region's complete peer before its seeder.
    assert allocation == [(SAME_RACK, D, 4), (SAME_REGION, C, 1), (SAME_REGION, S, 1)]
    # Numwant is shared: bridges keep their places, local peers fill the rest.
    small = policy(bridge_peers=2).allocate(downloader(gateway=True), sizes, 3)
    assert small == [(SAME_RACK, D, 1), (SAME_REGION, C, 1), (SAME_REGION, S, 1)]
    # Once the IDC has a complete copy, even the gateway stays local.
    sizes[SAME_IDC] = [1, 0, 0]
    allocation = policy(bridge_peers=2).allocate(downloader(gateway=True), sizes, 50)
    assert {loc for loc, _, _ in allocation} == {SAME_RACK, SAME_IDC}


def test_seeders_spared_by_ordinary_complete_peers() -> None:
    sizes = {SAME_RACK: [3, 1, 0]}
    assert as_dict(policy().allocate(downloader(), sizes, 3)) == {(SAME_RACK, C): 3}


def test_complete_peers_get_local_downloaders_only() -> None:
    seed = Requester(ME, complete=True)
    sizes = {SAME_RACK: [4, 1, 2], SAME_IDC: [0, 0, 3], ELSEWHERE: [0, 0, 9]}
    assert as_dict(policy().allocate(seed, sizes, 50)) == {(SAME_RACK, D): 2, (SAME_IDC, D): 3}


def test_dedicated_seeder_gets_nobody_once_its_idc_has_copies() -> None:
    seeder = Requester(ME, complete=True, seeder=True)
    assert as_dict(policy().allocate(seeder, {SAME_IDC: [0, 0, 2]}, 50)) == {(SAME_IDC, D): 2}
    assert policy().allocate(seeder, {SAME_IDC: [1, 0, 2]}, 50) == []


def test_unlabelled_peers_are_a_location_of_their_own() -> None:
    sizes = {UNLABELLED: [1, 0, 1], ME: [2, 0, 0]}
    # An unlabelled downloader (a stock client) gets the other unlabelled peers.
    assert as_dict(policy().allocate(downloader(UNLABELLED), sizes, 50)) == {
        (UNLABELLED, C): 1,
        (UNLABELLED, D): 1,
    }


def test_numwant_zero_and_empty_swarm() -> None:
    assert policy().allocate(downloader(), {SAME_RACK: [1, 1, 1]}, 0) == []
    assert policy().allocate(downloader(), {}, 50) == []
    assert RandomPolicy().allocate(downloader(), {}, 50) == []


def test_random_policy_is_uniform_and_ignores_labels() -> None:
    sizes = {SAME_RACK: [0, 0, 10], ELSEWHERE: [0, 0, 30]}
    random_policy = RandomPolicy(rng=random.Random(7))
    taken: Counter[Location] = Counter()
    for _ in range(400):
        for location, _kind, count in random_policy.allocate(downloader(), sizes, 4):
            taken[location] += count
    # A quarter of the draws from the rack, three quarters from elsewhere (±20%).
    assert 0.2 < taken[SAME_RACK] / 1600 < 0.3


def test_policies_by_name() -> None:
    assert set(POLICIES) == {"default", "random"}
    assert make_policy("random").name == "random"
    default = make_policy("default", bridge_peers=3, gateways_per_idc=2)
    assert isinstance(default, DefaultPolicy)
    assert (default.bridge_peers, default.gateways_per_idc) == (3, 2)
    with pytest.raises(ConfigError, match="unknown handout policy 'nope'; known: default"):
        make_policy("nope")
    with pytest.raises(ConfigError, match="at least 1"):
        make_policy("default", bridge_peers=0)


# -- properties over random swarms -----------------------------------------------------------

_locations = st.sampled_from([SAME_RACK, SAME_IDC, SAME_REGION, ELSEWHERE, UNLABELLED])
_counts = st.lists(st.integers(0, 6), min_size=3, max_size=3)
_sizes = st.dictionaries(_locations, _counts, max_size=5)
_requesters = st.builds(Requester, _locations, st.booleans(), st.booleans(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(_requesters, _sizes, st.integers(0, 40), st.sampled_from(["default", "random"]))
def test_allocation_properties(
    requester: Requester, sizes: dict[Location, list[int]], numwant: int, name: str
) -> None:
    allocation = make_policy(name, rng=random.Random(0)).allocate(requester, sizes, numwant)
    buckets = [(location, kind) for location, kind, _ in allocation]
    assert len(set(buckets)) == len(buckets), "a bucket twice"
    assert all(0 < count <= sizes[loc][kind] for loc, kind, count in allocation)
    assert sum(count for _, _, count in allocation) <= numwant


def _rank(requester: Location, location: Location, kind: Kind) -> tuple[int, int]:
    if location.idc == requester.idc:
        tier = 0 if requester.rack and location.rack == requester.rack else 1
    else:
        tier = 2 if requester.region and location.region == requester.region else 3
    return tier, int(kind)


_peers = st.lists(st.tuples(_locations, st.sampled_from(list(Kind))), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(_peers, st.integers(0, len(Kind) * 10), st.integers(0, 50), st.integers(0, 2**32))
def test_store_and_default_policy_properties(
    peers: list[tuple[Location, Kind]], me_index: int, numwant: int, seed: int
) -> None:
    """Through the memory store: never the requester, no duplicates, numwant respected,
    and the local part of the answer is the top of the (tier, kind) ranking."""
    store = MemoryPeerStore(rng=random.Random(seed))
    rule = DefaultPolicy(rng=random.Random(seed))
    for port, (location, kind) in enumerate(peers, start=1):
        store.announce_nowait(peer_announce(port, location=location, kind=kind, numwant=0), rule)
    me_port = 1 + me_index % len(peers)
    me_location, me_kind = peers[me_port - 1]
    handout = store.announce_nowait(
        peer_announce(me_port, location=me_location, kind=me_kind, numwant=numwant), rule
    )
    got = ports(handout.addresses)
    assert me_port not in got
    assert len(set(got)) == len(got)
    assert len(got) <= numwant
    local_ranks = sorted(
        _rank(me_location, *peers[p - 1])
        for p in range(1, len(peers) + 1)
        if p != me_port and peers[p - 1][0].idc == me_location.idc
    )
    returned = sorted(
        _rank(me_location, *peers[p - 1]) for p in got if peers[p - 1][0].idc == me_location.idc
    )
    if me_kind == Kind.INCOMPLETE:
        # The best local peers, in ranking order: the first len(returned) of the ranking.
        assert returned == local_ranks[: len(returned)]
        if len(got) < numwant:
            assert len(returned) == len(local_ranks), "room left but a local peer left out"
    else:
        assert all(kind == Kind.INCOMPLETE for _, kind in returned)
    remote = [p for p in got if peers[p - 1][0].idc != me_location.idc]
    assert len(remote) <= rule.bridge_peers
    if remote:
        assert me_kind == Kind.INCOMPLETE

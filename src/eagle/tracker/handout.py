"""Peer handout policies ("peer optimal arithmetic"): which peers an announce gets back.

A policy never sees single peers. The store groups a swarm's peers into buckets by
location and :class:`Kind` and tells the policy how many each bucket holds; the
policy answers how many to take from which bucket, in order; the store then takes
that many from each bucket, least recently handed out first. This keeps a policy a
pure function (testable without a store) and the per-announce cost independent of
the swarm's size.

Policies are chosen by name in the tracker's config (``policy: default``); see
:data:`POLICIES`.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import NamedTuple

from eagle.core.errors import ConfigError
from eagle.tracker.locations import Location


class Kind(IntEnum):
    """What a peer offers, in the order the default policy prefers it."""

    COMPLETE = 0
    """An ordinary peer holding the whole torrent (an agent that finished)."""
    SEEDER = 1
    """A dedicated seeder (announced ``seeder=1``): complete, spared while others have copies."""
    INCOMPLETE = 2
    """A peer still downloading."""


Counts = Sequence[int]
"""Peers of one location by kind: ``counts[Kind.COMPLETE]``, ``counts[Kind.SEEDER]``, …"""

Allocation = list[tuple[Location, Kind, int]]
"""``(location, kind, how many)`` in answer order; each bucket at most once."""


class Requester(NamedTuple):
    """The peer asking, as the policy needs to know it (a named tuple: one per announce)."""

    location: Location
    complete: bool
    seeder: bool = False
    gateway: bool = False
    """Whether the store chose this peer as one of its IDC's gateways (see
    :attr:`HandoutPolicy.gateways_per_idc`)."""


class HandoutPolicy(ABC):
    """Decides how many peers of each bucket an announce gets.

    Implementations must be safe to call from many announce handlers (they run
    on one event loop; keep no per-call state between calls except randomness).
    """

    name: str = ""

    gateways_per_idc: int = 0
    """How many in-progress peers of each IDC the store marks as gateways in each
    swarm: the first to announce while fewer are alive, kept until they leave.
    0 means the policy does not use gateways and the store may skip the work."""

    def __init__(
        self, *, bridge_peers: int = 2, gateways_per_idc: int = 1, rng: random.Random | None = None
    ) -> None:
        """Every policy takes the same options; one that has no use for some ignores them."""
        self._rng = rng or random.Random()

    @abstractmethod
    def allocate(
        self, requester: Requester, sizes: Mapping[Location, Counts], numwant: int
    ) -> Allocation:
        """How many peers to take from each ``(location, kind)`` bucket, in answer order.

        ``sizes`` counts every live peer of the swarm except the requester. The
        result must ask for no more than a bucket holds, for no bucket twice, and
        for at most ``numwant`` peers in total (none when ``numwant`` is 0).
        """


class DefaultPolicy(HandoutPolicy):
    """Local first, complete first, seeders spared, a few bridges between IDCs.

    Tiers, relative to the requester: same rack (same IDC and rack), same IDC,
    same region, the rest. "Local" means the first two. Inside a tier, ordinary
    complete peers, then dedicated seeders, then peers still downloading;
    buckets of equal rank come in random order.

    * A downloading peer gets local peers only, except its IDC's gateways while
      the IDC has no complete copy: they also get up to ``bridge_peers`` peers
      from other IDCs (same region first), so each remote IDC pulls a piece
      across the WAN about once, from complete peers before the seeder.
    * A complete peer gets only local peers still downloading (it has nothing
      to fetch); a dedicated seeder gets none once its IDC has a complete
      ordinary peer, so it is not hammered once the swarm has copies.
    """

    name = "default"

    def __init__(
        self, *, bridge_peers: int = 2, gateways_per_idc: int = 1, rng: random.Random | None = None
    ) -> None:
        super().__init__(rng=rng)
        if bridge_peers < 1 or gateways_per_idc < 1:
            raise ConfigError("bridge-peers and gateways-per-idc must be at least 1")
        self.bridge_peers = bridge_peers
        self.gateways_per_idc = gateways_per_idc

    def allocate(
        self, requester: Requester, sizes: Mapping[Location, Counts], numwant: int
    ) -> Allocation:
        """See :meth:`HandoutPolicy.allocate` and the class docstring."""
        if numwant <= 0:
            return []
        me = requester.location
        # Four tiers of (location, counts); tiers 0-1 are local.
        tiers: tuple[list[tuple[Location, Counts]], ...] = ([], [], [], [])
        local_copies = 0
        for location, counts in sizes.items():
            if location.idc == me.idc:
                tier = 0 if me.rack and location.rack == me.rack else 1
                local_copies += counts[Kind.COMPLETE] + counts[Kind.SEEDER]
            else:
                tier = 2 if me.region and location.region == me.region else 3
            tiers[tier].append((location, counts))
        for tier_list in tiers:
            if len(tier_list) > 1:
                self._rng.shuffle(tier_list)  # buckets of equal rank: random order

        if requester.complete:
            if requester.seeder and any(
                counts[Kind.COMPLETE] for tier in tiers[:2] for _, counts in tier
            ):
                return []
            return _fill(tiers[:2], (Kind.INCOMPLETE,), numwant)

        remote: Allocation = []
        if requester.gateway and not local_copies:
            remote = _fill(tiers[2:], _ALL_KINDS, min(self.bridge_peers, numwant))
        taken = sum(count for _, _, count in remote)
        return _fill(tiers[:2], _ALL_KINDS, numwant - taken) + remote


class RandomPolicy(HandoutPolicy):
    """Peers drawn uniformly at random from the whole swarm: labels ignored.

    What a plain BitTorrent tracker does; kept to compare the default against.
    """

    name = "random"

    def allocate(
        self, requester: Requester, sizes: Mapping[Location, Counts], numwant: int
    ) -> Allocation:
        """See :meth:`HandoutPolicy.allocate`: a uniform draw without replacement."""
        buckets = [
            (location, kind, count)
            for location, counts in sizes.items()
            for kind, count in zip(Kind, counts, strict=True)
            if count
        ]
        total = sum(count for _, _, count in buckets)
        want = min(numwant, total)
        if want <= 0:
            return []
        picks = sorted(self._rng.sample(range(total), want))
        allocation: Allocation = []
        start = index = 0
        for location, kind, count in buckets:
            end = start + count
            taken = 0
            while index < want and picks[index] < end:
                taken += 1
                index += 1
            if taken:
                allocation.append((location, kind, taken))
            start = end
        self._rng.shuffle(allocation)
        return allocation


_ALL_KINDS = (Kind.COMPLETE, Kind.SEEDER, Kind.INCOMPLETE)


def _fill(
    tiers: Sequence[list[tuple[Location, Counts]]], kinds: Sequence[Kind], budget: int
) -> Allocation:
    """Take from buckets tier by tier, kind by kind, until ``budget`` peers are taken."""
    allocation: Allocation = []
    for tier in tiers:
        for kind in kinds:
            for location, counts in tier:
                if budget <= 0:
                    return allocation
                count = counts[kind]
                if count:
                    take = count if count < budget else budget
                    allocation.append((location, kind, take))
                    budget -= take
    return allocation


POLICIES: dict[str, type[HandoutPolicy]] = {
    DefaultPolicy.name: DefaultPolicy,
    RandomPolicy.name: RandomPolicy,
}
"""Policies by the name the tracker's ``policy`` config key takes."""


def make_policy(
    name: str, *, bridge_peers: int = 2, gateways_per_idc: int = 1, rng: random.Random | None = None
) -> HandoutPolicy:
    """The policy called ``name``; ConfigError listing the known names if there is none."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown handout policy {name!r}; known: {', '.join(sorted(POLICIES))}"
        ) from None
    return cls(bridge_peers=bridge_peers, gateways_per_idc=gateways_per_idc, rng=rng)

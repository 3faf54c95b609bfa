"""Swarm state behind one interface: which peers announced which info hash, until when.

:class:`PeerStore` is what the tracker server talks to; every implementation must
follow the rules its method docstrings state, and pass the conformance suite in
``tests/tracker/test_peerstore_conformance.py``. Implementations, by the name the
``peer_store`` config key takes:

* ``memory`` (:class:`~eagle.tracker.memstore.MemoryPeerStore`): this process only,
  the embedded default;
* ``redis://host:port/db`` (:class:`~eagle.tracker.redisstore.RedisPeerStore`): shared
  by every tracker pointed at the same Redis, so they hand out one view (HA).

Both are loaded lazily by :func:`open_store`, so Redis is imported only when chosen.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from eagle.core.errors import ConfigError
from eagle.tracker.handout import HandoutPolicy, Kind
from eagle.tracker.locations import Location

if TYPE_CHECKING:
    from eagle.tracker.config import TrackerConfig


class PeerAnnounce(NamedTuple):
    """What a store needs of one announce (a named tuple: one is built per announce)."""

    info_hash: bytes
    address: bytes
    """Compact form: 4-byte IPv4 or 16-byte IPv6 address, then the 2-byte port."""
    peer_id: bytes
    location: Location
    kind: Kind
    event: str | None
    """``stopped`` removes the peer, ``completed`` also counts a finished download."""
    numwant: int
    ttl: float
    """Seconds the peer lives without another announce."""
    with_peer_ids: bool = False
    """Whether the answer needs peer ids (non-compact answers); compact ones do not."""


class Handout(NamedTuple):
    """A store's answer to an announce."""

    addresses: list[bytes]
    """Compact addresses of the peers handed out, as in :attr:`PeerAnnounce.address`."""
    peer_ids: list[bytes] | None
    """Their peer ids in the same order, if :attr:`PeerAnnounce.with_peer_ids`, else None."""
    complete: int
    """Live complete peers (seeds, dedicated seeders included), the requester counted."""
    incomplete: int
    """Live peers still downloading, the requester counted."""


@dataclass(frozen=True)
class SwarmStats:
    """One swarm by location and kind, for scrape, ``/v1/swarms`` and metrics."""

    info_hash: bytes
    locations: dict[Location, tuple[int, int, int]] = field(default_factory=dict)
    """Live peers per location: ``(complete, seeder, incomplete)``, indexed by :class:`Kind`."""
    downloaded: int = 0
    """Finished downloads (``event=completed``) counted; may restart at 0 once the
    swarm has been forgotten."""

    @property
    def complete(self) -> int:
        """Live complete peers, dedicated seeders included."""
        return sum(c[Kind.COMPLETE] + c[Kind.SEEDER] for c in self.locations.values())

    @property
    def incomplete(self) -> int:
        """Live peers still downloading."""
        return sum(c[Kind.INCOMPLETE] for c in self.locations.values())


class PeerStore(ABC):
    """The peers of every swarm, keyed by info hash, then by compact address.

    Every method must be safe for concurrent use by many announce handlers, and
    must stay within the store's memory bounds (evicting the oldest-expiring peer
    or the least recently announced swarm rather than failing). Expired peers must
    never be handed out or counted by :meth:`announce` and :meth:`stats`.
    """

    @abstractmethod
    async def announce(self, request: PeerAnnounce, policy: HandoutPolicy) -> Handout:
        """Record one announce and answer it.

        ``event=stopped``: forget the peer (no error if unknown: stops are retried)
        and hand out nobody. Otherwise insert or refresh the peer so that it lives
        ``ttl`` more seconds. A peer is identified by its address within a swarm:
        an announce from the same address with another peer id (a restarted
        client) replaces the old entry, its kind and location included.

        Then ask ``policy`` for an allocation over the swarm's buckets, the
        requester left out of the counts, and take that many peers from each
        bucket, least recently handed out first, never the requester itself and
        never one peer twice. If the policy wants gateways, mark the first
        :attr:`HandoutPolicy.gateways_per_idc` in-progress peers of each IDC of the
        swarm as gateways (while they live) and tell the policy.
        """

    def announce_nowait(self, request: PeerAnnounce, policy: HandoutPolicy) -> Handout | None:
        """:meth:`announce` done at once if the store needs no I/O for it, else None.

        A store that answers here must leave exactly the state :meth:`announce`
        would. The default answers None: the caller then awaits :meth:`announce`.
        """
        return None

    @abstractmethod
    async def stats(self, info_hashes: Sequence[bytes]) -> list[SwarmStats]:
        """Stats of each swarm asked for, in order; an unknown swarm gets empty stats."""

    @abstractmethod
    async def swarms(self, limit: int) -> list[bytes]:
        """Info hashes of up to ``limit`` swarms with live peers, most recently announced first."""

    @abstractmethod
    async def totals(self) -> tuple[int, int]:
        """``(swarms, peers)`` for metrics; may count peers expired but not purged yet."""

    @abstractmethod
    async def purge(self) -> int:
        """Drop every expired peer and every swarm left empty; return how many peers went.

        Called periodically by every tracker sharing the store: must be idempotent.
        """

    @abstractmethod
    async def ping(self) -> None:
        """Return if the store can serve announces now; raise otherwise (health checks)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and memory. The store is unusable afterwards."""


# Backends by URL scheme, as "module:Class", imported only when chosen.
BACKENDS = {
    "memory": "eagle.tracker.memstore:MemoryPeerStore",
    "redis": "eagle.tracker.redisstore:RedisPeerStore",
    "rediss": "eagle.tracker.redisstore:RedisPeerStore",
    "unix": "eagle.tracker.redisstore:RedisPeerStore",
}


class StoreFactory(Protocol):
    """What a backend class offers to :func:`open_store`."""

    @classmethod
    def from_config(cls, config: TrackerConfig) -> PeerStore:
        """A store configured from ``config`` (its ``peer_store`` URL and bounds)."""


def open_store(config: TrackerConfig) -> PeerStore:
    """The store ``config.peer_store`` names, not yet connected (it connects on first use)."""
    url = config.peer_store
    scheme = url.partition("://")[0] if "://" in url else url
    try:
        module_name, _, class_name = BACKENDS[scheme].partition(":")
    except KeyError:
        raise ConfigError(f"unknown peer store {url!r}") from None
    factory: StoreFactory = getattr(importlib.import_module(module_name), class_name)
    return factory.from_config(config)

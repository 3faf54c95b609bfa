"""Swarm state: which peers announced which info hash, until when.

:class:`PeerStore` is the interface the tracker server talks to; every
implementation must follow the rules its method docstrings state.
:class:`MemoryPeerStore` is the embedded default. A shared store (Redis) lets
several trackers behind a load balancer hand out one view of each swarm.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from eagle.core.peer import Peer, PeerAddress
from eagle.tracker.config import TrackerConfig

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class PeerStore(ABC):
    """The peers of every swarm, keyed by info hash, then by (ip, port).

    Every method must be safe for concurrent use by many announce handlers.
    Times are seconds on the store's own monotonic clock.
    """

    @abstractmethod
    async def announce(self, info_hash: bytes, peer: Peer, ttl: float) -> None:
        """Insert ``peer`` into the swarm, or refresh it, so that it lives ``ttl`` more seconds.

        A peer is identified by its address within a swarm: an announce from the
        same (ip, port) with another peer id (a restarted client) replaces the old
        entry, including its ``complete`` flag. Must stay within the store's
        memory bounds, evicting the oldest-expiring peer or swarm rather than failing.
        """

    @abstractmethod
    async def remove(self, info_hash: bytes, address: PeerAddress) -> None:
        """Forget the peer at ``address`` (it sent ``event=stopped``).

        An unknown swarm or peer is no error: stop announces are retried and may repeat.
        """

    @abstractmethod
    async def sample(
        self, info_hash: bytes, numwant: int, exclude: PeerAddress | None = None
    ) -> list[Peer]:
        """Up to ``numwant`` live peers of the swarm, picked at random, each at most once.

        Must never return the peer at ``exclude`` (the one asking) nor an expired
        peer. Returns an empty list for an unknown swarm.
        """

    @abstractmethod
    async def counts(self, info_hash: bytes) -> tuple[int, int]:
        """``(complete, incomplete)``: live seeds and live leechers of the swarm."""

    @abstractmethod
    async def record_completed(self, info_hash: bytes) -> None:
        """Count one finished download (``event=completed``) for the swarm's scrape."""

    @abstractmethod
    async def downloaded(self, info_hash: bytes) -> int:
        """Finished downloads counted for the swarm (scrape's ``downloaded``).

        May restart at 0 once the swarm has been forgotten (no live peers left).
        """

    @abstractmethod
    async def swarms(self) -> list[bytes]:
        """The info hashes of swarms with at least one live peer."""

    @abstractmethod
    async def totals(self) -> tuple[int, int]:
        """``(swarms, peers)`` for metrics. Called after every announce, so it must be
        cheap; it may count peers that expired but were not purged yet."""

    @abstractmethod
    async def purge(self, now: float | None = None) -> int:
        """Drop every peer expired at ``now`` (default: the store's clock) and swarms
        left empty; return how many peers went. Stores that expire entries
        by themselves may do nothing and return 0."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and memory. The store is unusable afterwards."""


@dataclass(slots=True)
class _Entry:
    peer: Peer
    expires_at: float


class _Swarm:
    """The peers of one info hash.

    Peers live in a list (O(1) random access for sampling) with an index by
    address (O(1) refresh; removal swaps with the last element). A heap of
    ``(expires_at, seq, address)`` finds the next peer to expire or evict;
    refreshes leave stale heap items behind, recognised by their expiry no
    longer matching the entry's, and dropped when popped or on compaction.
    """

    __slots__ = ("complete", "downloaded", "entries", "heap", "index")

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.index: dict[PeerAddress, int] = {}
        self.heap: list[tuple[float, int, PeerAddress]] = []
        self.complete = 0
        self.downloaded = 0

    def __len__(self) -> int:
        return len(self.entries)

    def upsert(self, peer: Peer, expires_at: float, seq: Iterator[int]) -> bool:
        """Insert or replace; return True if the peer is new."""
        address = peer.address
        position = self.index.get(address)
        if position is None:
            self.index[address] = len(self.entries)
            self.entries.append(_Entry(peer, expires_at))
            self.complete += peer.complete
            new = True
        else:
            entry = self.entries[position]
            self.complete += peer.complete - entry.peer.complete
            entry.peer, entry.expires_at = peer, expires_at
            new = False
        heapq.heappush(self.heap, (expires_at, next(seq), address))
        # Refreshes push without removing, so the heap of a busy swarm would grow
        # without bound: rebuild it once it is mostly stale items.
        if len(self.heap) > 2 * len(self.entries) + 64:
            self.heap = [(e.expires_at, next(seq), e.peer.address) for e in self.entries]
            heapq.heapify(self.heap)
        return new

    def remove(self, address: PeerAddress) -> bool:
        """Remove the peer at ``address``; return False if it was not there."""
        position = self.index.pop(address, None)
        if position is None:
            return False
        removed = self.entries[position]
        last = self.entries.pop()
        if last is not removed:
            self.entries[position] = last
            self.index[last.peer.address] = position
        self.complete -= removed.peer.complete
        return True

    def _is_current(self, expires_at: float, address: PeerAddress) -> bool:
        """Whether a heap item still describes its peer (not left behind by a refresh)."""
        position = self.index.get(address)
        return position is not None and self.entries[position].expires_at == expires_at

    def expire(self, now: float) -> int:
        """Remove peers expired at ``now``; cheap when none are (one heap peek)."""
        removed = 0
        while self.heap and self.heap[0][0] <= now:
            expires_at, _, address = heapq.heappop(self.heap)
            if self._is_current(expires_at, address):
                self.remove(address)
                removed += 1
        return removed

    def evict_oldest(self) -> bool:
        """Remove the peer that would expire first."""
        while self.heap:
            expires_at, _, address = heapq.heappop(self.heap)
            if self._is_current(expires_at, address):
                return self.remove(address)
        return False

    def sample(self, numwant: int, exclude: PeerAddress | None, rng: random.Random) -> list[Peer]:
        """Evenly spaced picks from a random offset, taken with C-speed slices.

        Swap-on-remove keeps reshuffling the list, so a stride does not keep
        handing out the same neighbours together.
        """
        entries = self.entries
        position = self.index.get(exclude) if exclude is not None else None
        skip = entries[position] if position is not None else None
        want = min(numwant, len(entries) - (skip is not None))
        if want <= 0:
            return []
        picks = want + (skip is not None)
        step = len(entries) // picks  # picks * step <= len: the picks cannot wrap onto each other
        start = rng.randrange(len(entries))
        chosen = entries[start::step][:picks]
        if len(chosen) < picks:
            # Carry the stride past the end round to the front.
            wrapped = start + len(chosen) * step - len(entries)
            chosen += entries[wrapped::step][: picks - len(chosen)]
        return [entry.peer for entry in chosen if entry is not skip][:want]


class MemoryPeerStore(PeerStore):
    """A :class:`PeerStore` in this process's memory: the embedded default.

    Bounded: at most ``max_swarm_peers`` per swarm (the oldest-expiring peer is
    evicted for a new one) and ``max_swarms`` swarms (the least recently
    announced one goes; with one TTL for all, that is the oldest-expiring).
    Expired peers are purged lazily whenever their swarm is touched, and by
    :meth:`purge` for swarms nobody touches. Safe for concurrent use because
    no method awaits while the state is half changed.
    """

    def __init__(
        self,
        *,
        max_swarm_peers: int = 50000,
        max_swarms: int = 100000,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.max_swarm_peers = max_swarm_peers
        self.max_swarms = max_swarms
        self._clock = clock
        self._rng = rng or random.Random()
        # Ordered by last announce, so the first swarm is the one to evict.
        self._swarms: OrderedDict[bytes, _Swarm] = OrderedDict()
        self._peers = 0
        self._seq = itertools.count()

    @classmethod
    def from_config(cls, config: TrackerConfig, clock: Clock = time.monotonic) -> MemoryPeerStore:
        """A store with the bounds of ``config``."""
        return cls(
            max_swarm_peers=config.max_swarm_peers, max_swarms=config.max_swarms, clock=clock
        )

    def _live(self, info_hash: bytes) -> _Swarm | None:
        """The swarm with its expired peers purged, or None if it has none left."""
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return None
        self._peers -= swarm.expire(self._clock())
        if not swarm:
            del self._swarms[info_hash]
            return None
        return swarm

    async def announce(self, info_hash: bytes, peer: Peer, ttl: float) -> None:
        """See :meth:`PeerStore.announce`."""
        now = self._clock()
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            if len(self._swarms) >= self.max_swarms:
                evicted_hash, evicted = self._swarms.popitem(last=False)
                self._peers -= len(evicted)
                log.warning(
                    "swarm evicted info_hash=%s peers=%d reason=max_swarms",
                    evicted_hash.hex(),
                    len(evicted),
                )
            swarm = self._swarms[info_hash] = _Swarm()
        else:
            self._swarms.move_to_end(info_hash)
            self._peers -= swarm.expire(now)
        if peer.address not in swarm.index and len(swarm) >= self.max_swarm_peers:
            self._peers -= swarm.evict_oldest()
        self._peers += swarm.upsert(peer, now + ttl, self._seq)

    async def remove(self, info_hash: bytes, address: PeerAddress) -> None:
        """See :meth:`PeerStore.remove`."""
        swarm = self._swarms.get(info_hash)
        if swarm is not None and swarm.remove(address):
            self._peers -= 1
        self._live(info_hash)

    async def sample(
        self, info_hash: bytes, numwant: int, exclude: PeerAddress | None = None
    ) -> list[Peer]:
        """See :meth:`PeerStore.sample`."""
        swarm = self._live(info_hash)
        return [] if swarm is None else swarm.sample(numwant, exclude, self._rng)

    async def counts(self, info_hash: bytes) -> tuple[int, int]:
        """See :meth:`PeerStore.counts`."""
        swarm = self._live(info_hash)
        return (0, 0) if swarm is None else (swarm.complete, len(swarm) - swarm.complete)

    async def record_completed(self, info_hash: bytes) -> None:
        """See :meth:`PeerStore.record_completed`."""
        swarm = self._swarms.get(info_hash)
        if swarm is not None:
            swarm.downloaded += 1

    async def downloaded(self, info_hash: bytes) -> int:
        """See :meth:`PeerStore.downloaded`."""
        swarm = self._live(info_hash)
        return 0 if swarm is None else swarm.downloaded

    async def swarms(self) -> list[bytes]:
        """See :meth:`PeerStore.swarms`."""
        await self.purge()
        return list(self._swarms)

    async def totals(self) -> tuple[int, int]:
        """See :meth:`PeerStore.totals`."""
        return len(self._swarms), self._peers

    async def purge(self, now: float | None = None) -> int:
        """See :meth:`PeerStore.purge`. One heap peek per swarm when nothing expired."""
        now = self._clock() if now is None else now
        removed = 0
        empty: list[bytes] = []
        for info_hash, swarm in self._swarms.items():
            removed += swarm.expire(now)
            if not swarm:
                empty.append(info_hash)
        for info_hash in empty:
            del self._swarms[info_hash]
        self._peers -= removed
        return removed

    async def close(self) -> None:
        """See :meth:`PeerStore.close`."""
        self._swarms.clear()
        self._peers = 0

"""A least-recently-used index bounded by total bytes, with pinning.

Only bookkeeping: the owner deletes what :meth:`ByteLRU.add` or
:meth:`ByteLRU.evictable` tells it to, so the same index serves a file cache,
an object cache or a torrent session.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class ByteLRU(Generic[K]):
    """Keys with sizes, least recently used first; pinned keys are never chosen for eviction.

    Not thread-safe: use it from one event loop.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._sizes: OrderedDict[K, int] = OrderedDict()
        self._pins: dict[K, int] = {}
        self.total = 0

    def __contains__(self, key: object) -> bool:
        return key in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    def keys(self) -> list[K]:
        """Least recently used first."""
        return list(self._sizes)

    def size(self, key: K) -> int:
        return self._sizes[key]

    def touch(self, key: K) -> None:
        """Mark ``key`` as just used (a cache hit)."""
        if key in self._sizes:
            self._sizes.move_to_end(key)

    def add(self, key: K, size: int) -> list[K]:
        """Insert or update ``key``; return the keys evicted to make room (already forgotten).

        ``key`` itself is returned when it alone exceeds the capacity and is not pinned.
        """
        self.remove(key)
        self._sizes[key] = size
        self.total += size
        return self.shrink()

    def remove(self, key: K) -> None:
        size = self._sizes.pop(key, None)
        if size is not None:
            self.total -= size

    def shrink(self) -> list[K]:
        """Forget least recently used unpinned keys until the total fits; return them."""
        evicted: list[K] = []
        for key in list(self._sizes):
            if self.total <= self.capacity:
                break
            if self._pins.get(key):
                continue
            self.remove(key)
            evicted.append(key)
        return evicted

    def pin(self, key: K) -> None:
        """Protect ``key`` from eviction (it is being served or written); pins nest."""
        self._pins[key] = self._pins.get(key, 0) + 1

    def unpin(self, key: K) -> list[K]:
        """Release one pin; return keys evicted now that more may be evictable."""
        count = self._pins.get(key, 0) - 1
        if count > 0:
            self._pins[key] = count
        else:
            self._pins.pop(key, None)
        return self.shrink()

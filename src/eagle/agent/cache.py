"""The agent's blob cache: verified blobs on disk, bounded by bytes, evicted LRU.

Every blob in the cache is also seeded (peers can use it at once); evicting a
blob removes its torrent from the session before its files. A blob that is
being downloaded or served is pinned and never evicted; a blob larger than
the whole cache is served while pinned and evicted when the last reader ends.

Recency survives restarts: a hit sets the blob file's mtime, and the start-up
index orders blobs by it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from eagle.agent.metrics import AgentMetrics
from eagle.core.digest import Digest
from eagle.core.metainfo import Metainfo
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.localstore import LocalBlobs
from eagle.utils.lru import ByteLRU

log = logging.getLogger(__name__)

_NO_LIMIT = 1 << 62


class BlobCache:
    """Complete, verified blobs kept up to ``capacity`` bytes (0: no limit).

    Use from one event loop.
    """

    def __init__(
        self,
        blobs: LocalBlobs,
        engine: TorrentEngine,
        capacity: int,
        trackers: Sequence[str],
        metrics: AgentMetrics,
    ) -> None:
        self.blobs = blobs
        self.engine = engine
        self.trackers = list(trackers)
        self.metrics = metrics
        self._lru: ByteLRU[Digest] = ByteLRU(capacity or _NO_LIMIT)
        self._infohash: dict[Digest, bytes] = {}
        metrics.cache_capacity.set(capacity)

    @property
    def capacity(self) -> int:
        """Bytes the cache may hold; 0 means no limit."""
        return 0 if self._lru.capacity == _NO_LIMIT else self._lru.capacity

    @property
    def total(self) -> int:
        """Bytes of the blobs in the cache now."""
        return self._lru.total

    def digests(self) -> list[Digest]:
        """Cached blobs, least recently used first."""
        return self._lru.keys()

    def index(self) -> int:
        """Start-up: clean the directory, then seed every complete blob, oldest use first.

        Partial downloads, stray and truncated files are deleted, never served.
        Returns the number of blobs kept.
        """
        self.blobs.discard_partial()
        for path in self.blobs.sweep():
            log.warning("removed stray cache entry path=%s", path)
        for meta in self.blobs.by_last_use(self.blobs.path):
            self.add(meta)
        log.info(
            "cache indexed blobs=%d bytes=%d capacity=%d", len(self._lru), self.total, self.capacity
        )
        return len(self._lru)

    def peek(self, digest: Digest) -> Path | None:
        """The blob's file if it is cached, without counting a use."""
        return self.blobs.path(digest) if digest in self._lru else None

    def lookup(self, digest: Digest) -> Path | None:
        """The blob's file if cached (a hit: it becomes most recently used), else None."""
        if digest not in self._lru:
            self.metrics.cache_misses.inc()
            return None
        self.metrics.cache_hits.inc()
        self._lru.touch(digest)
        path = self.blobs.path(digest)
        with contextlib.suppress(OSError):
            os.utime(path)  # recency for the next start-up's index
        return path

    def size(self, digest: Digest) -> int:
        return self._lru.size(digest)

    def add(self, meta: Metainfo) -> bool:
        """Take a committed blob (``blobs/<hex>`` and its torrent) into the cache and seed it.

        Returns False when it was evicted at once (larger than what the cache may hold
        and nobody reading it).
        """
        if not self.engine.has(meta.infohash):
            self.engine.seed(meta, self.blobs.blobs_dir, self.trackers)
        self._infohash[meta.digest] = meta.infohash
        evicted = self._lru.add(meta.digest, meta.length)
        self._evict(evicted)
        return meta.digest not in evicted

    @contextlib.contextmanager
    def pinned(self, digest: Digest) -> Iterator[None]:
        """Keep ``digest`` from eviction while the block runs (it may not be cached yet)."""
        self._lru.pin(digest)
        try:
            yield
        finally:
            self._evict(self._lru.unpin(digest))

    def _evict(self, digests: list[Digest]) -> None:
        for digest in digests:
            infohash = self._infohash.pop(digest, None)
            if infohash is not None:
                # Out of the session first: libtorrent must not serve a file we delete.
                self.engine.remove(infohash)
            size = _file_size(self.blobs.path(digest))
            self.blobs.remove(digest)
            self.metrics.cache_evictions.inc()
            self.metrics.cache_evicted_bytes.inc(size)
            log.info("cache evicted digest=%s bytes=%d", digest, size)
        self.metrics.cache_bytes.set(self.total)
        self.metrics.cache_blobs.set(len(self._lru))


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

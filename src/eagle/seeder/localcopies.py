"""The seeder's local copies: the files libtorrent seeds, bounded by bytes, evicted LRU.

Storage (fs or S3) is where a seeder's blobs live for good; libtorrent can only
seed local files, so the seeder keeps a local copy of each blob it seeds, up to
``--cache-size`` bytes. Evicting a copy stops seeding it; the next request for
that blob copies it back from storage (not from the origin).

A copy is *in use*, and never evicted, while

* it is being written (pinned for the duration);
* its metainfo was handed out less than ``lease_seconds`` ago (the agent that
  asked has not connected to us yet);
* libtorrent has peers on its torrent that still miss pieces.

Recency survives restarts: a use sets the torrent file's mtime and the start-up
index orders copies by it, seeding them from their stored torrents without
re-hashing a byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from eagle.core.digest import Digest
from eagle.core.metainfo import Metainfo
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.growing import GrowingBlob
from eagle.p2p.localstore import LocalBlobs
from eagle.utils.lru import ByteLRU

log = logging.getLogger(__name__)

UNLIMITED = 1 << 62
DEFAULT_LEASE_SECONDS = 60.0


class LocalCopyMetrics:
    """Size and churn of the local copies."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.bytes = Gauge(
            "eagle_seeder_local_bytes", "Bytes of local copies being seeded", registry=registry
        )
        self.blobs = Gauge(
            "eagle_seeder_blobs_seeding", "Blobs with a local copy being seeded", registry=registry
        )
        self.capacity = Gauge(
            "eagle_seeder_cache_capacity_bytes",
            "--cache-size (0 = unlimited)",
            registry=registry,
        )
        self.evictions = Counter(
            "eagle_seeder_evictions", "Local copies evicted (LRU)", registry=registry
        )


class LocalCopies:
    """Verified local copies of blobs, each seeded, at most ``capacity`` bytes (0: no bound).

    Use from one event loop.
    """

    def __init__(
        self,
        blobs: LocalBlobs,
        engine: TorrentEngine,
        trackers: Sequence[str],
        capacity: int,
        metrics: LocalCopyMetrics,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.blobs = blobs
        self.engine = engine
        self.trackers = list(trackers)
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self._lru: ByteLRU[Digest] = ByteLRU(capacity or UNLIMITED)
        self._meta: dict[Digest, Metainfo] = {}
        self._leases: dict[Digest, float] = {}
        self._held: set[Digest] = set()  # pinned for a lease or for leechers
        self._last_stamp = 0
        metrics.capacity.set(capacity)

    @property
    def capacity(self) -> int:
        return self._lru.capacity

    @property
    def total(self) -> int:
        return self._lru.total

    def digests(self) -> list[Digest]:
        """Local copies, least recently used first."""
        return self._lru.keys()

    def index(self) -> int:
        """Start-up: forget unverified leftovers, seed every complete copy, oldest use first.

        Torrents are read from disk, so no blob is re-hashed. Copies beyond the
        capacity (it may have shrunk) are evicted. Returns how many are kept.
        """
        self.blobs.discard_partial()
        for meta in self.blobs.by_last_use(self._torrent_path):
            self._take(meta)
        log.info(
            "local copies indexed blobs=%d bytes=%d capacity=%d",
            len(self._lru),
            self.total,
            self.capacity,
        )
        return len(self._lru)

    def get(self, digest: Digest) -> Metainfo | None:
        """The copy's metainfo if there is one (a use: recency, lease, seeding), else None."""
        meta = self._meta.get(digest)
        if meta is None:
            return None
        self._lru.touch(digest)
        self._lease(digest)
        self._stamp(digest)
        if not self.engine.has(meta.infohash):
            self.engine.seed(meta, self.blobs.blobs_dir, self.trackers)
        return meta

    async def add(self, digest: Digest, size: int | None, chunks: AsyncIterator[bytes]) -> Metainfo:
        """Stream a blob in, verify its sha256, keep and seed it; return its metainfo.

        Raises :class:`~eagle.core.errors.DigestMismatch` (nothing kept) when the
        bytes are not the blob's.
        """
        with self.pinned(digest):
            _, meta = await self.blobs.write_verified(digest, size, chunks)
            self._keep(meta)
        self._made(meta)
        return meta

    async def add_growing(self, growing: GrowingBlob, chunks: AsyncIterator[bytes]) -> Metainfo:
        """Like :meth:`add`, but written through ``growing``, which readers may follow meanwhile.

        Raises what :meth:`GrowingBlob.write_from` raises (its readers are told too),
        or :class:`~eagle.core.errors.StorageError` when the copy cannot be put in
        place; nothing is kept then.
        """
        digest = growing.digest
        with self.pinned(digest):
            try:
                meta = await growing.write_from(chunks)
                assert growing.path is not None
                self.blobs.commit(digest, growing.path, meta)
            finally:
                growing.discard()  # the temp file, unless committed
            self._keep(meta)
        self._made(meta)
        return meta

    def discard(self, digest: Digest) -> None:
        """Drop a copy whatever its state (e.g. its storage write failed)."""
        others = self._release(digest)
        self._lru.remove(digest)
        self._evict([digest], reason="discarded")
        self._evict([d for d in others if d != digest])

    @contextlib.contextmanager
    def pinned(self, digest: Digest) -> Iterator[None]:
        """Keep ``digest`` from eviction while the block runs (it may not be local yet)."""
        self._lru.pin(digest)
        try:
            yield
        finally:
            self._evict(self._lru.unpin(digest))

    def sweep(self) -> int:
        """Re-check what is in use; evict what no longer is, if over capacity. Returns evictions.

        Cheap while under capacity: nothing needs checking then.
        """
        if self.total <= self.capacity:
            # Drop expired leases without consulting libtorrent: no eviction is due.
            now = time.monotonic()
            for digest in [d for d, until in self._leases.items() if until <= now]:
                del self._leases[digest]
            return 0
        now = time.monotonic()
        # Hold copies that gained leechers first, so releasing others cannot evict them.
        for digest in self.digests():
            if digest not in self._held and self._leeched(digest):
                self._hold(digest)
        evicted: list[Digest] = []
        # Least recently used first: each release may evict, and must evict in LRU order.
        for digest in [d for d in self.digests() if d in self._held]:
            if self._leases.get(digest, 0.0) > now or self._leeched(digest):
                continue
            evicted += self._release(digest)
        evicted += self._lru.shrink()
        self._evict(evicted)
        return len(evicted)

    async def run_sweeper(self, period: float) -> None:
        """Sweep every ``period`` seconds, forever (a task owned by the service)."""
        while True:
            await asyncio.sleep(period)
            try:
                self.sweep()
            except Exception:
                log.exception("local copy sweep failed")

    # -- internals ------------------------------------------------------------------------

    def _keep(self, meta: Metainfo) -> None:
        """A new verified copy: seed it, and count it as just used."""
        self._take(meta)
        self._lease(meta.digest)
        self._stamp(meta.digest)

    def _made(self, meta: Metainfo) -> None:
        """After a new copy (unpinned): make room for it, warn if it can never fit."""
        digest = meta.digest
        if self.total > self.capacity:
            # Copies whose leases ran out since the last sweep make room now, not later.
            self.sweep()
        if meta.length > self.capacity:
            log.warning(
                "blob larger than the cache digest=%s bytes=%d capacity=%d",
                digest,
                meta.length,
                self.capacity,
            )

    def _torrent_path(self, digest: Digest) -> Path:
        return self.blobs.torrents_dir / digest.hex

    def _take(self, meta: Metainfo) -> None:
        if not self.engine.has(meta.infohash):
            self.engine.seed(meta, self.blobs.blobs_dir, self.trackers)
        self._meta[meta.digest] = meta
        self._evict(self._lru.add(meta.digest, meta.length))

    def _stamp(self, digest: Digest) -> None:
        # File times move in clock ticks (milliseconds): two uses in one tick would tie
        # and the order after a restart would be a guess. Strictly increasing stamps.
        self._last_stamp = max(time.time_ns(), self._last_stamp + 1000)
        with contextlib.suppress(OSError):
            os.utime(self._torrent_path(digest), ns=(self._last_stamp, self._last_stamp))

    def _lease(self, digest: Digest) -> None:
        if self.lease_seconds > 0:
            self._leases[digest] = time.monotonic() + self.lease_seconds
            self._hold(digest)

    def _leeched(self, digest: Digest) -> bool:
        meta = self._meta.get(digest)
        return meta is not None and self.engine.leechers(meta.infohash) > 0

    def _hold(self, digest: Digest) -> None:
        if digest not in self._held:
            self._held.add(digest)
            self._lru.pin(digest)

    def _release(self, digest: Digest) -> list[Digest]:
        """Undo :meth:`_hold`; returns what the LRU evicted as a result (caller evicts it)."""
        self._leases.pop(digest, None)
        if digest not in self._held:
            return []
        self._held.discard(digest)
        return self._lru.unpin(digest)

    def _evict(self, digests: list[Digest], reason: str = "lru") -> None:
        for digest in digests:
            meta = self._meta.pop(digest, None)
            if meta is not None:
                # Out of the session first: libtorrent must not serve a file we delete.
                self.engine.remove(meta.infohash)
            self._leases.pop(digest, None)
            self.blobs.remove(digest)
            self.metrics.evictions.inc()
            log.info("local copy evicted digest=%s reason=%s", digest, reason)
        self.metrics.bytes.set(self.total)
        self.metrics.blobs.set(len(self._lru))

"""Turning a (origin, repository, digest) into a seeded torrent, fetching each blob once."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from eagle.core.digest import Digest
from eagle.core.errors import EagleError
from eagle.core.metainfo import Metainfo
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.localstore import LocalBlobs, resume_seeding
from eagle.registry.client import Origin, OriginClient, iter_body
from eagle.utils.tasks import TaskSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    """The blob is being fetched from the origin; ask again shortly."""

    digest: Digest


class SeederMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.origin_fetches = Counter(
            "eagle_seeder_origin_fetches",
            "Blob fetches from origins, by result",
            ["result"],
            registry=registry,
        )
        self.origin_bytes = Counter(
            "eagle_seeder_origin_bytes", "Blob bytes fetched from origins", registry=registry
        )
        self.metainfo_requests = Counter(
            "eagle_seeder_metainfo_requests",
            "Metainfo requests, by answer",
            ["answer"],
            registry=registry,
        )
        self.seeding = Gauge("eagle_seeder_blobs_seeding", "Blobs being seeded", registry=registry)


class SeederService:
    """Owns the seeder's blobs: fetched from the origin once, verified, seeded for good."""

    def __init__(
        self,
        origins: OriginClient,
        blobs: LocalBlobs,
        engine: TorrentEngine,
        trackers: list[str],
        metrics: SeederMetrics,
        failure_ttl: float = 5.0,
    ) -> None:
        self.origins = origins
        self.blobs = blobs
        self.engine = engine
        self.trackers = trackers
        self.metrics = metrics
        self.failure_ttl = failure_ttl
        self._tasks = TaskSet("seeder")
        self._fetching: dict[Digest, asyncio.Task[Metainfo]] = {}
        self._failed: dict[Digest, tuple[EagleError, float]] = {}

    async def start(self) -> None:
        """Seed every complete blob already on disk (torrents are stored: no re-hashing)."""
        count = resume_seeding(self.blobs, self.engine, self.trackers)
        self.metrics.seeding.set(count)
        log.info("seeder resumed blobs=%d", count)

    async def close(self) -> None:
        await self._tasks.close()

    def lookup(self, origin: Origin, repo: str, digest: Digest) -> Metainfo | Pending:
        """The blob's metainfo if it is ready; else start (or keep) fetching it.

        A fetch that failed is reported, by raising its error, to the callers
        asking within ``failure_ttl`` seconds; after that, a new request retries.
        """
        if self.blobs.has(digest):
            meta = self.blobs.metainfo(digest)
            if not self.engine.has(meta.infohash):
                self._seed(meta)
            return meta.with_trackers(self.trackers)
        failed = self._failed.get(digest)
        if failed is not None:
            error, until = failed
            if time.monotonic() < until:
                raise error
            del self._failed[digest]
        if digest not in self._fetching:
            task = self._tasks.spawn(self._fetch(origin, repo, digest), name=f"fetch:{digest.hex}")
            self._fetching[digest] = task
        return Pending(digest)

    async def _fetch(self, origin: Origin, repo: str, digest: Digest) -> Metainfo:
        started = time.monotonic()
        try:
            async with self.origins.open_blob(origin, repo, digest) as resp:
                size = resp.content_length
                _, meta = await self.blobs.write_verified(digest, size, iter_body(resp))
        except EagleError as exc:
            self.metrics.origin_fetches.labels(type(exc).__name__).inc()
            self._failed[digest] = (exc, time.monotonic() + self.failure_ttl)
            log.warning(
                "origin fetch failed origin=%s repo=%s digest=%s error=%s",
                origin.host,
                repo,
                digest,
                exc,
            )
            raise
        finally:
            self._fetching.pop(digest, None)
        self.metrics.origin_fetches.labels("ok").inc()
        self.metrics.origin_bytes.inc(meta.length)
        log.info(
            "fetched from origin origin=%s repo=%s digest=%s bytes=%d seconds=%.2f",
            origin.host,
            repo,
            digest,
            meta.length,
            time.monotonic() - started,
        )
        self._seed(meta)
        return meta

    def _seed(self, meta: Metainfo) -> None:
        self.engine.seed(meta, self.blobs.blobs_dir, self.trackers)
        self.metrics.seeding.inc()

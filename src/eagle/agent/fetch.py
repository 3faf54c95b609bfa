"""Bringing a blob to the host: cache, then the swarm, then the origin.

Every path ends with a file whose sha256 was checked against the digest the
client asked for; nothing else is ever served.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from eagle.agent.metrics import AgentMetrics
from eagle.core.digest import Digest
from eagle.core.errors import DigestMismatch, EagleError
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.localstore import LocalBlobs, resume_seeding
from eagle.registry.client import Origin, OriginClient, forward_headers, iter_body
from eagle.seeder.client import SeederClient
from eagle.utils.singleflight import SingleFlight
from eagle.utils.tasks import TaskSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchedBlob:
    path: Path
    size: int
    source: str  # "cache", "p2p" or "origin"


@dataclass(frozen=True)
class BlobRequest:
    origin: Origin
    repo: str
    digest: Digest
    client_headers: Mapping[str, str]


class BlobFetcher:
    """cache → p2p → origin, with one download per blob however many clients ask."""

    def __init__(
        self,
        blobs: LocalBlobs,
        engine: TorrentEngine,
        seeders: SeederClient,
        origins: OriginClient,
        trackers: list[str],
        metrics: AgentMetrics,
        stall_timeout: float,
    ) -> None:
        self.blobs = blobs
        self.engine = engine
        self.seeders = seeders
        self.origins = origins
        self.trackers = trackers
        self.metrics = metrics
        self.stall_timeout = stall_timeout
        self._tasks = TaskSet("fetch")
        self._flights: SingleFlight[Digest, FetchedBlob] = SingleFlight(self._tasks)
        self._pending: dict[Digest, BlobRequest] = {}

    async def start(self) -> None:
        """Seed what the cache holds from a previous run; forget unverified leftovers."""
        count = resume_seeding(self.blobs, self.engine, self.trackers)
        log.info("cache indexed blobs=%d", count)

    async def close(self) -> None:
        await self._tasks.close()

    def cached(self, digest: Digest) -> FetchedBlob | None:
        if self.blobs.has(digest):
            return FetchedBlob(self.blobs.path(digest), self.blobs.size(digest), "cache")
        return None

    async def get(self, request: BlobRequest) -> FetchedBlob:
        hit = self.cached(request.digest)
        if hit is not None:
            return hit
        # The first request's origin, repository and credentials drive the shared fetch.
        self._pending.setdefault(request.digest, request)
        try:
            return await self._flights.do(request.digest, self._fetch)
        finally:
            self._pending.pop(request.digest, None)

    async def _fetch(self, digest: Digest) -> FetchedBlob:
        request = self._pending[digest]
        started = time.monotonic()
        try:
            blob = await self._from_swarm(request)
        except EagleError as exc:
            reason = type(exc).__name__
            self.metrics.fallbacks.labels(reason).inc()
            log.warning(
                "p2p failed, falling back to origin digest=%s reason=%s error=%s",
                digest,
                reason,
                exc,
            )
            blob = await self._from_origin(request)
        seconds = time.monotonic() - started
        self.metrics.fetch_seconds.labels(blob.source).observe(seconds)
        self.metrics.fetched_bytes.labels(blob.source).inc(blob.size)
        return blob

    async def _from_swarm(self, request: BlobRequest) -> FetchedBlob:
        meta = await self.seeders.metainfo(request.origin, request.repo, request.digest)
        trackers = self.trackers or list(meta.trackers)
        result = await self.engine.download(
            meta, self.blobs.incoming_dir, trackers, self.stall_timeout
        )
        # libtorrent checked every piece's SHA-1; the digest the client asked for is
        # sha256 over the whole blob, and only that makes the bytes servable.
        partial = self.blobs.incoming_dir / meta.digest.hex
        try:
            await asyncio.to_thread(_verify_file, partial, request.digest)
        except DigestMismatch:
            self.engine.remove(meta.infohash, delete_files=True)
            raise
        self.blobs.write_torrent(meta)
        await self.engine.move(meta.infohash, self.blobs.blobs_dir)
        log.info(
            "blob fetched source=p2p digest=%s bytes=%d seconds=%.2f peers=%d",
            request.digest,
            meta.length,
            result.seconds,
            result.peers,
        )
        return FetchedBlob(self.blobs.path(request.digest), meta.length, "p2p")

    async def _from_origin(self, request: BlobRequest) -> FetchedBlob:
        started = time.monotonic()
        headers = forward_headers(request.client_headers)
        headers.pop("Range", None)
        async with self.origins.open_blob(
            request.origin, request.repo, request.digest, headers
        ) as resp:
            path, meta = await self.blobs.write_verified(
                request.digest, resp.content_length, iter_body(resp)
            )
        # Same bytes, same torrent: this host now seeds the swarm the seeder would have.
        self.engine.seed(meta, self.blobs.blobs_dir, self.trackers)
        log.info(
            "blob fetched source=origin digest=%s bytes=%d seconds=%.2f",
            request.digest,
            meta.length,
            time.monotonic() - started,
        )
        return FetchedBlob(path, meta.length, "origin")


def _verify_file(path: Path, digest: Digest) -> None:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    digest.verify(sha)

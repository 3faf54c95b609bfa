"""(origin, repository, digest) → a seeded torrent: from a local copy, storage, or the origin.

Where a blob comes from, in order:

1. the seeder's local copy (already seeded);
2. storage, shared by every seeder: copied to a new local copy and verified on
   the way -- bytes that no longer match the digest are never seeded, and the
   blob is fetched again from the origin, which overwrites the bad object;
3. the origin, streamed once into the local copy and into storage at the same
   time. The torrent is handed out only once storage holds the verified blob,
   so any seeder can take over a blob another seeder announced. Meanwhile the
   first agents to ask may read the local copy as it grows (:mod:`.streams`).

If storage cannot be reached, a blob not held locally fails with
:class:`~eagle.storage.StorageUnavailable` (503): agents then try the next
seeder and, last, the origin themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from eagle.core.digest import Digest
from eagle.core.errors import BlobUnknown, DigestMismatch, EagleError
from eagle.core.metainfo import Metainfo
from eagle.p2p.growing import GrowingBlob
from eagle.registry.client import Origin, OriginClient, iter_body
from eagle.seeder.localcopies import LocalCopies
from eagle.seeder.streams import BlobStreams
from eagle.seeder.tee import StreamTee
from eagle.storage import BlobStat, BlobStorage, NotFound
from eagle.utils.tasks import TaskSet

log = logging.getLogger(__name__)

SWEEP_SECONDS = 5.0


@dataclass(frozen=True)
class Pending:
    """The blob is being fetched (from storage or the origin); ask again shortly."""

    digest: Digest


class SeederMetrics:
    """Where the seeder's blobs came from, and how its API was used."""

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
        self.storage_fetches = Counter(
            "eagle_seeder_storage_fetches",
            "Local copies made from storage, by result",
            ["result"],
            registry=registry,
        )
        self.storage_bytes = Counter(
            "eagle_seeder_storage_bytes", "Blob bytes read from storage", registry=registry
        )
        self.metainfo_requests = Counter(
            "eagle_seeder_metainfo_requests",
            "Metainfo requests, by answer",
            ["answer"],
            registry=registry,
        )


class NotInStorage(BlobUnknown):
    """A replica request for a blob storage does not hold; not remembered as a failure."""


class SeederService:
    """Owns the seeder's blobs: durable in storage, seeded from local copies."""

    def __init__(
        self,
        origins: OriginClient,
        storage: BlobStorage,
        copies: LocalCopies,
        trackers: list[str],
        metrics: SeederMetrics,
        failure_ttl: float = 5.0,
        streams: BlobStreams | None = None,
    ) -> None:
        self.origins = origins
        self.storage = storage
        self.copies = copies
        self.trackers = trackers
        self.metrics = metrics
        self.failure_ttl = failure_ttl
        self.streams = streams or BlobStreams(0)
        self._adopt = False
        self._tasks = TaskSet("seeder")
        self._fetching: dict[Digest, asyncio.Task[Metainfo]] = {}
        self._failed: dict[Digest, tuple[EagleError, float]] = {}

    async def start(self) -> None:
        """Open storage, then seed every local copy from a previous run (no re-hashing)."""
        await self.storage.start()
        # With fs storage on the local copies' file system (the default), a blob from the
        # origin is written and hashed once, and storage hard-links the local copy.
        self._adopt = self.storage.adopts_from(self.copies.blobs.blobs_dir)
        count = self.copies.index()
        self._tasks.spawn(self.copies.run_sweeper(SWEEP_SECONDS), name="sweeper")
        log.info("seeder resumed blobs=%d storage=%r", count, self.storage)

    async def close(self) -> None:
        await self._tasks.close()
        await self.storage.close()

    async def settled(self, digest: Digest, seconds: float) -> None:
        """Wait up to ``seconds`` for a fetch of ``digest`` in progress to end.

        Lets the HTTP API answer a request with the torrent instead of "fetching" when
        the origin is quick, rather than making every agent poll again.
        """
        task = self._fetching.get(digest)
        if task is None or seconds <= 0:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), seconds)

    def lookup(
        self, origin: Origin, repo: str, digest: Digest, stored_only: bool = False
    ) -> Metainfo | Pending:
        """The blob's metainfo if it is ready; else start (or keep) bringing it in.

        A fetch that failed is reported, by raising its error, to the callers
        asking within ``failure_ttl`` seconds; after that, a new request retries.
        ``stored_only`` (replica warming) brings the blob from storage or not at all:
        a replica must never cost the origin a second download.
        """
        if digest in self._fetching:
            # A copy may already be local while its storage write completes: not yet.
            return Pending(digest)
        meta = self.copies.get(digest)
        if meta is not None:
            return meta.with_trackers(self.trackers)
        failed = self._failed.get(digest)
        if failed is not None:
            error, until = failed
            if time.monotonic() < until:
                raise error
            del self._failed[digest]
        task = self._tasks.spawn(
            self._bring(origin, repo, digest, stored_only), name=f"fetch:{digest.hex}"
        )
        self._fetching[digest] = task
        self.streams.expect(digest)
        return Pending(digest)

    async def _bring(
        self, origin: Origin, repo: str, digest: Digest, stored_only: bool = False
    ) -> Metainfo:
        try:
            meta = await self._from_storage(digest)
            if meta is None and stored_only:
                raise NotInStorage(f"{digest} is not in storage (replica request)")
            if meta is None:
                meta = await self._from_origin(origin, repo, digest)
        except NotInStorage:
            raise
        except EagleError as exc:
            self._failed[digest] = (exc, time.monotonic() + self.failure_ttl)
            log.warning(
                "blob unavailable origin=%s repo=%s digest=%s error=%s",
                origin.host,
                repo,
                digest,
                exc,
            )
            raise
        finally:
            self._fetching.pop(digest, None)
            self.streams.end(digest)
        return meta

    async def _from_storage(self, digest: Digest) -> Metainfo | None:
        """A local copy made from storage, or None when storage has no good copy."""
        started = time.monotonic()
        try:
            stat = await self.storage.stat(digest)
            async with self.storage.open(digest) as reader:
                meta = await self.copies.add(digest, stat.size, aiter(reader))
        except NotFound:
            return None
        except DigestMismatch as exc:
            # Bit rot, a truncated upload by a foreign tool, a wrong key: never seed it.
            # The origin fetch that follows overwrites the object with verified bytes.
            self.metrics.storage_fetches.labels("corrupt").inc()
            log.error(
                "stored blob is corrupt, refetching from origin digest=%s error=%s", digest, exc
            )
            return None
        except EagleError as exc:
            self.metrics.storage_fetches.labels(type(exc).__name__).inc()
            raise
        self.metrics.storage_fetches.labels("ok").inc()
        self.metrics.storage_bytes.inc(meta.length)
        log.info(
            "local copy from storage digest=%s bytes=%d seconds=%.2f",
            digest,
            meta.length,
            time.monotonic() - started,
        )
        return meta

    async def _from_origin(self, origin: Origin, repo: str, digest: Digest) -> Metainfo:
        started = time.monotonic()
        try:
            if self._adopt:
                return await self._from_origin_adopted(origin, repo, digest, started)
            async with self.origins.open_blob(origin, repo, digest, credentials=True) as resp:
                size = resp.content_length
                tee: StreamTee[BlobStat] = StreamTee(
                    iter_body(resp), lambda chunks: self.storage.write(digest, chunks, size)
                )
                growing = GrowingBlob(digest, size, self.copies.blobs.tmp_dir)
                self.streams.publish(growing)
                try:
                    meta = await self.copies.add_growing(growing, aiter(tee))
                except BaseException:
                    await tee.cancel()
                    raise
            try:
                await tee.result()
            except BaseException:
                # Seeded means durable: without the stored blob no other seeder could
                # take over this swarm, so the local copy goes too.
                self.copies.discard(digest)
                raise
        except EagleError as exc:
            self.metrics.origin_fetches.labels(type(exc).__name__).inc()
            raise
        return self._fetched(origin, repo, meta, started)

    async def _from_origin_adopted(
        self, origin: Origin, repo: str, digest: Digest, started: float
    ) -> Metainfo:
        """The origin's bytes into the local copy only; storage then takes that file
        (one copy on disk, one hash), or, if it cannot after all, its bytes."""
        with self.copies.pinned(digest):
            async with self.origins.open_blob(origin, repo, digest, credentials=True) as resp:
                growing = GrowingBlob(digest, resp.content_length, self.copies.blobs.tmp_dir)
                self.streams.publish(growing)
                meta = await self.copies.add_growing(growing, iter_body(resp))
            try:
                path = self.copies.blobs.path(digest)
                if await self.storage.adopt(digest, path) is None:
                    await self.storage.write(digest, _file_chunks(path), meta.length)
            except BaseException:
                # Seeded means durable (see _from_origin).
                self.copies.discard(digest)
                raise
        return self._fetched(origin, repo, meta, started)

    def _fetched(self, origin: Origin, repo: str, meta: Metainfo, started: float) -> Metainfo:
        self.metrics.origin_fetches.labels("ok").inc()
        self.metrics.origin_bytes.inc(meta.length)
        log.info(
            "fetched from origin origin=%s repo=%s digest=%s bytes=%d seconds=%.2f",
            origin.host,
            repo,
            meta.digest,
            meta.length,
            time.monotonic() - started,
        )
        return meta


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A local file's bytes, read in a worker thread a chunk at a time."""
    with await asyncio.to_thread(path.open, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, 1 << 20):
            yield chunk

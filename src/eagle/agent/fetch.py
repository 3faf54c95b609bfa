"""Bringing a blob to the host: cache, then the seeder or the swarm, then the origin.

A blob comes from the swarm only as a file whose sha256 was checked against the
digest the client asked for. A cold blob (the seeder is still fetching it from the
origin) streams from the seeder as it arrives there, when the seeder has a stream
slot free; the swarm serves everyone else. When p2p cannot deliver (no seeder, no
tracker, no progress within ``fallback_timeout`` before the first byte or
``stall_timeout`` after it), the origin streams the blob into a :class:`GrowingBlob`
that clients read while it is written; it enters the cache once verified (so does a
seeder's stream). If the disk refuses it, or a stream breaks, clients finish
straight from the origin and nothing is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from eagle.agent.bandwidth import HostBandwidth
from eagle.agent.cache import BlobCache
from eagle.agent.metrics import AgentMetrics
from eagle.core.digest import Digest
from eagle.core.errors import EagleError, OriginStatus, PeerError, StorageError, UseSwarm
from eagle.core.metainfo import Metainfo
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.growing import CacheWriteFailed, GrowingBlob
from eagle.registry.client import Origin, OriginClient, forward_headers, iter_body
from eagle.seeder.client import Fetching, SeederClient, stream_body
from eagle.utils.singleflight import SingleFlight
from eagle.utils.tasks import TaskSet

log = logging.getLogger(__name__)

PROGRESS_POLL_SECONDS = 0.1


class NoProgress(PeerError):
    """p2p gave no sign of progress within the fallback timeout."""


@dataclass(frozen=True)
class FetchedBlob:
    """A complete, verified blob file."""

    path: Path
    size: int
    source: str  # "cache", "p2p", "seeder" or "origin"
    seconds: float = 0.0  # how long bringing it in took (0 for a cache hit)
    peers: int = 0  # peers it came from


@dataclass(frozen=True)
class BlobRequest:
    origin: Origin
    repo: str
    digest: Digest
    client_headers: Mapping[str, str]


Delivery = FetchedBlob | GrowingBlob
"""What :meth:`BlobFetcher.get` hands a client: a whole file, or one still arriving."""

StreamOpener = AbstractAsyncContextManager[tuple[int | None, AsyncIterator[bytes]]]
"""An HTTP download of a blob once entered: its size (if told) and its chunks."""


class BlobFetcher:
    """cache → p2p → origin, with one download per blob however many clients ask."""

    def __init__(
        self,
        cache: BlobCache,
        engine: TorrentEngine,
        seeders: SeederClient,
        origins: OriginClient,
        trackers: list[str],
        metrics: AgentMetrics,
        bandwidth: HostBandwidth,
        stall_timeout: float,
        fallback_timeout: float,
        *,
        seeder_stream: bool = True,
    ) -> None:
        self.cache = cache
        self.engine = engine
        self.seeders = seeders
        self.origins = origins
        self.trackers = trackers
        self.metrics = metrics
        self.bandwidth = bandwidth
        self.stall_timeout = stall_timeout
        self.fallback_timeout = fallback_timeout
        self.seeder_stream = seeder_stream
        self._tasks = TaskSet("fetch")
        self._flights: SingleFlight[Digest, Delivery] = SingleFlight(self._tasks)
        self._pending: dict[Digest, BlobRequest] = {}
        self._growing: dict[Digest, GrowingBlob] = {}
        self._swarm: dict[Digest, Metainfo] = {}

    async def start(self) -> None:
        """Index and seed what the cache holds from a previous run; clean the rest."""
        self.cache.index()

    async def close(self) -> None:
        await self._tasks.close()

    def cached(self, digest: Digest) -> FetchedBlob | None:
        """The cached blob, without counting a use (for HEAD)."""
        path = self.cache.peek(digest)
        return FetchedBlob(path, self.cache.size(digest), "cache") if path else None

    def progress(self, digest: Digest) -> int:
        """Bytes of the blob on this host now (complete, downloading or streaming in)."""
        if self.cache.peek(digest) is not None:
            return self.cache.size(digest)
        growing = self._growing.get(digest)
        if growing is not None:
            return growing.written
        meta = self._swarm.get(digest)
        if meta is not None:
            return min(meta.length, self.engine.downloaded(meta.infohash) or 0)
        return 0

    async def get(self, request: BlobRequest) -> Delivery:
        """The blob, from wherever it is quickest. Callers should hold ``cache.pinned``."""
        path = self.cache.lookup(request.digest)
        if path is not None:
            return FetchedBlob(path, self.cache.size(request.digest), "cache")
        growing = self._growing.get(request.digest)
        if growing is not None:
            return growing
        # The first request's origin, repository and credentials drive the shared fetch.
        self._pending.setdefault(request.digest, request)
        try:
            return await self._flights.do(request.digest, self._fetch)
        finally:
            self._pending.pop(request.digest, None)

    async def get_file(self, request: BlobRequest) -> FetchedBlob:
        """Like :meth:`get`, but wait for a streaming origin download to be verified."""
        delivery = await self.get(request)
        if isinstance(delivery, FetchedBlob):
            return delivery
        await delivery.wait()
        if delivery.error is not None:
            raise delivery.error
        path = self.cache.peek(request.digest)
        if path is None:
            raise CacheWriteFailed(f"{request.digest} was verified but could not be cached")
        return FetchedBlob(path, self.cache.size(request.digest), delivery.source)

    # -- the shared fetch --------------------------------------------------------------

    async def _fetch(self, digest: Digest) -> Delivery:
        request = self._pending[digest]
        started = time.monotonic()
        with self.cache.pinned(digest):
            try:
                delivery = await self._from_swarm(request, started)
            except (EagleError, OSError) as exc:
                reason = type(exc).__name__
                self.metrics.fallbacks.labels(reason).inc()
                log.warning(
                    "p2p failed, falling back to origin digest=%s reason=%s error=%s",
                    digest,
                    reason,
                    exc,
                )
            else:
                if isinstance(delivery, FetchedBlob):
                    self.metrics.fetch_seconds.labels("p2p").observe(time.monotonic() - started)
                    self.metrics.fetched_bytes.labels("p2p").inc(delivery.size)
                return delivery
        return await self._from_origin(request, started)

    async def _from_swarm(self, request: BlobRequest, started: float) -> Delivery:
        """Download through the swarm, giving up after ``fallback_timeout`` without progress.

        Signs of progress: a seeder saying it is fetching, metainfo arriving, payload
        arriving. After the first payload byte the engine's ``stall_timeout`` applies.
        A cold blob may instead stream from the seeder fetching it (``seeder_stream``).
        """
        loop = asyncio.get_running_loop()
        stage = "seeder"
        watcher: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(self.fallback_timeout) as bound:

                def alive() -> None:
                    if bound.when() is not None:
                        bound.reschedule(loop.time() + self.fallback_timeout)

                meta: Metainfo | None = None
                if self.seeder_stream:
                    cold = await self._from_seeder(request, started, alive)
                    if isinstance(cold, GrowingBlob):
                        return cold
                    meta = cold
                if meta is None:
                    meta = await self.seeders.metainfo(
                        request.origin, request.repo, request.digest, on_pending=alive
                    )
                alive()
                stage = "swarm"
                watcher = self._tasks.spawn(
                    self._disarm_on_first_byte(meta, bound), name=f"watch:{meta.digest.hex}"
                )
                return await self._download(request, meta)
        except TimeoutError as exc:
            if bound.expired():
                raise NoProgress(
                    f"{request.digest}: no p2p progress within {self.fallback_timeout:g}s"
                    f" (waiting for the {stage})"
                ) from exc
            raise PeerError(f"{request.digest}: p2p timed out: {exc!r}") from exc
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _from_seeder(
        self, request: BlobRequest, started: float, alive: Callable[[], None]
    ) -> GrowingBlob | Metainfo | None:
        """A cold blob streamed by the seeder fetching it, as it arrives there.

        Returns the stream; else what the seeders said instead: the metainfo when
        the blob is seeded already, None when the stream was refused or broke
        before it began (the swarm path asks for the metainfo again).
        """
        answer = await self.seeders.answer(request.origin, request.repo, request.digest)
        if not isinstance(answer, Fetching):
            return answer
        alive()
        opener = self._open_seeder(request, answer.seeder)
        try:
            return await self._start_stream(request, opener, "seeder", started)
        except EagleError as exc:
            outcome = "refused" if isinstance(exc, UseSwarm) else "failed"
            log.info(
                "seeder stream %s, using the swarm digest=%s seeder=%s error=%s",
                outcome,
                request.digest,
                answer.seeder,
                exc,
            )
            return None

    @contextlib.asynccontextmanager
    async def _open_seeder(
        self, request: BlobRequest, seeder: str
    ) -> AsyncIterator[tuple[int | None, AsyncIterator[bytes]]]:
        async with self.seeders.stream(
            seeder, request.origin, request.repo, request.digest, self.stall_timeout
        ) as resp:
            yield resp.content_length, stream_body(resp)

    @contextlib.asynccontextmanager
    async def _open_origin(
        self, request: BlobRequest
    ) -> AsyncIterator[tuple[int | None, AsyncIterator[bytes]]]:
        headers = forward_headers(request.client_headers)
        headers.pop("Range", None)
        async with self.origins.open_blob(
            request.origin, request.repo, request.digest, headers
        ) as resp:
            yield resp.content_length, iter_body(resp)

    async def _disarm_on_first_byte(self, meta: Metainfo, bound: asyncio.Timeout) -> None:
        while bound.when() is not None:
            if (self.engine.downloaded(meta.infohash) or 0) > 0:
                bound.reschedule(None)
                return
            await asyncio.sleep(PROGRESS_POLL_SECONDS)

    async def _download(self, request: BlobRequest, meta: Metainfo) -> FetchedBlob:
        trackers = self.trackers or list(meta.trackers)
        blobs = self.cache.blobs
        self._swarm[request.digest] = meta
        try:
            with self.bandwidth.flow("p2p"):
                result = await self.engine.download(
                    meta, blobs.incoming_dir, trackers, self.stall_timeout
                )
        finally:
            self._swarm.pop(request.digest, None)
        # libtorrent checked every piece's SHA-1; the digest the client asked for is
        # sha256 over the whole blob, and only that makes the bytes servable.
        partial = blobs.incoming_dir / meta.digest.hex
        try:
            await asyncio.to_thread(_verify_file, partial, request.digest)
            blobs.write_torrent(meta)
            await self.engine.move(meta.infohash, blobs.blobs_dir)
        except BaseException:
            self.engine.remove(meta.infohash, delete_files=True)
            raise
        self.cache.add(meta)
        log.info(
            "blob fetched source=p2p digest=%s bytes=%d seconds=%.2f peers=%d",
            request.digest,
            meta.length,
            result.seconds,
            result.peers,
        )
        return FetchedBlob(
            blobs.path(request.digest), meta.length, "p2p", result.seconds, result.peers
        )

    async def _from_origin(self, request: BlobRequest, started: float) -> GrowingBlob:
        """Start streaming from the origin; return as soon as the origin has answered."""
        return await self._start_stream(request, self._open_origin(request), "origin", started)

    async def _start_stream(
        self, request: BlobRequest, opener: StreamOpener, source: str, started: float
    ) -> GrowingBlob:
        """Stream ``opener`` into a :class:`GrowingBlob`; return it once the source answered.

        Raises the source's refusal (e.g. an error status) as it is.
        """
        answered: asyncio.Future[GrowingBlob] = asyncio.get_running_loop().create_future()
        writer = self._tasks.spawn(
            self._stream_writer(request, opener, source, answered, started),
            name=f"{source}:{request.digest.hex}",
        )
        try:
            return await asyncio.shield(answered)
        except asyncio.CancelledError:
            # Given up on (a timeout): nobody must be left writing the blob meanwhile.
            writer.cancel()
            raise

    async def _stream_writer(
        self,
        request: BlobRequest,
        opener: StreamOpener,
        source: str,
        answered: asyncio.Future[GrowingBlob],
        started: float,
    ) -> None:
        digest = request.digest
        growing: GrowingBlob | None = None
        with self.cache.pinned(digest):
            try:
                async with opener as (size, chunks):
                    growing = GrowingBlob(digest, size, self.cache.blobs.tmp_dir, source)
                    if growing.error is not None and source != "origin":
                        # The disk refuses it: the swarm (or the origin, at last) serves
                        # clients, rather than a seeder stream slot held for nothing.
                        raise growing.error
                    self._growing[digest] = growing
                    answered.set_result(growing)
                    with self.bandwidth.flow("http"):
                        meta = await growing.write_from(self.bandwidth.http.limit(chunks))
                self._commit(growing, meta, started)
            except CacheWriteFailed as exc:
                if not answered.done():
                    answered.set_exception(exc)  # a seeder stream refused for the disk
                    return
                # Clients already reading go on straight from the origin (see ``direct``).
                self.metrics.uncached.labels("disk").inc()
                log.error("not caching blob, streaming it instead digest=%s error=%s", digest, exc)
            except EagleError as exc:
                if not answered.done():
                    answered.set_exception(exc)
                else:
                    log.warning("download failed source=%s digest=%s error=%s", source, digest, exc)
            except Exception as exc:
                log.exception("download crashed source=%s digest=%s", source, digest)
                error = StorageError(f"{digest}: {source} download crashed: {exc!r}")
                if not answered.done():
                    answered.set_exception(error)
                elif growing is not None:
                    growing.fail(error)
            finally:
                if growing is not None and self._growing.get(digest) is growing:
                    del self._growing[digest]
                if growing is not None:
                    growing.discard()

    def _commit(self, growing: GrowingBlob, meta: Metainfo, started: float) -> None:
        assert growing.path is not None
        blobs = self.cache.blobs
        try:
            blobs.commit(meta.digest, growing.path, meta)
        except EagleError as exc:
            # Verified bytes still reach the clients reading them; only caching failed.
            self.metrics.uncached.labels("disk").inc()
            log.error("not caching blob digest=%s error=%s", meta.digest, exc)
            return
        self.cache.add(meta)
        seconds = time.monotonic() - started
        self.metrics.fetch_seconds.labels(growing.source).observe(seconds)
        self.metrics.fetched_bytes.labels(growing.source).inc(meta.length)
        log.info(
            "blob fetched source=%s digest=%s bytes=%d seconds=%.2f peers=0",
            growing.source,
            meta.digest,
            meta.length,
            seconds,
        )

    # -- straight from the origin, for clients whose shared download failed --------------

    async def direct(self, request: BlobRequest, offset: int) -> AsyncGenerator[bytes, None]:
        """The blob's bytes from ``offset``, from the origin, not cached (within the limit)."""
        headers = forward_headers(request.client_headers)
        headers.pop("Range", None)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        path = f"/v2/{request.repo}/blobs/{request.digest}"
        async with self.origins.request(request.origin, "GET", path, headers) as resp:
            if resp.status == 200:
                skip = offset  # the origin ignored the range: drop what the client has
            elif resp.status == 206 and offset:
                skip = 0
            else:
                raise OriginStatus(
                    f"origin {request.origin.host} answered {resp.status} for {request.digest}",
                    resp.status,
                )
            with self.bandwidth.flow("http"):
                async for chunk in self.bandwidth.http.limit(iter_body(resp)):
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    if chunk:
                        yield chunk


def _verify_file(path: Path, digest: Digest) -> None:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    digest.verify(sha)

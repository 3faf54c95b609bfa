"""Prefetching: when a client receives an image manifest, start bringing in all its blobs.

Runtimes ask for an image's blobs one after another (skopeo) or a few at a time,
and every small blob would then pay its own seeder round trip and torrent start
while the client waits. Started together as the manifest goes out, they arrive in
parallel; the client's blob requests find them cached or join their download in
flight (one download per blob either way).

Prefetching only fills the cache: each blob request still passes the access check
before any byte is served, so nobody gains access by it. An origin fallback during
a prefetch uses the credentials of the client whose manifest request started it.
Indexes (manifest lists) are not followed: the client's next request, for its
platform's manifest, starts the prefetch of the image it actually wants.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from eagle.agent.fetch import BlobFetcher, BlobRequest
from eagle.agent.metrics import AgentMetrics
from eagle.core.digest import Digest
from eagle.core.errors import EagleError
from eagle.core.metainfo import piece_length_for
from eagle.p2p.steering import worth_steering
from eagle.registry.client import Origin
from eagle.registry.manifests import blobs_of, image_manifest
from eagle.utils.tasks import TaskSet

log = logging.getLogger(__name__)

CONCURRENT_BLOBS = 8


def steered(size: int) -> bool:
    """Whether a blob of ``size`` bytes is big enough for the swarm strategy's stripes."""
    return worth_steering(-(-size // piece_length_for(size)))


class ManifestPrefetch:
    """Starts background fetches of the blobs of the image manifests clients receive."""

    def __init__(self, fetcher: BlobFetcher, metrics: AgentMetrics) -> None:
        self.fetcher = fetcher
        self.metrics = metrics
        self._tasks = TaskSet("prefetch")
        self._active: set[Digest] = set()
        self._limit = asyncio.Semaphore(CONCURRENT_BLOBS)

    async def close(self) -> None:
        await self._tasks.close()

    def observe(
        self,
        origin: Origin,
        repo: str,
        body: bytes,
        content_type: str,
        client_headers: Mapping[str, str],
    ) -> list[Digest]:
        """Start fetching the blobs of ``body`` if it is an image manifest; return them.

        Blobs already cached or being prefetched are skipped, and so is an image
        bigger than the whole cache: prefetching it would evict its own layers.
        """
        doc = image_manifest(body, content_type)
        if doc is None:
            return []
        try:
            blobs = blobs_of(doc)
        except EagleError as exc:
            # The client gets the manifest as the origin sent it; its own error is its own.
            log.debug("not prefetching a malformed manifest repo=%s error=%s", repo, exc)
            return []
        capacity = self.fetcher.cache.capacity
        if capacity and sum(size for _, size in blobs) > capacity:
            log.info("not prefetching an image bigger than the cache repo=%s", repo)
            return []
        big: list[BlobRequest] = []
        small: list[BlobRequest] = []
        for digest, size in blobs:
            if digest in self._active or self.fetcher.cached(digest) is not None:
                continue
            self._active.add(digest)
            request = BlobRequest(origin, repo, digest, dict(client_headers))
            (big if steered(size) else small).append(request)
        if big or small:
            self._tasks.spawn(self._fetch_all(big, small), name=f"image:{repo}")
            log.info("prefetching repo=%s blobs=%d", repo, len(big) + len(small))
        return [r.digest for r in big + small]

    async def _fetch_all(self, big: list[BlobRequest], small: list[BlobRequest]) -> None:
        """Big blobs at once; small ones after them. The seeder sends a small blob to
        every host (it is too small to share out in stripes), and the seeder's link is
        what a swarm of big blobs waits for: small blobs wait until it is free. (A
        client asking for one meanwhile gets it at once, as always.)"""
        await asyncio.gather(*(self._fetch(r) for r in big))
        await asyncio.gather(*(self._fetch(r) for r in small))

    async def _fetch(self, request: BlobRequest) -> None:
        try:
            async with self._limit:
                blob = await self.fetcher.get_file(request)
        except (EagleError, OSError) as exc:
            # The client's own request for the blob will try again and report it.
            self.metrics.prefetches.labels("failed").inc()
            log.warning("prefetch failed digest=%s error=%s", request.digest, exc)
        else:
            self.metrics.prefetches.labels("ok").inc()
            log.debug("prefetched digest=%s source=%s", request.digest, blob.source)
        finally:
            self._active.discard(request.digest)

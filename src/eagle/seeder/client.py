"""How agents ask seeders for metainfo: rendezvous choice, polling, fail-over."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

import aiohttp

from eagle.core.digest import Digest
from eagle.core.errors import InvalidInput, SeederUnavailable
from eagle.core.metainfo import Metainfo
from eagle.registry.client import Origin
from eagle.utils.tasks import TaskSet

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
LONG_POLL_SECONDS = 1.0


def rank_seeders(seeders: Sequence[str], digest: Digest) -> list[str]:
    """Rendezvous (highest random weight) order: one blob usually lands on one seeder,
    and removing a seeder moves only the blobs that seeder had."""

    def weight(url: str) -> bytes:
        return hashlib.sha256(f"{url}\0{digest}".encode()).digest()

    return sorted(seeders, key=weight, reverse=True)


class SeederClient:
    """Gets a blob's metainfo from the first seeder (in rendezvous order) that can give it.

    A seeder answers 202 while it fetches the blob from the origin; we poll it with
    short per-request timeouts, so a dead or frozen seeder is noticed in
    ``request_timeout`` seconds, while a slow origin fetch may take ``fetch_timeout``.

    With ``replicas`` > 1, the next seeders in rendezvous order are asked for the same
    blob in the background once the first one answered. They copy it from the storage
    they share (the first seeder answers only once the blob is stored) and seed the
    same swarm, so a seeder that dies in the middle of a pull leaves the download to
    the others instead of stalling it.
    """

    def __init__(
        self,
        seeders: Sequence[str],
        request_timeout: float = 2.0,
        fetch_timeout: float = 300.0,
        *,
        replicas: int = 2,
        long_poll: float = LONG_POLL_SECONDS,
    ) -> None:
        self.seeders = [s.rstrip("/") for s in seeders]
        # The seeder holds each request up to this long for its origin fetch, so a
        # quick fetch costs no polling round. Capped at half the request timeout, so
        # a frozen seeder is still noticed within `request_timeout`.
        self.long_poll = max(0.0, min(long_poll, request_timeout / 2))
        self.request_timeout = request_timeout
        self.fetch_timeout = fetch_timeout
        self.replicas = max(1, replicas)
        self._http: aiohttp.ClientSession | None = None
        self._tasks = TaskSet("seeder-client")
        self._warming: set[tuple[str, Digest]] = set()

    async def close(self) -> None:
        await self._tasks.close()
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.request_timeout)
            )
        return self._http

    async def metainfo(
        self,
        origin: Origin,
        repo: str,
        digest: Digest,
        on_pending: Callable[[], None] | None = None,
    ) -> Metainfo:
        """Metainfo for the blob, or :class:`SeederUnavailable` naming why each seeder failed.

        ``on_pending`` is called on every "still fetching" answer: a sign of life
        for callers that bound how long they wait without progress.
        """
        if not self.seeders:
            raise SeederUnavailable("no seeders configured")
        query = urlencode({"origin": origin.url, "repo": repo, "digest": str(digest)})
        failures = []
        ranked = rank_seeders(self.seeders, digest)
        for i, seeder in enumerate(ranked):
            try:
                meta = await self._poll(
                    f"{seeder}/v1/metainfo?{query}&wait={self.long_poll:g}", digest, on_pending
                )
            except (aiohttp.ClientError, TimeoutError, SeederUnavailable, InvalidInput) as exc:
                log.info("seeder failed seeder=%s digest=%s error=%r", seeder, digest, exc)
                failures.append(f"{seeder}: {exc!r}")
                continue
            for replica in ranked[i + 1 : i + self.replicas]:
                self._warm(replica, query, digest)
            return meta
        raise SeederUnavailable("; ".join(failures))

    def _warm(self, seeder: str, query: str, digest: Digest) -> None:
        if (seeder, digest) in self._warming:
            return
        self._warming.add((seeder, digest))
        self._tasks.spawn(self._warm_one(seeder, query, digest), name=f"warm:{digest.hex[:12]}")

    async def _warm_one(self, seeder: str, query: str, digest: Digest) -> None:
        try:
            await self._poll(f"{seeder}/v1/metainfo?{query}&stored_only=1", digest)
            log.debug("replica seeding seeder=%s digest=%s", seeder, digest)
        except (aiohttp.ClientError, TimeoutError, SeederUnavailable, InvalidInput) as exc:
            log.info("replica seeder failed seeder=%s digest=%s error=%r", seeder, digest, exc)
        finally:
            self._warming.discard((seeder, digest))

    async def _poll(
        self, url: str, digest: Digest, on_pending: Callable[[], None] | None = None
    ) -> Metainfo:
        deadline = time.monotonic() + self.fetch_timeout
        while True:
            async with self.http.get(url) as resp:
                body = await resp.read()
                if resp.status == 200:
                    meta = Metainfo.from_bytes(body)
                    if meta.digest != digest:
                        raise InvalidInput(f"seeder sent the torrent of {meta.digest}")
                    return meta
                if resp.status != 202:
                    raise SeederUnavailable(f"status {resp.status}: {body[:200]!r}")
                if on_pending is not None:
                    on_pending()
            if time.monotonic() > deadline:
                raise SeederUnavailable(f"still fetching after {self.fetch_timeout:.0f}s")
            await asyncio.sleep(POLL_SECONDS)

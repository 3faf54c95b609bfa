"""How agents ask seeders for metainfo: rendezvous choice, polling, fail-over."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from urllib.parse import urlencode

import aiohttp

from eagle.core.digest import Digest
from eagle.core.errors import InvalidInput, SeederUnavailable
from eagle.core.metainfo import Metainfo
from eagle.registry.client import Origin

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25


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
    """

    def __init__(
        self, seeders: Sequence[str], request_timeout: float = 2.0, fetch_timeout: float = 300.0
    ) -> None:
        self.seeders = [s.rstrip("/") for s in seeders]
        self.request_timeout = request_timeout
        self.fetch_timeout = fetch_timeout
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
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

    async def metainfo(self, origin: Origin, repo: str, digest: Digest) -> Metainfo:
        """Metainfo for the blob, or :class:`SeederUnavailable` naming why each seeder failed."""
        if not self.seeders:
            raise SeederUnavailable("no seeders configured")
        query = urlencode({"origin": origin.url, "repo": repo, "digest": str(digest)})
        failures = []
        for seeder in rank_seeders(self.seeders, digest):
            try:
                return await self._poll(f"{seeder}/v1/metainfo?{query}", digest)
            except (aiohttp.ClientError, TimeoutError, SeederUnavailable, InvalidInput) as exc:
                log.info("seeder failed seeder=%s digest=%s error=%r", seeder, digest, exc)
                failures.append(f"{seeder}: {exc!r}")
        raise SeederUnavailable("; ".join(failures))

    async def _poll(self, url: str, digest: Digest) -> Metainfo:
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
            if time.monotonic() > deadline:
                raise SeederUnavailable(f"still fetching after {self.fetch_timeout:.0f}s")
            await asyncio.sleep(POLL_SECONDS)

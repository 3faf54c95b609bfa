"""How agents ask seeders for metainfo: rendezvous choice, polling, fail-over; and how
they open a seeder's HTTP stream of a cold blob."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode

import aiohttp

from eagle.core.digest import Digest
from eagle.core.errors import InvalidInput, SeederUnavailable, UseSwarm
from eagle.core.metainfo import Metainfo
from eagle.registry.client import Origin
from eagle.utils.http import body_chunks
from eagle.utils.tasks import TaskSet

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
LONG_POLL_SECONDS = 1.0
STREAM_CHUNK = 1 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class Fetching:
    """A seeder's answer that it is fetching the blob from the origin right now."""

    seeder: str


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
        # Names this agent to seeders, which stream a cold blob only while one agent
        # wants it (see eagle.seeder.streams).
        self.agent_id = uuid.uuid4().hex[:16]

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

        def poll(seeder: str, query: str) -> Awaitable[Metainfo]:
            url = f"{seeder}/v1/metainfo?{query}&wait={self.long_poll:g}"
            return self._poll(url, digest, on_pending)

        return await self._ask(origin, repo, digest, poll)

    async def answer(self, origin: Origin, repo: str, digest: Digest) -> Metainfo | Fetching:
        """The first answer, without waiting for a fetch: the metainfo, or which seeder is
        fetching the blob now (a cold blob, see :meth:`stream`).

        Starts the seeder's fetch like :meth:`metainfo` does; raises
        :class:`SeederUnavailable` naming why each seeder failed.
        """

        async def ask(seeder: str, query: str) -> Metainfo | Fetching:
            meta = await self._request(f"{seeder}/v1/metainfo?{query}", digest)
            return Fetching(seeder) if meta is None else meta

        return await self._ask(origin, repo, digest, ask)

    @contextlib.asynccontextmanager
    async def stream(
        self, seeder: str, origin: Origin, repo: str, digest: Digest, read_timeout: float
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """``seeder``'s stream of a blob it is fetching now: a 200 response; read its body
        with :func:`stream_body`.

        Raises :class:`UseSwarm` when the seeder declines (409: the blob is seeded or
        not being fetched, or every stream slot is taken) and :class:`SeederUnavailable`
        on any other failure. The answer must come within ``request_timeout``; after
        it, the body may pause up to ``read_timeout`` seconds at a time.
        """
        query = urlencode(
            {
                "origin": origin.url,
                "repo": repo,
                "digest": str(digest),
                "wait": self.long_poll,
                "agent": self.agent_id,
            }
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.request_timeout, sock_read=read_timeout
        )
        try:
            async with asyncio.timeout(self.request_timeout):
                resp = await self.http.get(f"{seeder}/v1/blob?{query}", timeout=timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SeederUnavailable(f"{seeder}: no blob stream: {exc!r}") from exc
        async with resp:
            if resp.status != 200:
                try:
                    body = await asyncio.wait_for(resp.read(), self.request_timeout)
                except (aiohttp.ClientError, TimeoutError):
                    body = b""
                message = _error_message(body)
                if resp.status == 409:
                    raise UseSwarm(f"{seeder}: {message}")
                raise SeederUnavailable(f"{seeder}: status {resp.status}: {message}")
            yield resp

    async def _ask(
        self,
        origin: Origin,
        repo: str,
        digest: Digest,
        ask: Callable[[str, str], Awaitable[T]],
    ) -> T:
        """``ask(seeder, query)`` of each seeder in rendezvous order until one answers."""
        if not self.seeders:
            raise SeederUnavailable("no seeders configured")
        query = urlencode(
            {"origin": origin.url, "repo": repo, "digest": str(digest), "agent": self.agent_id}
        )
        failures = []
        ranked = rank_seeders(self.seeders, digest)
        for i, seeder in enumerate(ranked):
            try:
                answer = await ask(seeder, query)
            except (aiohttp.ClientError, TimeoutError, SeederUnavailable, InvalidInput) as exc:
                log.info("seeder failed seeder=%s digest=%s error=%r", seeder, digest, exc)
                failures.append(f"{seeder}: {exc!r}")
                continue
            if isinstance(answer, Metainfo):
                for replica in ranked[i + 1 : i + self.replicas]:
                    self._warm(replica, query, digest)
            return answer
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
            meta = await self._request(url, digest)
            if meta is not None:
                return meta
            if on_pending is not None:
                on_pending()
            if time.monotonic() > deadline:
                raise SeederUnavailable(f"still fetching after {self.fetch_timeout:.0f}s")
            await asyncio.sleep(POLL_SECONDS)

    async def _request(self, url: str, digest: Digest) -> Metainfo | None:
        """One metainfo request: the metainfo, or None while the seeder is fetching."""
        async with self.http.get(url) as resp:
            body = await resp.read()
            if resp.status == 200:
                meta = Metainfo.from_bytes(body)
                if meta.digest != digest:
                    raise InvalidInput(f"seeder sent the torrent of {meta.digest}")
                return meta
            if resp.status != 202:
                raise SeederUnavailable(f"status {resp.status}: {body[:200]!r}")
            return None


async def stream_body(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """A seeder stream's body in chunks; a broken stream becomes :class:`SeederUnavailable`."""
    async for chunk in body_chunks(resp, STREAM_CHUNK, lambda m: SeederUnavailable(f"seeder {m}")):
        yield chunk


def _error_message(body: bytes) -> str:
    """The message of an OCI error body, else a short excerpt of the body."""
    try:
        return str(json.loads(body)["errors"][0]["message"])[:300]
    except (ValueError, KeyError, IndexError, TypeError):
        return repr(body[:200])

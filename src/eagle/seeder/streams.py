"""Cold blobs streamed to the first agent while the seeder is still fetching them.

Without this, a cold blob reaches its first agent in three steps, one after the
other: origin → seeder (written and hashed into a torrent), then seeder → agent
over BitTorrent, then agent → client. While the seeder writes its local copy (a
:class:`~eagle.p2p.growing.GrowingBlob`), up to ``slots`` requesters per blob may
read that copy as it grows; as everywhere, the last byte leaves only once the
whole blob's sha256 matched, so no one can complete a wrong blob.

Why bounded: in a large swarm the seeder must still send each piece about once
over BitTorrent. Each HTTP stream costs it one more blob's worth of upload, which
pays only for the first requester's latency; everyone else uses the swarm. So a
stream is only for a blob one agent wants: as soon as another agent asks for it
(agents name themselves with ``agent=`` on every request), streams of it are
revoked (the connection is cut, and the agent finishes its clients from the swarm)
and no new one is granted. Measured: a 12-host swarm on a cold blob took 2.70 x its
ideal time with streams that ran to the end, against 1.68 without streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import NoReturn

from prometheus_client import CollectorRegistry, Counter

from eagle.core.digest import Digest
from eagle.core.errors import UseSwarm
from eagle.p2p.growing import GrowingBlob

log = logging.getLogger(__name__)


class StreamMetrics:
    """How often blobs were streamed over HTTP instead of the swarm, and how many bytes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "eagle_seeder_stream_requests",
            "Blob stream requests, by answer (granted, or why the swarm was the way)",
            ["answer"],
            registry=registry,
        )
        self.bytes = Counter(
            "eagle_seeder_stream_bytes",
            "Blob bytes streamed over HTTP while fetching them from the origin",
            registry=registry,
        )


@dataclass
class _Fetch:
    """One fetch in progress: its local copy once it is being written, and its readers."""

    copy: asyncio.Future[GrowingBlob | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    readers: int = 0
    agents: set[str] = field(default_factory=set)
    ended: bool = False

    @property
    def shared(self) -> bool:
        """More than one agent wants the blob: the swarm is the way for all of them."""
        return len(self.agents) > 1


@dataclass
class StreamGrant:
    """A claimed stream: the local copy to read, while :attr:`revoked` stays False."""

    growing: GrowingBlob
    _fetch: _Fetch

    @property
    def revoked(self) -> bool:
        return self._fetch.shared


class BlobStreams:
    """Local copies being written, readable by at most ``slots`` requesters per blob.

    The service says when a fetch starts (:meth:`expect`), when its local copy is
    being written (:meth:`publish`) and when the fetch is over (:meth:`end`);
    requesters :meth:`claim` a slot. Use from one event loop.
    """

    def __init__(self, slots: int, metrics: StreamMetrics | None = None) -> None:
        self.slots = slots
        self.metrics = metrics or StreamMetrics(CollectorRegistry())
        self._fetches: dict[Digest, _Fetch] = {}

    def expect(self, digest: Digest) -> None:
        """A fetch of ``digest`` started: requesters may wait for its local copy to begin."""
        fetch = self._fetches.get(digest)
        if fetch is None or fetch.ended:
            self._fetches[digest] = _Fetch()

    def publish(self, growing: GrowingBlob) -> None:
        """The fetch's local copy is being written into ``growing``: readable from now on."""
        fetch = self._fetches.setdefault(growing.digest, _Fetch())
        if not fetch.copy.done():
            fetch.copy.set_result(growing)

    def end(self, digest: Digest) -> None:
        """The fetch is over, however it went: no new streams (readers already in go on,
        until another agent asks for the blob)."""
        fetch = self._fetches.get(digest)
        if fetch is None:
            return
        fetch.ended = True
        if not fetch.copy.done():
            fetch.copy.set_result(None)
        if fetch.readers == 0:
            del self._fetches[digest]

    def note(self, digest: Digest, agent: str | None) -> None:
        """``agent`` asked for ``digest``: once two agents have, its streams are revoked."""
        fetch = self._fetches.get(digest)
        if fetch is None or not agent or agent in fetch.agents:
            return
        fetch.agents.add(agent)
        if len(fetch.agents) == 2:
            if fetch.readers:
                self.metrics.requests.labels("revoked").inc(fetch.readers)
            log.info("stream revoked: another agent wants the blob digest=%s", digest)

    @contextlib.asynccontextmanager
    async def claim(
        self, digest: Digest, wait: float, agent: str | None = None
    ) -> AsyncIterator[StreamGrant]:
        """A slot on the local copy being written, for the block; waits up to ``wait``
        seconds for a fetch that started to begin writing.

        Raises :class:`~eagle.core.errors.UseSwarm` when streams are off, the blob
        is not being fetched (seeded already, or unknown), its copy failed, another
        agent wants it too, or every slot is taken.
        """
        self.note(digest, agent)
        growing = await self._copy_of(digest, wait)
        fetch = self._fetches.get(digest)
        if fetch is not None and fetch.shared:
            self._refuse("shared", f"other agents want {digest} too: the swarm is the way")
        if fetch is None or fetch.ended or fetch.readers >= self.slots:
            self._refuse("busy", f"all {self.slots} stream slot(s) of {digest} are taken")
        fetch.readers += 1
        self.metrics.requests.labels("granted").inc()
        log.info("stream granted digest=%s readers=%d", digest, fetch.readers)
        try:
            yield StreamGrant(growing, fetch)
        finally:
            fetch.readers -= 1
            if fetch.ended and fetch.readers == 0:
                self._fetches.pop(digest, None)

    async def _copy_of(self, digest: Digest, wait: float) -> GrowingBlob:
        if self.slots <= 0:
            self._refuse("off", "this seeder does not stream blobs (stream-slots 0)")
        fetch = self._fetches.get(digest)
        if fetch is None:
            self._refuse("not_fetching", f"{digest} is not being fetched: ask for its metainfo")
        if not fetch.copy.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fetch.copy), wait)
        growing = fetch.copy.result() if fetch.copy.done() else None
        if growing is None:
            self._refuse("not_started", f"{digest}: no local copy is being written")
        if growing.error is not None:
            self._refuse("failed", f"{digest}: the fetch failed: {growing.error}")
        # A copy already verified is still streamed while its fetch is under way (stored
        # next): the requester saw "fetching", and small blobs get there first.
        return growing

    def _refuse(self, reason: str, message: str) -> NoReturn:
        self.metrics.requests.labels(reason).inc()
        raise UseSwarm(message)

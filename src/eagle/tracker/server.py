"""The tracker's HTTP server: a thin aiohttp adapter between the protocol and the peer store.

Every answer to ``/announce`` and ``/scrape`` is HTTP 200 with a bencoded body,
failures included: BitTorrent clients read ``failure reason`` from the body and
treat any other status as a broken tracker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from eagle.core.errors import AnnounceInvalid
from eagle.core.peer import Peer
from eagle.tracker.announce import (
    Announce,
    client_ip,
    encode_announce_response,
    encode_failure,
    encode_scrape_response,
    parse_announce,
    parse_scrape,
)
from eagle.tracker.config import TrackerConfig
from eagle.tracker.peerstore import MemoryPeerStore, PeerStore
from eagle.utils.http import HttpServer, add_ops_routes
from eagle.utils.net import HostPort

log = logging.getLogger(__name__)

# A scrape without info_hash lists every swarm; past this many the answer would be
# an easy way to make the tracker serialise megabytes, so it is cut.
MAX_SCRAPE_ALL = 1000
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class TrackerServer:
    """A BEP 3 HTTP tracker: ``GET /announce``, ``GET /scrape``, ``/healthz``, ``/metrics``.

    ``store`` defaults to a :class:`MemoryPeerStore` bounded by ``config``; the
    server closes a store it created, and leaves a store it was given to its owner.
    Metrics go to the server's own registry (``self.registry``), so several
    trackers can run in one process.
    """

    def __init__(
        self,
        config: TrackerConfig,
        store: PeerStore | None = None,
        *,
        purge_interval: float | None = None,
    ) -> None:
        self.config = config
        self._owns_store = store is None
        self.store: PeerStore = store or MemoryPeerStore.from_config(config)
        # Sweeping once an announce interval keeps untouched swarms from holding memory
        # long; expiry itself is exact without the sweep, because reads purge lazily.
        self._purge_interval = purge_interval or float(min(config.interval, 60))
        self._purge_task: asyncio.Task[None] | None = None

        self.registry = CollectorRegistry()
        self._announces = Counter(
            "eagle_tracker_announces",
            "Announces answered, by event and result.",
            ["event", "result"],
            registry=self.registry,
        )
        self._scrapes = Counter(
            "eagle_tracker_scrapes",
            "Scrapes answered, by result.",
            ["result"],
            registry=self.registry,
        )
        self._swarms_gauge = Gauge(
            "eagle_tracker_swarms", "Swarms with peers.", registry=self.registry
        )
        self._peers_gauge = Gauge(
            "eagle_tracker_peers", "Peers across all swarms.", registry=self.registry
        )

        self.app = web.Application()
        self.app.router.add_get("/announce", self._handle_announce)
        self.app.router.add_get("/scrape", self._handle_scrape)
        add_ops_routes(self.app, self.registry)
        self._http = HttpServer(self.app, config.listen_address)

    @property
    def url(self) -> str:
        """The announce URL, ``http://HOST:PORT/announce``.

        A wildcard listen address becomes loopback: the URL is then only good on
        this host, and other hosts must be told the host's real address.
        """
        listen = self.config.listen_address
        if listen.host in _WILDCARDS:
            listen = HostPort("::1" if ":" in listen.host else "127.0.0.1", listen.port)
        return f"http://{listen}/announce"

    async def start(self) -> None:
        """Bind the listen address, serve, and start the periodic purge."""
        await self._http.start()
        self._purge_task = asyncio.create_task(self._purge_loop(), name="tracker-purge")
        log.info("tracker started url=%s interval=%d", self.url, self.config.interval)

    async def stop(self) -> None:
        """Stop serving, cancel the purge task, and close the store if we created it."""
        if self._purge_task is not None:
            self._purge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge_task
            self._purge_task = None
        await self._http.stop()
        if self._owns_store:
            await self.store.close()
        log.info("tracker stopped url=%s", self.url)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self._purge_interval)
            try:
                removed = await self.store.purge()
                await self._update_gauges()
            except Exception:
                log.exception("peer purge failed")
                continue
            if removed:
                log.info("expired peers purged count=%d", removed)

    async def _update_gauges(self) -> None:
        swarms, peers = await self.store.totals()
        self._swarms_gauge.set(swarms)
        self._peers_gauge.set(peers)

    async def _handle_announce(self, request: web.Request) -> web.Response:
        event = "invalid"
        try:
            announce = parse_announce(
                request.rel_url.raw_query_string, client_ip(request.remote), self.config
            )
            event = announce.event or "none"
            body = await self._announce(announce)
            result = "ok"
        except AnnounceInvalid as exc:
            log.info("announce rejected remote=%s reason=%s", request.remote, exc)
            body, result = encode_failure(str(exc)), "invalid"
        except Exception:
            log.exception("announce failed remote=%s", request.remote)
            body, result = encode_failure("internal error"), "error"
        self._announces.labels(event=event, result=result).inc()
        return web.Response(body=body, content_type="text/plain")

    async def _announce(self, announce: Announce) -> bytes:
        info_hash, address = announce.info_hash, announce.address
        peers: list[Peer] = []
        if announce.event == "stopped":
            await self.store.remove(info_hash, address)
        else:
            peer = Peer(announce.peer_id, address, announce.complete)
            await self.store.announce(info_hash, peer, self.config.effective_ttl)
            if announce.event == "completed":
                await self.store.record_completed(info_hash)
            peers = await self.store.sample(info_hash, announce.numwant, exclude=address)
        complete, incomplete = await self.store.counts(info_hash)
        await self._update_gauges()
        log.debug(
            "announce info_hash=%s peer=%s:%d event=%s left=%d numwant=%d returned=%d",
            info_hash.hex(),
            address.ip,
            address.port,
            announce.event,
            announce.left,
            announce.numwant,
            len(peers),
        )
        return encode_announce_response(
            self.config.interval,
            self.config.min_interval,
            complete,
            incomplete,
            peers,
            announce.compact,
        )

    async def _handle_scrape(self, request: web.Request) -> web.Response:
        try:
            hashes = parse_scrape(request.rel_url.raw_query_string)
            if not hashes:
                hashes = (await self.store.swarms())[:MAX_SCRAPE_ALL]
            files: dict[bytes, tuple[int, int, int]] = {}
            for info_hash in hashes:
                complete, incomplete = await self.store.counts(info_hash)
                files[info_hash] = (complete, incomplete, await self.store.downloaded(info_hash))
            body, result = encode_scrape_response(files), "ok"
        except AnnounceInvalid as exc:
            log.info("scrape rejected remote=%s reason=%s", request.remote, exc)
            body, result = encode_failure(str(exc)), "invalid"
        except Exception:
            log.exception("scrape failed remote=%s", request.remote)
            body, result = encode_failure("internal error"), "error"
        self._scrapes.labels(result=result).inc()
        return web.Response(body=body, content_type="text/plain")

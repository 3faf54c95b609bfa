"""The tracker server: routes of the HTTP server, joined to the protocol, store and policy.

Routes: ``GET /announce`` (BEP 3, compact BEP 23/7), ``GET /scrape`` (BEP 48),
``GET /v1/swarms`` (JSON for operators), ``GET /healthz`` and ``GET /metrics``.

Every answer to ``/announce`` and ``/scrape`` is HTTP 200 with a bencoded body,
failures included: BitTorrent clients read ``failure reason`` from the body and
treat any other status as a broken tracker. With a store that answers at once
(memory), an announce is handled without creating a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Awaitable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eagle.core.errors import AnnounceInvalid, EagleError
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
from eagle.tracker.handout import HandoutPolicy, Kind, make_policy
from eagle.tracker.http import HttpServer, Request, Response
from eagle.tracker.locations import LocationMap
from eagle.tracker.metrics import TrackerMetrics
from eagle.tracker.peerstore import Handout, PeerAnnounce, PeerStore, open_store
from eagle.tracker.swarmview import SwarmQueryInvalid, parse_swarms_query, swarms_json
from eagle.utils.net import HostPort

log = logging.getLogger(__name__)

# A scrape without info_hash lists every swarm; past this many the answer would be
# an easy way to make the tracker serialise megabytes, so it is cut.
MAX_SCRAPE_ALL = 1000
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_IP_CACHE_LIMIT = 65536
_BENCODE = b"text/plain"
_JSON = b"application/json"


class TrackerServer:
    """A BEP 3 HTTP tracker with a handout policy, over a memory or shared store.

    ``store`` defaults to the one ``config.peer_store`` names; the server closes a
    store it created and leaves a store it was given to its owner. Metrics go to
    the server's own registry (``self.registry``), so several trackers can run in
    one process.
    """

    def __init__(
        self,
        config: TrackerConfig,
        store: PeerStore | None = None,
        *,
        policy: HandoutPolicy | None = None,
        purge_interval: float | None = None,
    ) -> None:
        self.config = config
        self._owns_store = store is None
        self.store: PeerStore = store or open_store(config)
        self.policy = policy or make_policy(
            config.policy,
            bridge_peers=config.bridge_peers,
            gateways_per_idc=config.gateways_per_idc,
        )
        self.locations = LocationMap.load(config.locations) if config.locations else None
        self._trusted = [ipaddress.ip_network(c, strict=False) for c in config.trusted_proxies]
        self._real_ip_header = config.real_ip_header.encode()
        self._ttl = float(config.effective_ttl)
        # Sweeping once an announce interval keeps untouched swarms from holding memory
        # long; expiry itself is exact without the sweep, because reads purge lazily.
        self._purge_interval = purge_interval or float(min(config.interval, 60))
        self._purge_task: asyncio.Task[None] | None = None
        # remote address as the socket gives it → (canonical ip, packed ip, trusted proxy)
        self._ips: dict[str, tuple[str, bytes, bool]] = {}
        self.metrics = TrackerMetrics()
        self.registry = self.metrics.registry
        listen = config.listen_address
        self._http = HttpServer(
            self._route, listen.host, listen.port, keepalive_timeout=config.keepalive_timeout
        )

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
        log.info(
            "tracker started url=%s interval=%d store=%s policy=%s locations=%d",
            self.url,
            self.config.interval,
            type(self.store).__name__,
            self.policy.name,
            self.locations.size if self.locations else 0,
        )

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
            except Exception as exc:
                log.warning("peer purge failed error=%r", exc)
                continue
            if removed:
                log.info("expired peers purged count=%d", removed)

    async def _update_gauges(self) -> None:
        self.metrics.swarms, self.metrics.peers = await self.store.totals()
        self.metrics.connections = len(self._http.connections)

    # -- routing ------------------------------------------------------------------

    def _route(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path
        if path == b"/announce":
            return self._announce(request)
        if path == b"/scrape":
            return self._scrape(request)
        if path == b"/v1/swarms":
            return self._swarms(request)
        if path == b"/healthz":
            return self._healthz()
        if path == b"/metrics":
            return self._metrics()
        return Response(404, b"not found\n")

    def _client(self, remote: str) -> tuple[str, bytes, bool]:
        known = self._ips.get(remote)
        if known is None:
            ip = client_ip(remote)
            address = ipaddress.ip_address(ip)
            trusted = any(address in network for network in self._trusted)
            known = (ip, address.packed, trusted)
            if len(self._ips) >= _IP_CACHE_LIMIT:
                self._ips.clear()
            self._ips[remote] = known
        return known

    def _source(self, request: Request) -> tuple[str, bytes]:
        """The client's canonical IP and its packed form, through a trusted proxy if any."""
        ip, packed, trusted = self._client(request.remote)
        if trusted:
            forwarded = request.header(self._real_ip_header)
            if forwarded:
                real = forwarded.rsplit(b",", 1)[-1].strip().decode("latin-1")
                ip, packed, _ = self._client(real)
        return ip, packed

    # -- announce -----------------------------------------------------------------

    def _announce(self, request: Request) -> Response | Awaitable[Response]:
        try:
            ip, packed = self._source(request)
            announce = parse_announce(request.query, ip, self.config)
        except AnnounceInvalid as exc:
            log.info("announce rejected remote=%s reason=%s", request.remote, exc)
            self.metrics.announces["invalid", "invalid"] += 1
            return Response(200, encode_failure(str(exc)))
        location = announce.location
        if self.locations is not None:
            location = location.merged_over(self.locations.lookup(ip))
        if not announce.complete:
            kind = Kind.INCOMPLETE
        else:
            kind = Kind.SEEDER if announce.seeder else Kind.COMPLETE
        peer = PeerAnnounce(
            announce.info_hash,
            packed + announce.port.to_bytes(2, "big"),
            announce.peer_id,
            location,
            kind,
            announce.event,
            announce.numwant,
            self._ttl,
            not announce.compact,
        )
        try:
            handout = self.store.announce_nowait(peer, self.policy)
        except Exception as exc:
            return self._announce_failed(announce, exc)
        if handout is None:
            return self._announce_later(announce, peer)
        return self._answer(announce, handout)

    async def _announce_later(self, announce: Announce, peer: PeerAnnounce) -> Response:
        try:
            handout = await self.store.announce(peer, self.policy)
        except Exception as exc:
            return self._announce_failed(announce, exc)
        return self._answer(announce, handout)

    def _answer(self, announce: Announce, handout: Handout) -> Response:
        self.metrics.announces[announce.event or "none", "ok"] += 1
        self.metrics.handed_out += len(handout.addresses)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "announce info_hash=%s peer=%s:%d event=%s left=%d location=%s numwant=%d"
                " returned=%d",
                announce.info_hash.hex(),
                announce.ip,
                announce.port,
                announce.event,
                announce.left,
                announce.location.key(),
                announce.numwant,
                len(handout.addresses),
            )
        return Response(
            200,
            encode_announce_response(
                self.config.interval,
                self.config.min_interval,
                handout.complete,
                handout.incomplete,
                handout.addresses,
                handout.peer_ids,
                announce.compact,
            ),
        )

    def _announce_failed(self, announce: Announce, exc: Exception) -> Response:
        self.metrics.announces[announce.event or "none", "error"] += 1
        if isinstance(exc, EagleError):
            log.warning("announce failed info_hash=%s error=%s", announce.info_hash.hex(), exc)
            return Response(200, encode_failure(str(exc)))
        log.error(
            "announce failed info_hash=%s error=%r", announce.info_hash.hex(), exc, exc_info=exc
        )
        return Response(200, encode_failure("internal error"))

    # -- scrape, swarms, ops --------------------------------------------------------

    async def _scrape(self, request: Request) -> Response:
        try:
            hashes = parse_scrape(request.query)
            if not hashes:
                hashes = await self.store.swarms(MAX_SCRAPE_ALL)
            stats = await self.store.stats(hashes)
            files = {s.info_hash: (s.complete, s.incomplete, s.downloaded) for s in stats}
            body, result = encode_scrape_response(files), "ok"
        except AnnounceInvalid as exc:
            log.info("scrape rejected remote=%s reason=%s", request.remote, exc)
            body, result = encode_failure(str(exc)), "invalid"
        except Exception as exc:
            log.warning("scrape failed remote=%s error=%r", request.remote, exc)
            body, result = encode_failure("internal error"), "error"
        self.metrics.scrapes[result] += 1
        return Response(200, body)

    async def _swarms(self, request: Request) -> Response:
        try:
            hashes, limit = parse_swarms_query(request.query)
        except SwarmQueryInvalid as exc:
            return Response(400, json.dumps({"error": str(exc)}).encode(), _JSON)
        try:
            if not hashes:
                hashes = await self.store.swarms(limit)
            stats = await self.store.stats(hashes)
        except Exception as exc:
            log.warning("swarm listing failed error=%r", exc)
            return Response(503, json.dumps({"error": "peer store unavailable"}).encode(), _JSON)
        return Response(200, swarms_json(stats, self.policy.name), _JSON)

    async def _healthz(self) -> Response:
        try:
            await self.store.ping()
        except Exception as exc:
            log.warning("health check failed error=%r", exc)
            return Response(503, b"peer store unavailable\n")
        return Response(200, b"ok\n")

    async def _metrics(self) -> Response:
        with contextlib.suppress(Exception):  # a store outage must not hide the other metrics
            await self._update_gauges()
        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode())

"""The seeder's HTTP API: ``GET /v1/metainfo``, ``/healthz``, ``/metrics``."""

from __future__ import annotations

import json
import logging

from aiohttp import web
from prometheus_client import CollectorRegistry

from eagle.core.digest import Digest, check_repository
from eagle.core.errors import InvalidInput
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.labels import announce_labels
from eagle.p2p.localstore import LocalBlobs
from eagle.registry.auth import OriginAuth
from eagle.registry.client import OriginClient, OriginSet
from eagle.registry.errors import oci_error_middleware
from eagle.seeder.config import SeederConfig
from eagle.seeder.localcopies import LocalCopies, LocalCopyMetrics
from eagle.seeder.service import Pending, SeederMetrics, SeederService
from eagle.storage import open_storage
from eagle.utils.http import HttpServer, add_ops_routes
from eagle.utils.net import HostPort, parse_hostport

log = logging.getLogger(__name__)

TORRENT_TYPE = "application/x-bittorrent"
RETRY_AFTER_SECONDS = 1


class SeederServer:
    """A seeder: its libtorrent session, its blobs, and the HTTP API agents ask for metainfo."""

    def __init__(self, config: SeederConfig) -> None:
        self.config = config
        listen = parse_hostport(config.listen)
        self.registry = CollectorRegistry()
        self.engine = TorrentEngine(
            HostPort(config.p2p_host or listen.host, config.p2p_port),
            upload_rate=config.upload_rate,
            announce_labels=announce_labels(
                region=config.region,
                idc=config.idc,
                rack=config.rack,
                seeder=config.announce_seeder,
            ),
            role="seeder",
        )
        self.origins = OriginClient(
            OriginSet(config.origin),
            config.origin_connect_timeout,
            config.origin_read_timeout,
            retries=config.origin_retries,
            auth=OriginAuth(),
        )
        self.copies = LocalCopies(
            LocalBlobs(config.data_dir),
            self.engine,
            list(config.tracker),
            config.cache_size,
            LocalCopyMetrics(self.registry),
            config.cache_lease,
        )
        self.service = SeederService(
            self.origins,
            open_storage(config.storage_config()),
            self.copies,
            list(config.tracker),
            SeederMetrics(self.registry),
            config.failure_ttl,
        )
        app = web.Application(middlewares=[oci_error_middleware])
        app.router.add_get("/v1/metainfo", self.metainfo)
        add_ops_routes(app, self.registry)
        self.http = HttpServer(app, listen)

    @property
    def url(self) -> str:
        return f"http://{self.http.listen}"

    async def start(self) -> None:
        await self.engine.start()
        await self.service.start()
        await self.http.start()
        log.info("seeder listening url=%s p2p=%s", self.url, self.engine.listen)

    async def stop(self) -> None:
        await self.http.stop()
        await self.service.close()
        await self.engine.stop()
        await self.origins.close()

    async def metainfo(self, request: web.Request) -> web.Response:
        """``?origin=URL&repo=NAME&digest=sha256:HEX`` → 200 torrent, or 202 while fetching.

        ``&stored_only=1`` (replica warming) never fetches from the origin: 404 instead.
        """
        query = request.query
        digest = Digest.parse(query.get("digest", ""))
        repo = check_repository(query.get("repo", ""))
        if "origin" not in query:
            raise InvalidInput("missing query parameter 'origin'")
        origin = self.origins.origins.resolve(query["origin"])
        stored_only = query.get("stored_only") == "1"
        result = self.service.lookup(origin, repo, digest, stored_only)
        wait = _wait_seconds(query.get("wait"))
        if isinstance(result, Pending) and wait > 0:
            await self.service.settled(digest, wait)
            result = self.service.lookup(origin, repo, digest, stored_only)
        if isinstance(result, Pending):
            self.service.metrics.metainfo_requests.labels("pending").inc()
            return web.Response(
                status=202,
                body=json.dumps({"status": "fetching", "digest": str(digest)}).encode(),
                headers={
                    "Retry-After": str(RETRY_AFTER_SECONDS),
                    "Content-Type": "application/json",
                },
            )
        self.service.metrics.metainfo_requests.labels("ready").inc()
        return web.Response(body=result.to_bytes(), headers={"Content-Type": TORRENT_TYPE})


MAX_WAIT_SECONDS = 5.0


def _wait_seconds(raw: str | None) -> float:
    """``wait``: how long an agent lets us hold a request while the blob is fetched."""
    try:
        return min(max(float(raw or 0), 0.0), MAX_WAIT_SECONDS)
    except ValueError:
        raise InvalidInput(f"wait must be a number of seconds, got {raw!r:.30}") from None

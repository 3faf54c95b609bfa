"""The agent's HTTP face: an OCI pull-through mirror (``/v2/...``) plus ops endpoints."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CollectorRegistry

from eagle.agent.access import AccessCheck
from eagle.agent.admin import AdminApi
from eagle.agent.bandwidth import HostBandwidth, Rates
from eagle.agent.cache import BlobCache
from eagle.agent.config import AgentConfig
from eagle.agent.fetch import BlobFetcher, BlobRequest, Delivery
from eagle.agent.metrics import AgentMetrics
from eagle.agent.prefetch import ManifestPrefetch
from eagle.agent.proxy import ForwardProxy
from eagle.agent.routing import resolve_ns, target_of
from eagle.agent.serve import send_blob
from eagle.ca import CaFiles
from eagle.core.digest import Digest
from eagle.core.errors import OriginError
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.labels import announce_labels
from eagle.p2p.localstore import LocalBlobs
from eagle.registry.api import (
    API_VERSION_HEADER,
    MAX_MANIFEST_BYTES,
    PASS_RESPONSE_HEADERS,
    check_reference,
)
from eagle.registry.client import Origin, OriginClient, OriginSet, forward_headers
from eagle.registry.errors import oci_error_middleware
from eagle.seeder.client import SeederClient
from eagle.utils.http import add_ops_routes
from eagle.utils.net import HostPort, parse_hostport

log = logging.getLogger(__name__)


class AgentServer:
    """One host's agent: registry mirror, blob cache, and its share of the swarm."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        listen = parse_hostport(config.listen)
        self.registry = CollectorRegistry()
        self.metrics = AgentMetrics(self.registry)
        self.engine = TorrentEngine(
            HostPort(config.p2p_host or listen.host, config.p2p_port),
            download_rate=config.download_rate,
            upload_rate=config.upload_rate,
            announce_labels=announce_labels(region=config.region, idc=config.idc, rack=config.rack),
        )
        self.origins = OriginClient(
            OriginSet(config.origin), config.origin_connect_timeout, config.origin_read_timeout
        )
        self.seeders = SeederClient(
            config.seeder,
            config.seeder_timeout,
            config.metainfo_timeout,
            replicas=config.seeder_replicas,
            # "Still fetching" answers are the agent's sign of p2p life: they must come
            # more often than the fallback timeout, or a slow origin fetch looks dead.
            long_poll=config.fallback_timeout / 2,
        )
        self.bandwidth = HostBandwidth(self.engine, Rates(config.download_rate, config.upload_rate))
        self.metrics.watch_p2p(self.engine.session_totals, lambda: self.engine.stats()["torrents"])
        self.cache = BlobCache(
            LocalBlobs(config.data_dir),
            self.engine,
            config.cache_size,
            list(config.tracker),
            self.metrics,
        )
        self.fetcher = BlobFetcher(
            self.cache,
            self.engine,
            self.seeders,
            self.origins,
            list(config.tracker),
            self.metrics,
            self.bandwidth,
            config.stall_timeout,
            config.fallback_timeout,
            seeder_stream=config.seeder_stream,
        )
        self.prefetch = ManifestPrefetch(self.fetcher, self.metrics) if config.prefetch else None
        self.admin = AdminApi(self.fetcher, self.bandwidth, self.origins, config.admin_token)
        self.access = AccessCheck(self.origins, config.access_check_ttl, self.registry)
        self.proxy = ForwardProxy(
            enabled=config.proxy_enabled,
            rules=config.proxy_rule,
            origins=self.origins.origins,
            ca=CaFiles(config.ca_cert, config.ca_key),
            connect_timeout=config.origin_connect_timeout,
            read_timeout=config.origin_read_timeout,
            registry=self.registry,
        )
        # The proxy middleware comes first: it decides, before the mirror routes, whether a
        # request is a proxied one and which origin it belongs to.
        app = web.Application(middlewares=[self.proxy.middleware, oci_error_middleware])
        app.router.add_get("/v2/", self.base)
        app.router.add_route("*", "/v2/{name:.+}/blobs/{digest}", self.blob)
        app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", self.manifest)
        app.router.add_route("*", "/v2/{name:.+}/tags/list", self.tags)
        app.router.add_route("*", "/v2/{tail:.*}", self.unknown)
        add_ops_routes(app, self.registry)
        self.admin.add_routes(app)
        # One port for mirror requests, proxy requests and CONNECT.
        self.http = self.proxy.listener(app, listen)

    @property
    def url(self) -> str:
        return f"http://{self.http.listen}"

    async def start(self) -> None:
        await self.proxy.start()
        await self.engine.start()
        self.bandwidth.start()
        await self.fetcher.start()
        await self.http.start()
        log.info("agent listening url=%s p2p=%s", self.url, self.engine.listen)

    async def stop(self) -> None:
        await self.http.stop()
        await self.proxy.close()
        await self.admin.close()
        if self.prefetch is not None:
            await self.prefetch.close()
        await self.fetcher.close()
        await self.seeders.close()
        await self.engine.stop()
        await self.origins.close()

    # -- routes -------------------------------------------------------------------

    async def base(self, request: web.Request) -> web.Response:
        # Clients decide from this answer whether (and how) to send credentials, so it is
        # the origin's: a 401 with its challenge for a private registry.
        _only_reads(request)
        origin = resolve_ns(self.origins.origins, request.query.get("ns"))
        return await self._forward(request, origin, "/v2/")

    async def unknown(self, request: web.Request) -> web.Response:
        _only_reads(request)
        raise web.HTTPNotFound()

    def _target(self, request: web.Request) -> tuple[Origin, str]:
        # ?ns=HOST (containerd), an eagle-ns/ path prefix (podman), the proxied host, or
        # the default origin: see eagle.agent.routing.
        return target_of(request, self.origins.origins)

    async def blob(self, request: web.Request) -> web.StreamResponse:
        _only_reads(request)
        origin, repo = self._target(request)
        digest = Digest.parse(request.match_info["digest"])
        cached = self.fetcher.cached(digest)
        if request.method == "HEAD" and cached is None:
            # Existence is the origin's answer; no reason to pull the blob for a HEAD.
            return await self._forward(request, origin, f"/v2/{repo}/blobs/{digest}")
        # Cached or in the swarm, the bytes may have come in for another client: only a
        # client the origin would serve gets them (no widening of access).
        await self.access.check(origin, repo, digest, request.headers)
        blob_request = BlobRequest(origin, repo, digest, dict(request.headers))
        # Pinned from the lookup to the last byte sent: never evicted while in use.
        with self.cache.pinned(digest):
            blob = self.fetcher.cached(digest) if request.method == "HEAD" else None
            return await self._send_blob(
                request, blob_request, blob or await self.fetcher.get(blob_request)
            )

    async def _send_blob(
        self, request: web.Request, blob_request: BlobRequest, blob: Delivery
    ) -> web.StreamResponse:
        """Send the whole blob before returning (the caller's pin covers the transfer)."""
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": str(blob_request.digest),
            **API_VERSION_HEADER,
        }
        return await send_blob(request, blob_request, blob, self.fetcher, headers)

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        _only_reads(request)
        origin, repo = self._target(request)
        reference = check_reference(request.match_info["reference"])
        response = await self._forward(request, origin, f"/v2/{repo}/manifests/{reference}")
        if self.prefetch is not None and response.status == 200 and request.method == "GET":
            body = response.body
            if isinstance(body, bytes):
                content_type = response.headers.get("Content-Type", "")
                self.prefetch.observe(origin, repo, body, content_type, request.headers)
        return response

    async def tags(self, request: web.Request) -> web.StreamResponse:
        _only_reads(request)
        origin, repo = self._target(request)
        query = {k: v for k, v in request.query.items() if k in ("n", "last")}
        qs = "&".join(f"{k}={v}" for k, v in query.items() if v.isalnum())
        path = f"/v2/{repo}/tags/list" + (f"?{qs}" if qs else "")
        return await self._forward(request, origin, path)

    async def _forward(self, request: web.Request, origin: Origin, path: str) -> web.Response:
        """Relay a request to the origin with the client's own credentials, unchanged."""
        headers = forward_headers(request.headers)
        async with self.origins.request(origin, request.method, path, headers) as resp:
            body = await resp.content.read(MAX_MANIFEST_BYTES + 1)
            if len(body) > MAX_MANIFEST_BYTES:
                raise OriginError(f"origin response for {path} exceeds {MAX_MANIFEST_BYTES} bytes")
            out = {k: resp.headers[k] for k in PASS_RESPONSE_HEADERS if k in resp.headers}
            if request.method == "HEAD":
                return web.Response(status=resp.status, headers=out)
            out.pop("Content-Length", None)
            return web.Response(status=resp.status, body=body, headers=out)


def _only_reads(request: web.Request) -> None:
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])

"""The agent's HTTP face: an OCI pull-through mirror (``/v2/...``) plus ops endpoints."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from prometheus_client import CollectorRegistry

from eagle.agent.config import AgentConfig
from eagle.agent.fetch import BlobFetcher, BlobRequest, FetchedBlob
from eagle.agent.metrics import AgentMetrics
from eagle.core.digest import Digest
from eagle.core.errors import OriginError
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.localstore import LocalBlobs
from eagle.registry.api import (
    API_VERSION_HEADER,
    MAX_MANIFEST_BYTES,
    PASS_RESPONSE_HEADERS,
    check_reference,
    repo_of,
)
from eagle.registry.client import Origin, OriginClient, OriginSet, forward_headers
from eagle.registry.errors import oci_error_middleware
from eagle.seeder.client import SeederClient
from eagle.utils.http import HttpServer, add_ops_routes
from eagle.utils.net import HostPort, parse_hostport

log = logging.getLogger(__name__)

SOURCE_HEADER = "X-Eagle-Source"


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
        )
        self.origins = OriginClient(
            OriginSet(config.origin), config.origin_connect_timeout, config.origin_read_timeout
        )
        self.seeders = SeederClient(config.seeder, config.seeder_timeout, config.metainfo_timeout)
        self.fetcher = BlobFetcher(
            LocalBlobs(config.data_dir),
            self.engine,
            self.seeders,
            self.origins,
            list(config.tracker),
            self.metrics,
            config.stall_timeout,
        )
        app = web.Application(middlewares=[oci_error_middleware])
        app.router.add_get("/v2/", self.base)
        app.router.add_route("*", "/v2/{name:.+}/blobs/{digest}", self.blob)
        app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", self.manifest)
        app.router.add_route("*", "/v2/{name:.+}/tags/list", self.tags)
        app.router.add_route("*", "/v2/{tail:.*}", self.unknown)
        add_ops_routes(app, self.registry)
        self.http = HttpServer(app, listen)

    @property
    def url(self) -> str:
        return f"http://{self.http.listen}"

    async def start(self) -> None:
        await self.engine.start()
        await self.fetcher.start()
        await self.http.start()
        log.info("agent listening url=%s p2p=%s", self.url, self.engine.listen)

    async def stop(self) -> None:
        await self.http.stop()
        await self.fetcher.close()
        await self.seeders.close()
        await self.engine.stop()
        await self.origins.close()

    # -- routes -------------------------------------------------------------------

    async def base(self, _: web.Request) -> web.Response:
        return web.json_response({}, headers=API_VERSION_HEADER)

    async def unknown(self, request: web.Request) -> web.Response:
        _only_reads(request)
        raise web.HTTPNotFound()

    def _origin(self, request: web.Request) -> Origin:
        # containerd names the upstream registry of a mirror request with ?ns=HOST.
        return self.origins.origins.resolve(request.query.get("ns"))

    async def blob(self, request: web.Request) -> web.StreamResponse:
        _only_reads(request)
        repo = repo_of(request)
        digest = Digest.parse(request.match_info["digest"])
        origin = self._origin(request)
        cached = self.fetcher.cached(digest)
        if request.method == "HEAD" and cached is None:
            # Existence is the origin's answer; no reason to pull the blob for a HEAD.
            return await self._forward(request, origin, f"/v2/{repo}/blobs/{digest}")
        blob = cached or await self.fetcher.get(
            BlobRequest(origin, repo, digest, dict(request.headers))
        )
        return await self._send_blob(request, digest, blob)

    async def _send_blob(
        self, request: web.Request, digest: Digest, blob: FetchedBlob
    ) -> web.StreamResponse:
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": str(digest),
            SOURCE_HEADER: blob.source,
            **API_VERSION_HEADER,
        }
        return _BlobResponse(blob, self.metrics, headers)

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        _only_reads(request)
        repo = repo_of(request)
        reference = check_reference(request.match_info["reference"])
        return await self._forward(
            request, self._origin(request), f"/v2/{repo}/manifests/{reference}"
        )

    async def tags(self, request: web.Request) -> web.StreamResponse:
        _only_reads(request)
        repo = repo_of(request)
        query = {k: v for k, v in request.query.items() if k in ("n", "last")}
        qs = "&".join(f"{k}={v}" for k, v in query.items() if v.isalnum())
        path = f"/v2/{repo}/tags/list" + (f"?{qs}" if qs else "")
        return await self._forward(request, self._origin(request), path)

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


class _BlobResponse(web.FileResponse):
    """A verified blob file (Range and HEAD handled by aiohttp), counted once it is sent."""

    def __init__(self, blob: FetchedBlob, metrics: AgentMetrics, headers: dict[str, str]) -> None:
        super().__init__(blob.path, chunk_size=256 * 1024, headers=headers)
        self._source = blob.source
        self._metrics = metrics

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        writer = await super().prepare(request)
        if request.method == "GET":
            self._metrics.blob_requests.labels(self._source).inc()
            self._metrics.blob_bytes.labels(self._source).inc(self.content_length or 0)
        return writer


def _only_reads(request: web.Request) -> None:
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])

"""The seeder's HTTP API: ``GET /v1/metainfo``, ``GET /v1/blob``, ``/healthz``, ``/metrics``."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry

from eagle.core.digest import Digest, check_repository
from eagle.core.errors import EagleError, InvalidInput, UseSwarm
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.labels import announce_labels
from eagle.p2p.localstore import LocalBlobs
from eagle.registry.auth import OriginAuth
from eagle.registry.client import Origin, OriginClient, OriginSet
from eagle.registry.errors import oci_error_middleware
from eagle.seeder.config import SeederConfig
from eagle.seeder.localcopies import LocalCopies, LocalCopyMetrics
from eagle.seeder.service import Pending, SeederMetrics, SeederService
from eagle.seeder.streams import BlobStreams, StreamMetrics
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
            BlobStreams(config.stream_slots, StreamMetrics(self.registry)),
        )
        app = web.Application(middlewares=[oci_error_middleware])
        app.router.add_get("/v1/metainfo", self.metainfo)
        app.router.add_get("/v1/blob", self.blob)
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
        origin, repo, digest = self._blob_query(query)
        self.service.streams.note(digest, query.get("agent"))
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

    async def blob(self, request: web.Request) -> web.StreamResponse:
        """``?origin=URL&repo=NAME&digest=sha256:HEX[&wait=S]`` → the blob's bytes as this
        seeder fetches it from the origin, or 409 ``USE_SWARM``.

        Only while the blob is being fetched (``/v1/metainfo`` answered 202) and a
        stream slot is free; ``wait`` is how long to wait for the fetch to begin
        writing. The last byte leaves only after the whole blob's sha256 matched; a
        mismatch or an origin failure breaks the connection instead.
        """
        origin, repo, digest = self._blob_query(request.query)
        wait = _wait_seconds(request.query.get("wait"))
        streams = self.service.streams
        async with streams.claim(digest, wait, request.query.get("agent")) as grant:
            growing = grant.growing
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/octet-stream",
                    "Docker-Content-Digest": str(digest),
                }
            )
            if growing.size is not None:
                response.content_length = growing.size
            await response.prepare(request)
            sent = 0
            try:
                async with contextlib.aclosing(growing.read()) as chunks:
                    async for chunk in chunks:
                        if grant.revoked:
                            raise UseSwarm(f"other agents want {digest}: the swarm is the way")
                        await response.write(chunk)
                        sent += len(chunk)
                        streams.metrics.bytes.inc(len(chunk))
                await response.write_eof()
            except EagleError as exc:
                # Headers are out: only a broken connection keeps the requester from
                # taking what it got for the whole blob.
                log.warning(
                    "blob stream aborted origin=%s repo=%s digest=%s sent=%d error=%s",
                    origin.host,
                    repo,
                    digest,
                    sent,
                    exc,
                )
                if request.transport is not None:
                    request.transport.abort()
            except ConnectionError as exc:
                log.info("blob stream requester left digest=%s sent=%d error=%r", digest, sent, exc)
            else:
                log.info("blob streamed repo=%s digest=%s bytes=%d", repo, digest, sent)
        return response

    def _blob_query(self, query: Mapping[str, str]) -> tuple[Origin, str, Digest]:
        """The configured origin, repository and digest a request names (else 400/403)."""
        digest = Digest.parse(query.get("digest", ""))
        repo = check_repository(query.get("repo", ""))
        if "origin" not in query:
            raise InvalidInput("missing query parameter 'origin'")
        return self.origins.origins.resolve(query["origin"]), repo, digest


MAX_WAIT_SECONDS = 5.0


def _wait_seconds(raw: str | None) -> float:
    """``wait``: how long an agent lets us hold a request while the blob is fetched."""
    try:
        return min(max(float(raw or 0), 0.0), MAX_WAIT_SECONDS)
    except ValueError:
        raise InvalidInput(f"wait must be a number of seconds, got {raw!r:.30}") from None

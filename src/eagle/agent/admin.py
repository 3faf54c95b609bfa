"""The agent's operator API under ``/v1``: rate limits at runtime, preheating, the cache.

* ``GET  /v1/config/rate`` → ``{"download_rate": N, "upload_rate": N}`` (bytes/s, 0 = none)
* ``PUT  /v1/config/rate`` with either key, as a number or a size (``"50M"``)
* ``POST /v1/preheat`` with ``{"image": "...", "platform": "linux/amd64" | "all"}``:
  newline-delimited JSON events until the image is in the cache (see ``preheat``)
* ``GET  /v1/cache`` → capacity, bytes and blobs, least recently used first

Errors are JSON (the OCI error shape every other route uses). With ``admin-token``
set, every ``/v1`` request needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from eagle.agent.bandwidth import HostBandwidth, Rates
from eagle.agent.fetch import BlobFetcher
from eagle.agent.preheat import ImageRef, Platform, Preheater, PreheatJob
from eagle.core.errors import InvalidInput, NotAllowed
from eagle.registry.client import OriginClient
from eagle.utils.net import parse_size

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.5
MAX_BODY = 64 * 1024
NDJSON = "application/x-ndjson"


class Unauthorized(NotAllowed):
    status = 401
    code = "UNAUTHORIZED"


class AdminApi:
    """Routes for operators and the ``eagle`` command line, beside the mirror's."""

    def __init__(
        self,
        fetcher: BlobFetcher,
        bandwidth: HostBandwidth,
        origins: OriginClient,
        token: str | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.bandwidth = bandwidth
        self.preheater = Preheater(fetcher, origins)
        self._token = token
        self._publish_rates()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/config/rate", self.get_rate)
        app.router.add_put("/v1/config/rate", self.put_rate)
        app.router.add_post("/v1/preheat", self.preheat)
        app.router.add_get("/v1/cache", self.cache)

    async def close(self) -> None:
        await self.preheater.close()

    def _authorize(self, request: web.Request) -> None:
        if self._token is None:
            return
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            raise Unauthorized("this agent's /v1 API needs 'Authorization: Bearer <admin-token>'")

    # -- rate limits -------------------------------------------------------------------

    def _rates(self) -> dict[str, int]:
        rates = self.bandwidth.rates
        return {"download_rate": rates.download, "upload_rate": rates.upload}

    def _publish_rates(self) -> None:
        metric = self.fetcher.metrics.rate_limit
        metric.labels("download").set(self.bandwidth.rates.download)
        metric.labels("upload").set(self.bandwidth.rates.upload)

    async def get_rate(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return web.json_response(self._rates())

    async def put_rate(self, request: web.Request) -> web.Response:
        """Change either limit now; the other keeps its value."""
        self._authorize(request)
        body = await _json_object(request)
        unknown = sorted(set(body) - {"download_rate", "upload_rate"})
        if unknown:
            raise InvalidInput(f"unknown key {unknown[0]!r}: use download_rate and upload_rate")
        if not body:
            raise InvalidInput("give download_rate and/or upload_rate")
        current = self.bandwidth.rates
        rates = Rates(
            _rate(body, "download_rate", current.download),
            _rate(body, "upload_rate", current.upload),
        )
        self.bandwidth.set_rates(rates)
        self._publish_rates()
        return web.json_response(self._rates())

    # -- preheat -----------------------------------------------------------------------

    async def preheat(self, request: web.Request) -> web.StreamResponse:
        """Resolve, then stream progress events as NDJSON until the job ends.

        Resolution errors (bad reference, unknown image or platform) are an HTTP error;
        later ones arrive as an ``error`` event, the last line of the stream.
        """
        self._authorize(request)
        body = await _json_object(request)
        image = body.get("image")
        if not isinstance(image, str) or not image:
            raise InvalidInput("'image' must name an image, e.g. library/alpine:3.20")
        ref = ImageRef.parse(image)
        platform_text = body.get("platform")
        if platform_text is not None and not isinstance(platform_text, str):
            raise InvalidInput("'platform' must be os/arch[/variant] or 'all'")
        if platform_text == "all":
            platform = None
        elif platform_text:
            platform = Platform.parse(platform_text)
        else:
            platform = Platform.of_host()
        job = self.preheater.start(ref, platform)
        await job.resolved.wait()
        if job.error is not None and not job.blobs:
            raise job.error
        return await self._stream(request, job)

    async def _stream(self, request: web.Request, job: PreheatJob) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        sent = 0
        while True:
            finished = job.finished.is_set()
            lines = job.events[sent:]
            sent += len(lines)
            if not finished:
                lines.append(self.preheater.progress(job))
            await response.write(b"".join(json.dumps(e).encode() + b"\n" for e in lines))
            if finished:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.finished.wait(), PROGRESS_SECONDS)
        await response.write_eof()
        return response

    # -- cache -------------------------------------------------------------------------

    async def cache(self, request: web.Request) -> web.Response:
        self._authorize(request)
        cache = self.fetcher.cache
        return web.json_response(
            {
                "capacity": cache.capacity,
                "bytes": cache.total,
                "blobs": [{"digest": str(d), "size": cache.size(d)} for d in cache.digests()],
            }
        )


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise InvalidInput(f"request body over {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise InvalidInput(f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def _rate(body: dict[str, Any], key: str, current: int) -> int:
    if key not in body:
        return current
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"{key} must be bytes/s as a number or a size like 50M")
    try:
        rate = parse_size(value)
    except ValueError as exc:
        raise InvalidInput(f"{key}: {exc}") from exc
    if rate < 0:
        raise InvalidInput(f"{key} must not be negative")
    return rate

"""Sending a blob to a client: a whole file with sendfile, or one still streaming in.

Either way the response is sent completely before :func:`send_blob` returns, so a
caller's pin on the blob covers the whole transfer. Bytes are counted by source
as they go, and one log line per blob GET says where it came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from eagle.agent.fetch import BlobFetcher, BlobRequest, Delivery, FetchedBlob
from eagle.agent.metrics import AgentMetrics
from eagle.core.errors import EagleError
from eagle.p2p.growing import GrowingBlob, verified_stream

log = logging.getLogger(__name__)

SOURCE_HEADER = "X-Eagle-Source"


class BlobFileResponse(web.FileResponse):
    """A verified blob file (Range and HEAD handled by aiohttp), counted once it is sent."""

    def __init__(self, blob: FetchedBlob, metrics: AgentMetrics, headers: dict[str, str]) -> None:
        super().__init__(blob.path, chunk_size=256 * 1024, headers=headers)
        self._source = blob.source
        self._metrics = metrics

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            # Already sent by send_blob; aiohttp calls prepare again on the way out.
            return None
        writer = await super().prepare(request)
        if request.method == "GET":
            self._metrics.blob_requests.labels(self._source).inc()
            self._metrics.blob_bytes.labels(self._source).inc(self.content_length or 0)
        return writer


async def send_blob(
    request: web.Request,
    blob_request: BlobRequest,
    delivery: Delivery,
    fetcher: BlobFetcher,
    headers: dict[str, str],
) -> web.StreamResponse:
    """Send ``delivery`` completely and return the (finished) response."""
    started = time.monotonic()
    headers = dict(headers)
    if isinstance(delivery, GrowingBlob) and "Range" in request.headers:
        # Ranges are rare (resumed pulls): serve them from the verified file.
        delivery = await fetcher.get_file(blob_request)
    if isinstance(delivery, FetchedBlob):
        headers[SOURCE_HEADER] = delivery.source
        response: web.StreamResponse = BlobFileResponse(delivery, fetcher.metrics, headers)
        await response.prepare(request)
        await response.write_eof()
        sent, source = response.content_length or 0, delivery.source
        fetch_seconds, peers = delivery.seconds, delivery.peers
    else:
        headers[SOURCE_HEADER] = delivery.source
        response, sent = await _stream(request, blob_request, delivery, fetcher, headers)
        source, fetch_seconds, peers = delivery.source, 0.0, 0
    if request.method == "GET":
        # One line per blob GET: where the bytes came from and what it cost.
        log.info(
            "blob served digest=%s repo=%s bytes=%d source=%s fetch_seconds=%.2f"
            " send_seconds=%.2f peers=%d",
            blob_request.digest,
            blob_request.repo,
            sent,
            source,
            fetch_seconds,
            time.monotonic() - started,
            peers,
        )
    return response


async def _stream(
    request: web.Request,
    blob_request: BlobRequest,
    growing: GrowingBlob,
    fetcher: BlobFetcher,
    headers: dict[str, str],
) -> tuple[web.StreamResponse, int]:
    """Follow the growing file (from the origin or a seeder); if its download fails, finish
    from the rest of the blob: a seeder's stream (revoked because other agents want the
    blob, or broken) from the swarm's verified file, anything else straight from the
    origin."""
    metrics = fetcher.metrics
    response = web.StreamResponse(headers=headers)
    if growing.size is not None:
        response.content_length = growing.size
    await response.prepare(request)
    if request.method == "HEAD":
        await response.write_eof()
        return response, 0
    metrics.blob_requests.labels(growing.source).inc()
    sent = 0
    try:
        try:
            async with contextlib.aclosing(growing.read()) as chunks:
                async for chunk in chunks:
                    await response.write(chunk)
                    sent += len(chunk)
                    metrics.blob_bytes.labels(growing.source).inc(len(chunk))
        except EagleError as exc:
            source, remainder = await _remainder(blob_request, growing, fetcher, sent, exc)
            sha = await asyncio.to_thread(growing.sha256_of_prefix, sent)
            rest = verified_stream(remainder, sha, blob_request.digest)
            async with contextlib.aclosing(rest) as chunks:
                async for chunk in chunks:
                    await response.write(chunk)
                    sent += len(chunk)
                    metrics.blob_bytes.labels(source).inc(len(chunk))
        await response.write_eof()
    except EagleError as exc:
        # Headers are out: the only honest answer left is a broken connection, so the
        # client never takes a short or wrong blob for a whole one.
        log.error("blob stream aborted digest=%s sent=%d error=%s", blob_request.digest, sent, exc)
        if request.transport is not None:
            request.transport.abort()
    return response, sent


async def _remainder(
    blob_request: BlobRequest,
    growing: GrowingBlob,
    fetcher: BlobFetcher,
    offset: int,
    error: EagleError,
) -> tuple[str, AsyncIterator[bytes]]:
    """Where the bytes from ``offset`` on come from after ``growing`` failed, and them."""
    digest = blob_request.digest
    if growing.source == "seeder":
        # The swarm has the blob (the seeder is seeding it, or will): no reason to
        # cost the origin a second download.
        log.info(
            "seeder stream ended, finishing from the swarm digest=%s offset=%d error=%s",
            digest,
            offset,
            error,
        )
        try:
            blob = await fetcher.get_file(blob_request)
        except EagleError as exc:
            error = exc
        else:
            return blob.source, _file_from(blob.path, offset)
    log.warning(
        "shared download failed, streaming from origin digest=%s offset=%d error=%s",
        digest,
        offset,
        error,
    )
    return "origin", fetcher.direct(blob_request, offset)


async def _file_from(path: Path, offset: int) -> AsyncIterator[bytes]:
    """A cached blob's bytes from ``offset`` (the file is pinned by the request)."""
    with await asyncio.to_thread(path.open, "rb") as f:
        await asyncio.to_thread(f.seek, offset)
        while chunk := await asyncio.to_thread(f.read, 1 << 20):
            yield chunk

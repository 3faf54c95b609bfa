"""aiohttp plumbing every server shares: start/stop, /healthz and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from eagle.utils.net import HostPort


def add_ops_routes(app: web.Application, registry: CollectorRegistry) -> None:
    """``GET /healthz`` (200 "ok" while serving) and ``GET /metrics`` (Prometheus text)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


async def body_chunks(
    resp: aiohttp.ClientResponse, size: int, broken: Callable[[str], Exception]
) -> AsyncIterator[bytes]:
    """A response body in chunks of up to ``size``; a broken stream raises ``broken(message)``
    (each caller's own error, so it is converted to the right wire error in one place)."""
    try:
        async for chunk in resp.content.iter_chunked(size):
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise broken(f"stream broke: {exc!r}") from exc


class HttpServer:
    """One aiohttp application bound to one address, started and stopped together."""

    def __init__(self, app: web.Application, listen: HostPort) -> None:
        self.app = app
        self.listen = listen
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen.host, self.listen.port, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

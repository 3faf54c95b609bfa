"""Seeders run in the test's event loop against a real origin registry and real storage."""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from eagle.core.digest import Digest
from eagle.core.metainfo import Metainfo
from eagle.registry.client import OriginConfig
from eagle.seeder.config import SeederConfig
from eagle.seeder.server import SeederServer
from eagle.seeder.service import Pending
from eagle.testing import OriginRegistry
from eagle.utils.net import free_port

MiB = 1 << 20
REPO = "eagle/seeder-test"

SeederFactory = Callable[..., Awaitable[SeederServer]]


def upload_blob(
    registry: OriginRegistry,
    data: bytes,
    repo: str = REPO,
    ca: Path | None = None,
    authorization: str | None = None,
) -> Digest:
    """Push one blob to the registry with the distribution API (monolithic upload)."""
    digest = Digest.of(data)
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if ca is not None:
        context = ssl.create_default_context(cafile=str(ca))
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    auth = {"Authorization": registry.auth.header} if registry.auth is not None else {}
    if authorization is not None:
        auth = {"Authorization": authorization}
    start = urllib.request.Request(
        f"{registry.url}/v2/{repo}/blobs/uploads/", method="POST", headers=auth
    )
    with opener.open(start, timeout=30) as resp:
        location = resp.headers["Location"]
    url = urllib.parse.urljoin(registry.url, location)
    url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": str(digest)})
    put = urllib.request.Request(
        url,
        data=data,
        method="PUT",
        headers={**auth, "Content-Type": "application/octet-stream"},
    )
    with opener.open(put, timeout=60) as resp:
        assert resp.status == 201, resp.status
    return digest


def random_blob(size: int) -> bytes:
    return os.urandom(size)


async def resolve(server: SeederServer, registry: OriginRegistry, digest: Digest) -> Metainfo:
    """Ask the seeder for a blob until it is ready, like an agent polling ``/v1/metainfo``."""
    origin = server.origins.origins.resolve(registry.url)
    async with asyncio.timeout(30):
        while True:
            result = server.service.lookup(origin, REPO, digest)
            if not isinstance(result, Pending):
                return result
            await asyncio.sleep(0.02)


@pytest.fixture
async def seeder_factory(tmp_path: Path) -> AsyncIterator[SeederFactory]:
    """``await make(registry, **config)``: a started in-process seeder; all stop at the end."""
    started: list[SeederServer] = []

    async def make(registry: OriginRegistry, **config: Any) -> SeederServer:
        origin: dict[str, Any] = {"url": registry.url}
        if registry.auth is not None and config.pop("with_credentials", True):
            origin.update(username=registry.auth.username, password=registry.auth.password)
        origin.update(config.pop("origin_options", {}))
        values: dict[str, Any] = {
            "listen": f"127.0.0.1:{free_port()}",
            "p2p_port": free_port(),
            "origin": [OriginConfig(**origin)],
            "data_dir": tmp_path / f"seeder{len(started)}",
            "cache_lease": 0.0,
        }
        values.update(config)
        server = SeederServer(SeederConfig(**values))
        await server.start()
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        await server.stop()

"""Real parts for agent unit tests: a started libtorrent session, local blob directories."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from eagle.agent.cache import BlobCache
from eagle.agent.metrics import AgentMetrics
from eagle.core.digest import Digest
from eagle.core.metainfo import Metainfo
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.localstore import LocalBlobs
from eagle.utils.net import HostPort


@pytest.fixture
async def engine() -> AsyncIterator[TorrentEngine]:
    """A started libtorrent session on a free loopback port."""
    eng = TorrentEngine(HostPort("127.0.0.1", 0))
    await eng.start()
    yield eng
    await eng.stop()


@pytest.fixture
def metrics() -> AgentMetrics:
    return AgentMetrics(CollectorRegistry())


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobs:
    return LocalBlobs(tmp_path / "data")


@pytest.fixture
def make_blob(blobs: LocalBlobs) -> Callable[[int], Coroutine[Any, Any, Metainfo]]:
    """Commit a random blob of ``size`` bytes to ``blobs`` (file and torrent); return its meta."""

    async def make(size: int) -> Metainfo:
        data = os.urandom(size)

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        _, meta = await blobs.write_verified(Digest.of(data), size, chunks())
        return meta

    return make


@pytest.fixture
def new_cache(
    blobs: LocalBlobs, engine: TorrentEngine, metrics: AgentMetrics
) -> Callable[[int], BlobCache]:
    """``new_cache(capacity)``: a BlobCache over ``blobs`` and ``engine``."""
    return lambda capacity: BlobCache(blobs, engine, capacity, [], metrics)

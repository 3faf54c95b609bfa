"""BlobCache over real files and a real libtorrent session: LRU order, pins, restarts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

from eagle.agent.cache import BlobCache
from eagle.agent.metrics import AgentMetrics
from eagle.core.digest import Digest
from eagle.core.metainfo import Metainfo
from eagle.p2p.engine import TorrentEngine
from eagle.p2p.localstore import LocalBlobs

MakeBlob = Callable[[int], Coroutine[Any, Any, Metainfo]]
NewCache = Callable[[int], BlobCache]


def sample(metrics: AgentMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


async def test_least_recently_used_goes_first_with_its_torrent(
    blobs: LocalBlobs,
    engine: TorrentEngine,
    metrics: AgentMetrics,
    make_blob: MakeBlob,
    new_cache: NewCache,
) -> None:
    cache = new_cache(3000)
    a, b, c, d = [await make_blob(1000) for _ in range(4)]
    for meta in (a, b, c):
        assert cache.add(meta)
    assert cache.lookup(a.digest) is not None  # a hit: a is now the most recent
    cache.add(d)

    assert cache.digests() == [c.digest, a.digest, d.digest]
    assert not blobs.path(b.digest).exists()
    assert not (blobs.torrents_dir / b.digest.hex).exists()
    assert not engine.has(b.infohash)
    assert all(engine.has(m.infohash) for m in (a, c, d))
    assert sample(metrics, "eagle_agent_cache_evictions_total") == 1
    assert sample(metrics, "eagle_agent_cache_hits_total") == 1
    assert sample(metrics, "eagle_agent_cache_bytes") == 3000


async def test_a_pinned_blob_outlives_its_turn_and_goes_when_released(
    blobs: LocalBlobs,
    engine: TorrentEngine,
    metrics: AgentMetrics,
    make_blob: MakeBlob,
    new_cache: NewCache,
) -> None:
    cache = new_cache(2000)
    a, b, c = [await make_blob(1000) for _ in range(3)]
    cache.add(a)
    cache.add(b)
    with cache.pinned(a.digest):
        cache.add(c)  # a is least recently used but being served: b goes instead
        assert blobs.path(a.digest).exists()
        assert cache.digests() == [a.digest, c.digest]
    assert cache.total <= 2000


async def test_a_blob_larger_than_the_cache_is_kept_only_while_pinned(
    blobs: LocalBlobs,
    engine: TorrentEngine,
    metrics: AgentMetrics,
    make_blob: MakeBlob,
    new_cache: NewCache,
) -> None:
    cache = new_cache(500)
    big = await make_blob(1000)
    with cache.pinned(big.digest):
        assert cache.add(big)
        assert cache.lookup(big.digest) is not None
        assert blobs.path(big.digest).exists()
    assert cache.peek(big.digest) is None
    assert not blobs.path(big.digest).exists()
    assert not engine.has(big.infohash)

    other = await make_blob(1000)
    assert not cache.add(other)  # nobody reading it: not kept at all
    assert not blobs.path(other.digest).exists()


async def test_capacity_zero_means_no_limit(
    blobs: LocalBlobs,
    engine: TorrentEngine,
    metrics: AgentMetrics,
    make_blob: MakeBlob,
    new_cache: NewCache,
) -> None:
    cache = new_cache(0)
    metas = [await make_blob(100_000) for _ in range(5)]
    for meta in metas:
        cache.add(meta)
    assert len(cache.digests()) == 5
    assert cache.capacity == 0


async def test_index_keeps_complete_blobs_in_use_order_and_cleans_the_rest(
    blobs: LocalBlobs, engine: TorrentEngine, make_blob: MakeBlob, new_cache: NewCache
) -> None:
    old, new, truncated, orphan_blob, orphan_torrent = [await make_blob(2000) for _ in range(5)]
    now = time.time()
    os.utime(blobs.path(new.digest), (now, now))
    os.utime(blobs.path(old.digest), (now - 100, now - 100))
    with blobs.path(truncated.digest).open("r+b") as f:
        f.truncate(1500)
    (blobs.torrents_dir / orphan_blob.digest.hex).unlink()
    blobs.path(orphan_torrent.digest).unlink()
    junk = blobs.blobs_dir / "not-a-digest"
    junk.write_bytes(b"junk")
    stray_dir = blobs.blobs_dir / ("0" * 64)
    stray_dir.mkdir()
    partial = blobs.incoming_dir / ("1" * 64)
    partial.write_bytes(b"half")
    leftover = blobs.tmp_dir / "x.tmp"
    leftover.write_bytes(b"tmp")

    cache = new_cache(0)
    assert cache.index() == 2

    assert cache.digests() == [old.digest, new.digest]
    assert engine.has(old.infohash) and engine.has(new.infohash)
    assert sorted(p.name for p in blobs.blobs_dir.iterdir()) == sorted(
        [old.digest.hex, new.digest.hex]
    )
    assert sorted(p.name for p in blobs.torrents_dir.iterdir()) == sorted(
        [old.digest.hex, new.digest.hex]
    )
    for gone in (junk, stray_dir, partial, leftover):
        assert not gone.exists(), gone
    assert cache.peek(truncated.digest) is None
    assert cache.peek(Digest("0" * 64)) is None


async def test_index_evicts_what_no_longer_fits_oldest_first(
    blobs: LocalBlobs, make_blob: MakeBlob, new_cache: NewCache
) -> None:
    metas = [await make_blob(1000) for _ in range(3)]
    now = time.time()
    for age, meta in zip((30, 20, 10), metas, strict=True):
        os.utime(blobs.path(meta.digest), (now - age, now - age))
    cache = new_cache(2000)
    assert cache.index() == 2
    assert cache.digests() == [metas[1].digest, metas[2].digest]
    assert not blobs.path(metas[0].digest).exists()

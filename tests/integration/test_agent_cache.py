"""The agent's blob cache with real processes: LRU eviction, restarts, kill -9, stray files."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from eagle.core.bencode import bdecode
from eagle.core.digest import Digest
from eagle.core.metainfo import Metainfo
from eagle.p2p.localstore import metainfo_of_file
from eagle.testing import (
    ImageInfo,
    ManagedProcess,
    OriginRegistry,
    build_oci_layout,
    push_image,
    wait_http,
)
from eagle.testing.cluster import EagleCluster, Node, frozen

KiB, MiB = 1 << 10, 1 << 20
DEMO = "library/demo"
LRU_REPO = "library/lru"


def get(url: str, method: str = "GET", body: object = None) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def blob_url(agent: Node, repo: str, digest: str) -> str:
    return f"{agent.url}/v2/{repo}/blobs/{digest}"


def cached(agent: Node) -> list[str]:
    """The agent's cached digests, least recently used first."""
    return [b["digest"] for b in json.loads(get(f"{agent.url}/v1/cache")[2])["blobs"]]


def blob_files(agent: Node) -> list[str]:
    assert agent.data_dir is not None
    return sorted(p.name for p in (agent.data_dir / "blobs").iterdir())


def restart(node: Node) -> None:
    """Stop the node (if running) and start it again with the same command line."""
    node.process.stop()
    node.process = ManagedProcess(node.process.argv, node.process.log_path, name=node.name)
    node.process.start()
    wait_http(f"{node.url}/healthz", timeout=30, process=node.process)


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def lru_image(
    tmp_path_factory: pytest.TempPathFactory, origin_session: OriginRegistry
) -> ImageInfo:
    """Three ~800 KiB layers on the session origin as library/lru:v1."""
    image = build_oci_layout(tmp_path_factory.mktemp("lru-image"), [800 * KiB] * 3, 7, "v1")
    push_image(image.layout_dir, origin_session.host, LRU_REPO, "v1")
    return image


def test_least_recently_used_blobs_are_evicted_with_their_torrents(
    cluster_factory: Any, lru_image: ImageInfo, origin_session: OriginRegistry
) -> None:
    cluster: EagleCluster = cluster_factory(
        origins=[origin_session.url], agents=1, agent_args=["--cache-size", "2M"]
    )
    (agent,) = cluster.of("agent")
    one, two, three = (layer.digest for layer in lru_image.layers)
    sources = []
    for digest in (one, two, one, three):
        status, headers, body = get(blob_url(agent, LRU_REPO, digest))
        assert status == 200 and body == lru_image.blob_path(digest).read_bytes()
        sources.append(headers["X-Eagle-Source"])

    assert sources == ["p2p", "p2p", "cache", "p2p"]
    assert cached(agent) == [one, three]  # two was least recently used
    assert blob_files(agent) == sorted(Digest.parse(d).hex for d in (one, three))
    metrics = agent.metrics()
    assert metrics["eagle_agent_cache_evictions_total"] == 1
    assert metrics["eagle_agent_cache_hits_total"] == 1
    assert metrics["eagle_agent_cache_misses_total"] == 3
    assert metrics["eagle_agent_p2p_torrents"] == 2  # two's torrent left the session too
    status, headers, _ = get(blob_url(agent, LRU_REPO, two))
    assert (status, headers["X-Eagle-Source"]) == (200, "p2p")


def test_a_blob_larger_than_the_cache_is_served_and_not_kept(
    cluster_factory: Any, pushed_image: tuple[OriginRegistry, ImageInfo]
) -> None:
    origin, image = pushed_image
    cluster: EagleCluster = cluster_factory(
        origins=[origin.url], agents=1, agent_args=["--cache-size", "512K"]
    )
    (agent,) = cluster.of("agent")
    layer = next(layer for layer in image.layers if 512 * KiB < layer.size < 2 * MiB)
    for _ in range(2):
        status, headers, body = get(blob_url(agent, DEMO, layer.digest))
        assert status == 200 and body == image.blob_path(layer.digest).read_bytes()
        assert headers["X-Eagle-Source"] == "p2p"
    assert cached(agent) == []
    assert blob_files(agent) == []
    metrics = agent.metrics()
    assert metrics["eagle_agent_cache_evictions_total"] == 2
    assert metrics["eagle_agent_p2p_torrents"] == 0


def scrape_complete(tracker: Node, infohash: bytes) -> int:
    query = urllib.parse.urlencode({"info_hash": infohash})
    with urllib.request.urlopen(f"{tracker.url}/scrape?{query}", timeout=5) as resp:
        files = bdecode(resp.read())[b"files"]  # type: ignore[index]
    return int(files.get(infohash, {}).get(b"complete", 0))


def test_a_restarted_agent_seeds_its_cache_to_peers_while_the_seeder_is_stopped(
    cluster_factory: Any, pushed_image: tuple[OriginRegistry, ImageInfo]
) -> None:
    origin, image = pushed_image
    cluster: EagleCluster = cluster_factory(
        origins=[origin.url], agents=2, agent_args=["--fallback-timeout", "15"]
    )
    first, second = cluster.of("agent")
    (tracker,) = cluster.of("tracker")
    (seeder,) = cluster.of("seeder")
    layer = max(image.layers, key=lambda b: b.size)
    data = image.blob_path(layer.digest).read_bytes()
    assert get(blob_url(first, DEMO, layer.digest))[2] == data

    restart(first)
    assert first.data_dir is not None
    meta = Metainfo.from_bytes((first.data_dir / "torrents" / layer.hex).read_bytes())
    wait_until(lambda: scrape_complete(tracker, meta.infohash) >= 2, 15, "the re-announce")
    assert "cache indexed blobs=1" in first.process.log_path.read_text()

    # The second agent must get the metainfo from the seeder, then find no seeder in the
    # swarm: hold its announce at a frozen tracker, freeze the seeder, then let it go.
    ready = 'eagle_seeder_metainfo_requests_total{answer="ready"}'
    handed_out = seeder.metrics().get(ready, 0)
    result: dict[str, Any] = {}

    def pull() -> None:
        result["answer"] = get(blob_url(second, DEMO, layer.digest))

    puller = threading.Thread(target=pull)
    try:
        with frozen([tracker]):
            puller.start()
            wait_until(lambda: seeder.metrics().get(ready, 0) > handed_out, 15, "metainfo")
            os.killpg(seeder.process.pid, signal.SIGSTOP)
        with frozen([seeder]):
            puller.join(60)
    finally:
        puller.join(60)

    status, headers, body = result["answer"]
    assert status == 200 and body == data
    assert headers["X-Eagle-Source"] == "p2p"
    after = first.metrics()
    assert after["eagle_agent_p2p_uploaded_bytes_total"] >= layer.size
    assert after["eagle_agent_p2p_downloaded_bytes_total"] == 0  # seeded, not re-fetched
    assert origin.blob_gets(layer.digest) == 1  # the seeder's, before everything


def test_kill_9_during_a_download_leaves_no_blob_and_the_next_request_refetches(
    cluster_factory: Any, pushed_image: tuple[OriginRegistry, ImageInfo]
) -> None:
    origin, image = pushed_image
    cluster: EagleCluster = cluster_factory(
        origins=[origin.url], agents=1, agent_args=["--download-rate", "4M"]
    )
    (agent,) = cluster.of("agent")
    assert agent.data_dir is not None
    layer = max(image.layers, key=lambda b: b.size)  # 20 MiB: ~5 s at 4 MiB/s
    partial = agent.data_dir / "incoming" / layer.hex

    def doomed_pull() -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            get(blob_url(agent, DEMO, layer.digest))  # its agent dies under it

    puller = threading.Thread(target=doomed_pull)
    puller.start()
    try:
        wait_until(
            lambda: agent.metrics().get("eagle_agent_p2p_downloaded_bytes_total", 0) > 2 * MiB,
            20,
            "the download to get going",
        )
        os.killpg(agent.process.pid, signal.SIGKILL)
        agent.process.stop()
    finally:
        puller.join(30)
    assert partial.exists()  # killed mid-way: the partial file is there ...
    assert blob_files(agent) == []  # ... but nothing that looks like a whole blob

    restart(agent)
    assert not partial.exists()  # unverified work of the dead run is gone
    get(f"{agent.url}/v1/config/rate", "PUT", {"download_rate": 0})
    status, headers, body = get(blob_url(agent, DEMO, layer.digest))
    assert status == 200 and body == image.blob_path(layer.digest).read_bytes()
    assert headers["X-Eagle-Source"] == "p2p"
    assert cached(agent) == [layer.digest]


def test_stray_and_truncated_files_are_cleaned_at_start_and_never_served(
    cluster_factory: Any, pushed_image: tuple[OriginRegistry, ImageInfo]
) -> None:
    origin, image = pushed_image
    cluster: EagleCluster = cluster_factory(origins=[origin.url], agents=1)
    (agent,) = cluster.of("agent")
    assert agent.data_dir is not None
    agent.process.stop()
    layer = max(image.layers, key=lambda b: b.size)
    data = image.blob_path(layer.digest).read_bytes()
    meta = metainfo_of_file(Digest.parse(layer.digest), image.blob_path(layer.digest))
    root = agent.data_dir
    (root / "torrents" / layer.hex).write_bytes(meta.to_bytes())
    (root / "blobs" / layer.hex).write_bytes(data[: len(data) // 2])  # truncated
    (root / "blobs" / "README").write_text("not a blob")
    (root / "torrents" / ("a" * 64)).write_bytes(b"not a torrent")
    (root / "tmp" / "leftover").write_bytes(b"x")

    restart(agent)
    for name in ("blobs/README", f"torrents/{'a' * 64}", "tmp/leftover", f"blobs/{layer.hex}"):
        assert not (root / name).exists(), name
    assert cached(agent) == []
    status, headers, body = get(blob_url(agent, DEMO, layer.digest))
    assert status == 200 and body == data
    assert headers["X-Eagle-Source"] == "p2p"

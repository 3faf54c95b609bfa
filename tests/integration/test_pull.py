"""An unchanged OCI client (skopeo) pulls a real image through agents; layers move over p2p."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eagle.testing import ImageInfo, OriginRegistry, pull_image
from eagle.testing.cluster import EagleCluster

REPO, TAG = "library/demo", "latest"


def assert_identical(pulled: dict[str, Path], image: ImageInfo) -> None:
    for blob in image.blobs:
        if blob.digest == image.manifest_digest:
            continue
        data = pulled[blob.hex].read_bytes()
        assert hashlib.sha256(data).hexdigest() == blob.hex
        assert data == image.blob_path(blob.digest).read_bytes()


def test_three_agents_pull_the_image_peer_to_peer(
    pushed_image: tuple[OriginRegistry, ImageInfo], cluster_factory: Any, tmp_path: Path
) -> None:
    origin, image = pushed_image
    cluster: EagleCluster = cluster_factory(origins=[origin.url], agents=3)
    first, *rest = cluster.of("agent")

    pulled = pull_image(first.hostport, REPO, TAG, tmp_path / "pull0")
    assert_identical(pulled, image)
    with ThreadPoolExecutor(len(rest)) as pool:
        results = list(
            pool.map(
                lambda i_node: pull_image(
                    i_node[1].hostport, REPO, TAG, tmp_path / f"pull{i_node[0]}"
                ),
                enumerate(rest, start=1),
            )
        )
    for result in results:
        assert_identical(result, image)

    # The origin served each blob exactly once in total: to the seeder.
    blob_digests = [b.digest for b in image.blobs if b.digest != image.manifest_digest]
    for digest in blob_digests:
        assert origin.blob_gets(digest) == 1, digest
    blob_bytes = sum(b.size for b in image.blobs if b.digest != image.manifest_digest)
    assert origin.blob_bytes() == blob_bytes

    # Every agent got every blob from the swarm (for the client, or prefetched when it
    # got the manifest), none from the origin, and served each blob once.
    for node in cluster.of("agent"):
        assert node.fetched("p2p") == blob_bytes, node.name
        assert node.fetched("origin") == 0, node.name
        assert node.served("p2p") + node.served("cache") == blob_bytes, node.name


def test_pull_falls_back_to_origin_quickly_when_tracker_and_seeder_are_down(
    pushed_image: tuple[OriginRegistry, ImageInfo], cluster_factory: Any, tmp_path: Path
) -> None:
    origin, image = pushed_image
    cluster: EagleCluster = cluster_factory(origins=[origin.url], agents=1)
    for node in cluster.of("tracker") + cluster.of("seeder"):
        node.process.stop()
    (agent,) = cluster.of("agent")

    started = time.monotonic()
    pulled = pull_image(agent.hostport, REPO, TAG, tmp_path / "pull")
    elapsed = time.monotonic() - started

    assert_identical(pulled, image)
    blob_bytes = sum(b.size for b in image.blobs if b.digest != image.manifest_digest)
    assert agent.fetched("origin") == blob_bytes
    assert agent.fetched("p2p") == 0
    # Connection refused is immediate; the margin is for a loaded 2-core machine.
    assert elapsed < 20, f"fallback pull took {elapsed:.1f}s"


def test_two_seeders_without_shared_storage_cost_the_origin_one_download(
    pushed_image: tuple[OriginRegistry, ImageInfo], cluster_factory: Any, tmp_path: Path
) -> None:
    origin, image = pushed_image
    cluster: EagleCluster = cluster_factory(origins=[origin.url], agents=1, seeders=2)
    (agent,) = cluster.of("agent")
    pulled = pull_image(agent.hostport, REPO, TAG, tmp_path / "pull")
    assert_identical(pulled, image)
    # The second seeder in rendezvous order is warmed as a replica, from storage only;
    # its own file storage is empty, so it must decline rather than go to the origin.
    time.sleep(2)
    for blob in image.blobs:
        if blob.digest != image.manifest_digest:
            assert origin.blob_gets(blob.digest) == 1, blob.digest
    assert agent.fetched("p2p") == sum(
        b.size for b in image.blobs if b.digest != image.manifest_digest
    )

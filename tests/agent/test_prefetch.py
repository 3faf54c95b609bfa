"""Manifest-time prefetch: an image's blobs come in as soon as a client gets its manifest."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from eagle.core.digest import Digest
from eagle.registry.manifests import ACCEPT, IMAGE_TYPES, INDEX_TYPES, blobs_of, image_manifest
from eagle.testing import ImageInfo, OriginRegistry, build_multiarch_layout, pull_image, push_image
from eagle.testing.cluster import EagleCluster, Node

KiB = 1 << 10
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
OCI_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": IMAGE_TYPES[0],
    "config": {"digest": D1, "size": 10},
    "layers": [
        {"digest": D2, "size": 20},
        {"digest": D3, "size": 30, "urls": ["https://example.invalid/layer"]},
    ],
}


# -- what counts as an image manifest -------------------------------------------------------


def test_an_image_manifest_is_recognised_by_its_media_type() -> None:
    body = json.dumps(OCI_MANIFEST).encode()
    assert image_manifest(body, IMAGE_TYPES[0]) == OCI_MANIFEST
    untyped = {k: v for k, v in OCI_MANIFEST.items() if k != "mediaType"}
    docker = json.dumps(untyped).encode()
    assert image_manifest(docker, IMAGE_TYPES[1] + "; charset=utf-8") == untyped


def test_indexes_other_types_and_garbage_are_not_image_manifests() -> None:
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPES[0], "manifests": []})
    assert image_manifest(index.encode(), INDEX_TYPES[0]) is None
    assert image_manifest(index.encode(), "application/json") is None
    assert image_manifest(json.dumps(OCI_MANIFEST).encode(), "text/html") is None
    assert image_manifest(b"{not json", IMAGE_TYPES[0]) is None
    assert image_manifest(b"[1, 2]", IMAGE_TYPES[0]) is None


def test_foreign_layers_are_not_blobs_to_fetch() -> None:
    assert blobs_of(OCI_MANIFEST) == [(Digest.parse(D1), 10), (Digest.parse(D2), 20)]


# -- against a real registry and real agents ------------------------------------------------


def cached(agent: Node) -> set[str]:
    with urllib.request.urlopen(f"{agent.url}/v1/cache", timeout=10) as resp:
        return {b["digest"] for b in json.loads(resp.read())["blobs"]}


def get_manifest(agent: Node, repo: str, ref: str, method: str = "GET") -> int:
    request = urllib.request.Request(
        f"{agent.url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, method=method
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(resp.status)


def wait_cached(agent: Node, wanted: set[str], timeout: float = 30.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while not wanted <= (have := cached(agent)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return have


@pytest.fixture(scope="module")
def clusters(
    tmp_path_factory: pytest.TempPathFactory, origin_session: OriginRegistry
) -> Iterator[tuple[EagleCluster, EagleCluster]]:
    """An agent that prefetches (the default) and one started with ``--no-prefetch``."""
    base = tmp_path_factory.mktemp("prefetch")
    with (
        EagleCluster(base / "on", [origin_session.url], agents=1) as on,
        EagleCluster(
            base / "off", [origin_session.url], agents=1, agent_args=["--no-prefetch"]
        ) as off,
    ):
        yield on, off


def test_serving_a_manifest_brings_every_blob_of_the_image_into_the_cache(
    clusters: tuple[EagleCluster, EagleCluster],
    pushed_image: tuple[OriginRegistry, ImageInfo],
    tmp_path: Path,
) -> None:
    origin, image = pushed_image
    (agent,) = clusters[0].of("agent")
    blobs = {b.digest for b in image.blobs}

    assert get_manifest(agent, "library/demo", "latest") == 200
    # No client asked for a single blob, yet all of them arrive.
    assert wait_cached(agent, blobs) >= blobs
    assert agent.metrics()['eagle_agent_prefetches_total{result="ok"}'] == len(blobs)
    # Each blob crossed from the origin once (the seeder's fetch), not once per path.
    for digest in blobs:
        assert origin.blob_gets(digest) == 1, digest

    # The pull that follows is served from the cache.
    pull_image(agent.hostport, "library/demo", "latest", tmp_path / "pulled")
    metrics = agent.metrics()
    assert metrics['eagle_agent_blob_requests_total{source="cache"}'] == len(blobs)
    assert 'eagle_agent_blob_requests_total{source="p2p"}' not in metrics


def test_head_of_a_manifest_and_a_disabled_agent_prefetch_nothing(
    clusters: tuple[EagleCluster, EagleCluster],
    pushed_image: tuple[OriginRegistry, ImageInfo],
) -> None:
    origin, _ = pushed_image
    on, off = clusters[0].of("agent")[0], clusters[1].of("agent")[0]
    on_before = cached(on)

    assert get_manifest(off, "library/demo", "latest") == 200
    assert get_manifest(on, "library/demo", "latest", method="HEAD") == 200
    time.sleep(2.0)

    assert cached(off) == set()
    assert cached(on) == on_before
    assert origin.blob_gets() == 0


def test_an_index_is_not_followed_but_the_platform_manifest_is(
    clusters: tuple[EagleCluster, EagleCluster],
    origin: OriginRegistry,
    tmp_path: Path,
) -> None:
    index = build_multiarch_layout(
        tmp_path / "layout", ["linux/amd64", "linux/arm64"], [300 * KiB, 200 * KiB], 21, "v1"
    )
    push_image(index.layout_dir, origin.host, "library/prefetch-multi", "v1", all_platforms=True)
    origin.reset_counts()
    (agent,) = clusters[0].of("agent")
    before = cached(agent)
    arm = index.images["linux/arm64"]

    assert get_manifest(agent, "library/prefetch-multi", "v1") == 200
    time.sleep(2.0)
    assert cached(agent) == before
    assert origin.blob_gets() == 0

    assert get_manifest(agent, "library/prefetch-multi", arm.manifest_digest) == 200
    arm_blobs = {b.digest for b in arm.blobs}
    assert wait_cached(agent, arm_blobs) - before == arm_blobs

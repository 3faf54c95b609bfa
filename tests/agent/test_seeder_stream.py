"""A cold blob streams from the seeder to the first agent while the seeder fetches it.

Real processes (tracker, seeder, agents), the real origin registry (behind a
rate-limited relay where a test must act while the seeder's fetch runs) and skopeo.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from eagle.core.digest import Digest
from eagle.core.metainfo import Metainfo
from eagle.testing import ImageInfo, OriginRegistry, pull_image
from eagle.testing.cluster import EagleCluster, Node
from eagle.testing.slowlink import SlowLink

REPO, TAG = "library/demo", "latest"
STREAM_REPO = "eagle/stream-test"
MiB = 1 << 20


def metric(node: Node, sample: str) -> float:
    return node.metrics().get(sample, 0.0)


def served(node: Node, source: str) -> float:
    return metric(node, f'eagle_agent_blob_bytes_served_total{{source="{source}"}}')


def fetched(node: Node, source: str) -> float:
    return metric(node, f'eagle_agent_blob_bytes_fetched_total{{source="{source}"}}')


def streams(seeder: Node, answer: str) -> float:
    return metric(seeder, f'eagle_seeder_stream_requests_total{{answer="{answer}"}}')


def infohash(node: Node, digest: str) -> bytes:
    """The infohash of the torrent ``node`` keeps beside its copy of the blob."""
    assert node.data_dir is not None
    torrent = node.data_dir / "torrents" / Digest.parse(digest).hex
    return Metainfo.from_bytes(torrent.read_bytes()).infohash


def upload_blob(origin: OriginRegistry, data: bytes) -> str:
    """Push one blob to the origin (monolithic upload); returns its digest."""
    digest = str(Digest.of(data))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = urllib.request.Request(f"{origin.url}/v2/{STREAM_REPO}/blobs/uploads/", method="POST")
    with opener.open(start, timeout=30) as resp:
        location = urllib.parse.urljoin(origin.url, resp.headers["Location"])
    location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
    put = urllib.request.Request(
        location, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    with opener.open(put, timeout=60) as resp:
        assert resp.status == 201
    return digest


def get_blob(agent: Node, digest: str) -> tuple[bytes, str]:
    """The blob through the agent, and the source it says it came from."""
    url = f"{agent.url}/v2/{STREAM_REPO}/blobs/{digest}"
    with urllib.request.urlopen(url, timeout=60) as resp:
        return resp.read(), resp.headers["X-Eagle-Source"]


def wait_for(condition: object, what: str, timeout: float = 15.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_cold_pull_streams_from_the_seeder_which_fetches_each_blob_once(
    pushed_image: tuple[OriginRegistry, ImageInfo], tmp_path: Path
) -> None:
    origin, image = pushed_image
    blobs = [b for b in image.blobs if b.digest != image.manifest_digest]
    blob_bytes = sum(b.size for b in blobs)
    largest = max(blobs, key=lambda b: b.size)
    with EagleCluster(tmp_path / "cluster", [origin.url], agents=2) as cluster:
        first, second = cluster.of("agent")
        (seeder,) = cluster.of("seeder")

        pulled = pull_image(first.hostport, REPO, TAG, tmp_path / "pull0")
        for blob in blobs:
            data = pulled[blob.hex].read_bytes()
            assert hashlib.sha256(data).hexdigest() == blob.hex
            assert data == image.blob_path(blob.digest).read_bytes()
        # The seeder answered "fetching" and streamed (at least) the big layer; a tiny blob
        # may be fetched before the stream is asked for, and come from the swarm.
        assert fetched(first, "seeder") >= largest.size
        assert fetched(first, "seeder") + fetched(first, "p2p") == blob_bytes
        assert served(first, "origin") == 0
        assert metric(seeder, "eagle_seeder_stream_bytes_total") == fetched(first, "seeder")
        for blob in blobs:
            assert origin.blob_gets(blob.digest) == 1, blob.digest
            # The agent's torrent, built while streaming, is the seeder's: one swarm.
            assert infohash(first, blob.digest) == infohash(seeder, blob.digest)

        # The next agent finds the blobs seeded: the swarm, never a stream.
        pull_image(second.hostport, REPO, TAG, tmp_path / "pull1")
        assert fetched(second, "p2p") == blob_bytes
        assert metric(seeder, "eagle_seeder_stream_bytes_total") == fetched(first, "seeder")
        for blob in blobs:
            assert origin.blob_gets(blob.digest) == 1, blob.digest


def test_a_second_agent_revokes_the_stream_and_both_finish_from_one_origin_download(
    origin: OriginRegistry, tmp_path: Path
) -> None:
    data = os.urandom(4 * MiB)
    digest = upload_blob(origin, data)
    results: dict[str, tuple[bytes, str]] = {}
    with (
        SlowLink(origin.port, 4 * MiB) as link,  # the seeder's fetch lasts about a second
        EagleCluster(tmp_path / "cluster", [link.url], agents=2) as cluster,
    ):
        first, second = cluster.of("agent")
        (seeder,) = cluster.of("seeder")
        streaming = threading.Thread(
            target=lambda: results.update({"first": get_blob(first, digest)})
        )
        streaming.start()
        try:
            wait_for(lambda: streams(seeder, "granted") == 1, "the first stream")
            results["second"] = get_blob(second, digest)
        finally:
            streaming.join(60)

        # The first client's response began as a stream and ended with the swarm's bytes.
        assert results["first"] == (data, "seeder")
        assert results["second"] == (data, "p2p")
        # Two agents want the blob: the swarm serves both, the seeder sends no second copy.
        assert streams(seeder, "revoked") == 1
        # Refused: the second agent's claim (and the first's retry, if the fetch still runs).
        assert streams(seeder, "shared") >= 1
        assert metric(seeder, "eagle_seeder_stream_bytes_total") < len(data)
        assert fetched(first, "p2p") == len(data)
        assert fetched(first, "origin") == 0
    # ... and the origin one download, not a second for the first agent's remainder.
    assert origin.blob_gets(digest) == 1


def test_a_wrong_blob_from_the_origin_never_completes_at_the_client(
    origin: OriginRegistry, tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB)
    digest = upload_blob(origin, data)
    # The registry serves what it stores: flip the first byte of its copy.
    stored = origin.directory / "data/docker/registry/v2/blobs/sha256"
    stored = stored / Digest.parse(digest).hex[:2] / Digest.parse(digest).hex / "data"
    stored.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    with (
        SlowLink(origin.port, 4 * MiB) as link,
        EagleCluster(tmp_path / "cluster", [link.url], agents=1) as cluster,
    ):
        (agent,) = cluster.of("agent")
        (seeder,) = cluster.of("seeder")
        url = f"{agent.url}/v2/{STREAM_REPO}/blobs/{digest}"
        with urllib.request.urlopen(url, timeout=60) as resp:
            assert resp.headers["X-Eagle-Source"] == "seeder"
            # All but the last byte (held back until verified), then a broken connection;
            # the agent's retry straight from the origin gets the same wrong bytes.
            with pytest.raises(http.client.IncompleteRead) as short:
                resp.read()
        assert len(short.value.partial) == len(data) - 1
        assert metric(seeder, "eagle_seeder_stream_bytes_total") == len(data) - 1
        assert agent.data_dir is not None
        assert not any((agent.data_dir / "blobs").iterdir())


@pytest.mark.parametrize(
    ("agent_args", "seeder_args", "answer"),
    [(["--no-seeder-stream"], [], None), ([], ["--stream-slots", "0"], "off")],
    ids=["agent --no-seeder-stream", "seeder --stream-slots 0"],
)
def test_streams_turned_off_leave_cold_blobs_to_the_swarm(
    origin: OriginRegistry,
    tmp_path: Path,
    agent_args: list[str],
    seeder_args: list[str],
    answer: str | None,
) -> None:
    data = os.urandom(4 * MiB)
    digest = upload_blob(origin, data)
    with (
        SlowLink(origin.port, 8 * MiB) as link,
        EagleCluster(
            tmp_path / "cluster",
            [link.url],
            agents=1,
            agent_args=agent_args,
            seeder_args=seeder_args,
        ) as cluster,
    ):
        (agent,) = cluster.of("agent")
        (seeder,) = cluster.of("seeder")
        assert get_blob(agent, digest) == (data, "p2p")
        assert metric(seeder, "eagle_seeder_stream_bytes_total") == 0
        if answer is None:
            assert not any("stream_requests" in k for k in seeder.metrics())
        else:
            assert streams(seeder, answer) == 1
    assert origin.blob_gets(digest) == 1

"""Seeders without a single point of failure: two seeders sharing one S3 bucket, one of them
killed with SIGKILL in the middle of a pull; and an S3 outage sending agents to the origin."""

from __future__ import annotations

import hashlib
import os
import signal
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from eagle.core.digest import Digest
from eagle.core.metainfo import Metainfo
from eagle.seeder.client import rank_seeders
from eagle.storage.config import S3Options
from eagle.testing import ImageInfo, OriginRegistry
from eagle.testing.cluster import EagleCluster, Node
from eagle.testing.s3 import MotoS3, s3_client_env
from eagle.utils.net import free_port

REPO = "library/demo"
MiB = 1 << 20


def seeder_config(path: Path, options: S3Options) -> Path:
    """A seeder YAML file with the ``s3:`` mapping, as an operator would write it."""
    s3 = options.model_dump(mode="json", exclude_none=True)
    path.write_text(yaml.safe_dump({"s3": {k.replace("_", "-"): v for k, v in s3.items()}}))
    return path


def get_blob(agent: Node, digest: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{agent.url}/v2/{REPO}/blobs/{digest}", timeout=120) as resp:
        return bytes(resp.read())


def metainfo(seeder: Node, origin: OriginRegistry, digest: str) -> Metainfo:
    query = urllib.parse.urlencode({"origin": origin.url, "repo": REPO, "digest": digest})
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{seeder.url}/v1/metainfo?{query}", timeout=5) as resp:
            if resp.status == 200:
                return Metainfo.from_bytes(resp.read())
        assert time.monotonic() < deadline, "seeder never got the blob"
        time.sleep(0.1)


def seeding(node: Node) -> float:
    return node.metrics().get("eagle_seeder_blobs_seeding", 0.0)


def test_pull_survives_kill_9_of_the_seeder_in_use(
    pushed_image: tuple[OriginRegistry, ImageInfo],
    moto_s3: MotoS3,
    cluster_factory: Any,
    tmp_path: Path,
) -> None:
    origin, image = pushed_image
    layer = max((b for b in image.blobs if b.digest != image.manifest_digest), key=lambda b: b.size)
    config = seeder_config(tmp_path / "seeder.yml", moto_s3.options())
    cluster: EagleCluster = cluster_factory(
        origins=[origin.url],
        agents=1,
        seeders=2,
        # Capped uploads stretch the 20 MiB pull over seconds, so the kill lands mid-pull.
        seeder_args=[
            "--config",
            str(config),
            "--storage",
            f"s3://{moto_s3.bucket()}/eagle",
            "--upload-rate",
            "3M",
        ],
        env=s3_client_env(),
    )
    (agent,) = cluster.of("agent")
    by_url = {node.url: node for node in cluster.of("seeder")}
    first_url, second_url = rank_seeders(list(by_url), Digest.parse(layer.digest))
    first, second = by_url[first_url], by_url[second_url]

    with ThreadPoolExecutor(1) as pool:
        pull = pool.submit(get_blob, agent, layer.digest)
        # The agent asks the rendezvous-first seeder, then warms the second one, which
        # copies the blob from the shared bucket. Both seed one swarm.
        deadline = time.monotonic() + 30
        while seeding(first) < 1 or seeding(second) < 1:
            assert time.monotonic() < deadline, "both seeders should be seeding the layer"
            assert not pull.done(), "the pull ended before the seeders were seeding"
            time.sleep(0.1)
        time.sleep(1.0)
        assert not pull.done(), "the pull must still be running when the seeder dies"
        os.killpg(first.process.pid, signal.SIGKILL)
        data = pull.result(timeout=120)

    assert hashlib.sha256(data).hexdigest() == layer.hex
    assert len(data) == layer.size
    # The origin served the layer once, to the first seeder; the second read the bucket.
    assert origin.blob_gets(layer.digest) == 1
    assert agent.served("p2p") == layer.size
    assert agent.served("origin") == 0
    # Both built the same torrent from the same bytes: one swarm.
    assert first.data_dir is not None
    torrent_of_first = Metainfo.from_bytes((first.data_dir / "torrents" / layer.hex).read_bytes())
    assert metainfo(second, origin, layer.digest).infohash == torrent_of_first.infohash


def test_agents_fall_back_to_the_origin_when_s3_is_down(
    pushed_image: tuple[OriginRegistry, ImageInfo],
    moto_s3: MotoS3,
    cluster_factory: Any,
    tmp_path: Path,
) -> None:
    origin, image = pushed_image
    layer = min((b for b in image.blobs if b.digest != image.manifest_digest), key=lambda b: b.size)
    dead = moto_s3.options(endpoint=f"http://127.0.0.1:{free_port()}", connect_timeout=0.5)
    config = seeder_config(tmp_path / "seeder.yml", dead)
    cluster: EagleCluster = cluster_factory(
        origins=[origin.url],
        agents=1,
        seeder_args=["--config", str(config), "--storage", "s3://bucket/eagle"],
        env=s3_client_env(),
    )
    (agent,) = cluster.of("agent")

    started = time.monotonic()
    data = get_blob(agent, layer.digest)
    elapsed = time.monotonic() - started

    assert hashlib.sha256(data).hexdigest() == layer.hex
    assert agent.served("origin") == layer.size
    assert elapsed < 15, f"falling back took {elapsed:.1f}s"

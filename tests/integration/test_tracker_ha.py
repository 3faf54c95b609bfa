"""Tracker HA: two trackers sharing one Redis; one dies mid-swarm and the pulls complete.

Agents and the seeder are given both tracker URLs, each in its own announce-list tier,
so libtorrent fails over from the first to the second. The second tracker never heard
the announces made to the first, yet hands those peers out: the view is in Redis.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eagle.testing import ImageInfo, OriginRegistry, pull_image
from eagle.testing.cluster import EagleCluster, Node
from eagle.testing.redis import RedisServer

REPO, TAG = "library/demo", "latest"


def announces_ok(tracker: Node) -> float:
    return sum(
        value
        for name, value in tracker.metrics().items()
        if name.startswith("eagle_tracker_announces_total") and 'result="ok"' in name
    )


def test_pulls_complete_when_one_of_two_trackers_dies(
    pushed_image: tuple[OriginRegistry, ImageInfo],
    cluster_factory: Any,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    origin, image = pushed_image
    cluster: EagleCluster = cluster_factory(
        origins=[origin.url],
        agents=3,
        trackers=2,
        tracker_args=["--peer-store", redis_server.url, "--interval", "5"],
        agent_args=["--region", "eu", "--idc", "one"],
        seeder_args=["--region", "eu", "--idc", "one"],
    )
    first, second = cluster.of("tracker")
    agents = cluster.of("agent")
    layers = [b for b in image.blobs if b.digest != image.manifest_digest]
    layer_bytes = sum(b.size for b in layers)

    # The swarm forms through the first tracker (tier 0): seeder and agent0 announce there.
    pull_image(agents[0].hostport, REPO, TAG, tmp_path / "pull0")
    assert announces_ok(first) > 0
    assert announces_ok(second) == 0

    # It dies hard, mid-swarm: no goodbye, connections refused from now on.
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.stop()  # reaps it

    with ThreadPoolExecutor(2) as pool:
        pulls = list(
            pool.map(
                lambda i: pull_image(agents[i].hostport, REPO, TAG, tmp_path / f"pull{i}"),
                (1, 2),
            )
        )
    for pulled in pulls:
        for blob in layers:
            assert hashlib.sha256(pulled[blob.hex].read_bytes()).hexdigest() == blob.hex

    # The late agents found the seeder and agent0 through the second tracker, which
    # only knew them from Redis: every layer byte came over p2p, none from the origin.
    for agent in agents[1:]:
        assert agent.fetched("p2p") == layer_bytes, agent.name
        assert agent.fetched("origin") == 0, agent.name
    for blob in layers:
        assert origin.blob_gets(blob.digest) == 1, blob.digest
    assert announces_ok(second) > 0
    assert second.metrics()["eagle_tracker_peers_handed_out_total"] > 0

    # The surviving tracker's operator view holds the whole swarm, labels and all.
    with urllib.request.urlopen(f"{second.url}/v1/swarms", timeout=5) as response:
        swarms = json.load(response)["swarms"]
    biggest = max(swarms.values(), key=lambda s: s["complete"])
    assert biggest["complete"] >= 4  # the seeder and three agents
    assert biggest["seeders"] == 1
    assert set(biggest["idcs"]) == {"one"}

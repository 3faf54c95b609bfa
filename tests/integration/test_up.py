"""``eagle up``: tracker, seeder and agent in one process serve a real pull over p2p."""

from __future__ import annotations

import re
import sys
import urllib.request
from pathlib import Path

from eagle.testing import ImageInfo, ManagedProcess, OriginRegistry, pull_image, wait_http
from eagle.utils.net import free_port


def test_eagle_up_serves_a_pull_peer_to_peer(
    pushed_image: tuple[OriginRegistry, ImageInfo], tmp_path: Path
) -> None:
    origin, image = pushed_image
    agent, tracker, seeder = free_port(), free_port(), free_port()
    config = tmp_path / "up.yaml"
    config.write_text(
        f"origin: [{origin.url}]\n"
        f"listen: 127.0.0.1:{agent}\n"
        f"tracker-listen: 127.0.0.1:{tracker}\n"
        f"seeder-listen: 127.0.0.1:{seeder}\n"
        f"agent-p2p-port: {free_port()}\n"
        f"seeder-p2p-port: {free_port()}\n"
        f"data-dir: {tmp_path / 'data'}\n"
    )
    with ManagedProcess(
        [sys.executable, "-m", "eagle", "up", "--config", str(config)], tmp_path / "up.log"
    ) as proc:
        for port in (tracker, seeder, agent):
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, process=proc)
        pulled = pull_image(f"127.0.0.1:{agent}", "library/demo", "latest", tmp_path / "pull")
        with urllib.request.urlopen(f"http://127.0.0.1:{agent}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
    layers = [b for b in image.blobs if b.digest != image.manifest_digest]
    for blob in layers:
        assert pulled[blob.hex].read_bytes() == image.blob_path(blob.digest).read_bytes()
        assert origin.blob_gets(blob.digest) == 1
    # The agent never went to the origin itself: its blobs came from the seeder (streamed
    # while the seeder fetched them, the default for a cold blob) or from the swarm.
    fetched = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^eagle_agent_blob_bytes_fetched_total\{source="(\w+)"\} (\S+)$', metrics, re.M
        )
    }
    assert fetched.get("origin", 0.0) == 0
    assert fetched.get("seeder", 0.0) + fetched.get("p2p", 0.0) == sum(b.size for b in layers)

"""Interop with stock BitTorrent software, both ways.

* ``aria2c`` (DHT, LPD and PEX off) downloads a blob from our seeder through our tracker.
* Our seeder and agent complete a swarm through ``opentracker``, which knows nothing of
  Eagle (it ignores the location labels on our announce URLs).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eagle.core.digest import Digest
from eagle.core.metainfo import Metainfo, build_metainfo
from eagle.testing import ImageInfo, ManagedProcess, OriginRegistry, wait_http
from eagle.testing.cluster import EagleCluster, Node
from eagle.testing.image import BlobInfo
from eagle.utils.net import free_port

REPO = "library/demo"


def mid_sized_blob(image: ImageInfo) -> BlobInfo:
    """The smallest blob of several pieces (the 1 MiB layer): a real swarm, quickly."""
    blobs = [b for b in image.blobs if b.digest != image.manifest_digest and b.size >= 2**20]
    return min(blobs, key=lambda b: b.size)


def fetch_metainfo(seeder: Node, origin: OriginRegistry, digest: str) -> bytes:
    query = urllib.parse.urlencode({"origin": origin.url, "repo": REPO, "digest": digest})
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{seeder.url}/v1/metainfo?{query}", timeout=5) as resp:
            if resp.status == 200:
                return bytes(resp.read())
        assert time.monotonic() < deadline, "the seeder never got the blob"
        time.sleep(0.1)


def metric(node: Node, name: str) -> float:
    return node.metrics().get(name, 0.0)


def test_aria2c_downloads_from_our_seeder_through_our_tracker(
    pushed_image: tuple[OriginRegistry, ImageInfo], cluster_factory: Any, tmp_path: Path
) -> None:
    if shutil.which("aria2c") is None:
        pytest.fail("aria2c is missing: run scripts/install-system.sh")
    origin, image = pushed_image
    cluster: EagleCluster = cluster_factory(origins=[origin.url], agents=0)
    (tracker,) = cluster.of("tracker")
    (seeder,) = cluster.of("seeder")
    blob = mid_sized_blob(image)
    torrent = tmp_path / "blob.torrent"
    torrent.write_bytes(fetch_metainfo(seeder, origin, blob.digest))
    assert Metainfo.from_bytes(torrent.read_bytes()).trackers == (f"{tracker.url}/announce",)

    download = tmp_path / "aria2"
    argv = [
        "aria2c",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--enable-peer-exchange=false",
        "--bt-enable-lpd=false",
        "--disable-ipv6=true",
        f"--listen-port={free_port()}",
        "--seed-time=0",
        "--bt-stop-timeout=60",
        "--file-allocation=none",
        "--summary-interval=0",
        "--console-log-level=warn",
        f"--dir={download}",
        str(torrent),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data = (download / blob.hex).read_bytes()
    assert hashlib.sha256(data).hexdigest() == blob.hex
    # aria2 announced to our tracker (started, then stopped on exit) and got the seeder.
    started = 'eagle_tracker_announces_total{event="started",result="ok"}'
    stopped = 'eagle_tracker_announces_total{event="stopped",result="ok"}'
    assert metric(tracker, started) == 2  # the seeder and aria2
    assert metric(tracker, stopped) >= 1
    assert metric(tracker, "eagle_tracker_peers_handed_out_total") >= 1
    assert origin.blob_gets(blob.digest) == 1  # the seeder's fetch, nothing else


@pytest.fixture
def opentracker(tmp_path: Path) -> Iterator[Callable[[list[bytes]], str]]:
    """``start(info_hashes)`` → announce URL of a Debian ``opentracker`` on loopback.

    Debian builds it with a whitelist: only listed info hashes are tracked. It drops
    privileges to ``nobody`` after a chroot to ``-d``, so the whitelist lives in a
    world-readable directory of its own.
    """
    if shutil.which("opentracker") is None:
        pytest.fail("opentracker is missing: run scripts/install-system.sh")
    shared = Path(tempfile.mkdtemp(prefix="eagle-opentracker-"))
    shared.chmod(0o755)
    processes: list[ManagedProcess] = []

    def start(info_hashes: list[bytes]) -> str:
        whitelist = shared / "whitelist.txt"
        whitelist.write_text("".join(h.hex() + "\n" for h in info_hashes))
        whitelist.chmod(0o644)
        port = free_port()
        argv = ["opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port)]
        argv += ["-d", "/", "-w", str(whitelist)]
        process = ManagedProcess(argv, tmp_path / "opentracker.log")
        processes.append(process)
        process.start()
        wait_http(f"http://127.0.0.1:{port}/stats", timeout=10, process=process)
        return f"http://127.0.0.1:{port}/announce"

    try:
        yield start
    finally:
        for process in processes:
            process.stop()
        shutil.rmtree(shared, ignore_errors=True)


def test_our_seeder_and_agent_swarm_through_opentracker(
    pushed_image: tuple[OriginRegistry, ImageInfo],
    cluster_factory: Any,
    opentracker: Callable[[list[bytes]], str],
) -> None:
    origin, image = pushed_image
    blob = mid_sized_blob(image)
    data = image.blob_path(blob.digest).read_bytes()
    # The torrent is a pure function of the blob, so its info hash is known up front.
    url = opentracker([build_metainfo(Digest.parse(blob.digest), data).infohash])
    labels = ["--tracker", url, "--idc", "one"]
    cluster: EagleCluster = cluster_factory(
        origins=[origin.url], trackers=0, agents=1, seeder_args=labels, agent_args=labels
    )
    (agent,) = cluster.of("agent")

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{agent.url}/v2/{REPO}/blobs/{blob.digest}", timeout=60) as resp:
        assert resp.headers["X-Eagle-Source"] == "p2p"
        assert hashlib.sha256(resp.read()).hexdigest() == blob.hex
    assert origin.blob_gets(blob.digest) == 1  # the seeder's fetch only

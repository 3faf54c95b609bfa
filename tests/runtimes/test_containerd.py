"""containerd (``ctr images pull``) through the agent, set up by ``eagle configure containerd``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from eagle.testing import ImageInfo, OriginRegistry
from eagle.testing.cluster import EagleCluster
from eagle.testing.runtimes import Containerd, eagle_configure


def test_ctr_pulls_through_the_agent_mirror_with_the_ns_query(
    containerd: Containerd,
    start_cluster: Callable[..., EagleCluster],
    origins_yaml: Path,
    origin_session: OriginRegistry,
    image_layout: ImageInfo,
    tmp_path: Path,
) -> None:
    (agent,) = start_cluster().of("agent")
    root = tmp_path / "root"
    eagle_configure(
        "containerd", "--config", str(origins_yaml), "--agent", agent.hostport,
        "--write", "--root", str(root),
    )  # fmt: skip
    hosts_dir = root / "etc/containerd/certs.d"
    assert (hosts_dir / origin_session.host / "hosts.toml").is_file()

    # Not the agent's default origin: only containerd's ?ns= tells the agent which it is.
    reference = f"{origin_session.host}/library/demo:latest"
    containerd.pull(reference, hosts_dir)

    assert reference in containerd.ctr(["images", "ls", "-q"]).split()
    metrics = agent.metrics()
    p2p = metrics.get('eagle_agent_blob_bytes_fetched_total{source="p2p"}', 0.0)
    assert p2p == image_layout.total_blob_bytes
    # The origin sent each blob once, to the seeder.
    for blob in image_layout.blobs:
        assert origin_session.blob_gets(blob.digest) == 1, blob.digest

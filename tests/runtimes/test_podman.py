"""podman through the agent's registry mirror, set up by ``eagle configure podman``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from eagle.testing import ImageInfo, OriginRegistry
from eagle.testing.cluster import EagleCluster
from eagle.testing.runtimes import eagle_configure, podman_pull


def test_podman_pulls_through_the_agent_mirror(
    start_cluster: Callable[..., EagleCluster],
    origins_yaml: Path,
    origin_session: OriginRegistry,
    image_layout: ImageInfo,
    tmp_path: Path,
) -> None:
    (agent,) = start_cluster().of("agent")
    root = tmp_path / "root"
    eagle_configure(
        "podman", "--config", str(origins_yaml), "--agent", agent.hostport,
        "--write", "--root", str(root),
    )  # fmt: skip
    registries_conf = root / "etc/containers/registries.conf.d/50-eagle.conf"

    # The session origin is the agent's second origin: the mirror entry names it with
    # an eagle-ns/ path prefix.
    image_id = podman_pull(
        f"{origin_session.host}/library/demo:latest", tmp_path / "podman", registries_conf
    )

    assert image_id.endswith(image_layout.config.hex)
    metrics = agent.metrics()
    p2p = metrics.get('eagle_agent_blob_bytes_fetched_total{source="p2p"}', 0.0)
    assert p2p == image_layout.total_blob_bytes
    assert metrics.get('eagle_agent_blob_bytes_fetched_total{source="origin"}', 0.0) == 0
    # podman went to the mirror, not to the origin: the origin only served the seeder.
    for blob in image_layout.blobs:
        assert origin_session.blob_gets(blob.digest) == 1, blob.digest

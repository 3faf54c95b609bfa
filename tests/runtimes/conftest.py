"""Real runtimes (containerd, dockerd, podman) pulling through Eagle, set up by `eagle configure`.

Every runtime test gets a fresh cluster (tracker, seeder, one agent) whose agent listens
on the outer end of the test's veth pair, so a dockerd inside the namespace reaches it.
The agent and seeder know two origins: ``tls_origin`` (HTTPS, inside the namespace, the
default origin) and the session's plain origin on loopback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from eagle.testing import ImageInfo, OriginRegistry
from eagle.testing.cluster import EagleCluster
from eagle.testing.runtimes import Containerd
from eagle.testing.vethns import VethNamespace


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """One containerd for the module (ctr pulls and dockerd's runtime)."""
    with Containerd(tmp_path_factory.mktemp("containerd")) as daemon:
        yield daemon


@pytest.fixture
def origins_yaml(
    tmp_path: Path,
    tls_origin: OriginRegistry,
    origin_session: OriginRegistry,
    demo_image_pushed: ImageInfo,
) -> Path:
    """The origins of agent and seeder: ``tls_origin`` (default, with its CA) and the
    session origin, both holding ``library/demo:latest``."""
    assert tls_origin.tls is not None
    tls_origin.reset_counts()
    origin_session.start()
    origin_session.reset_counts()
    origins = [
        {"url": tls_origin.url, "ca_bundle": str(tls_origin.tls.certificate)},
        origin_session.url,
    ]
    path = tmp_path / "origins.yaml"
    path.write_text(yaml.safe_dump({"origin": origins}))
    return path


@pytest.fixture
def start_cluster(
    tmp_path: Path, veth_ns: VethNamespace, origins_yaml: Path
) -> Iterator[Callable[..., EagleCluster]]:
    """``start_cluster(agent_args=[...])``: tracker, seeder and one agent; stopped after."""
    started: list[EagleCluster] = []

    def start(agent_args: list[str] | None = None) -> EagleCluster:
        cluster = EagleCluster(
            tmp_path / f"cluster{len(started)}",
            origins=[],
            agents=1,
            # HTTP on the veth (for runtimes inside the namespace), the swarm on loopback;
            # layers over the swarm, not streamed from the seeder (its own tests cover that).
            agent_args=["--p2p-host", "127.0.0.1", "--no-seeder-stream", *(agent_args or [])],
            agent_host=veth_ns.host_address,
            config_file=origins_yaml,
        )
        started.append(cluster)
        return cluster.start()

    yield start
    for cluster in started:
        cluster.stop()

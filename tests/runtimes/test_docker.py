"""dockerd (Debian's docker.io) through the agent: registry mirror and HTTPS_PROXY.

dockerd runs inside the test's network namespace: if it ever tried Docker Hub itself,
nothing could leave. Its /etc/docker is what ``eagle configure docker --write`` made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from eagle.ca import CaFiles
from eagle.testing import ImageInfo, OriginRegistry
from eagle.testing.cluster import EagleCluster
from eagle.testing.runtimes import Containerd, Dockerd, eagle_configure, systemd_environment
from eagle.testing.vethns import VethNamespace


def test_docker_pulls_docker_hub_names_through_registry_mirror(
    containerd: Containerd,
    veth_ns: VethNamespace,
    start_cluster: Callable[..., EagleCluster],
    origins_yaml: Path,
    tls_origin: OriginRegistry,
    image_layout: ImageInfo,
    tmp_path: Path,
) -> None:
    (agent,) = start_cluster().of("agent")
    root = tmp_path / "root"
    eagle_configure(
        "docker", "--config", str(origins_yaml), "--agent", agent.hostport,
        "--write", "--root", str(root),
    )  # fmt: skip

    with Dockerd(tmp_path / "docker", containerd, root / "etc/docker", netns=veth_ns) as dockerd:
        # docker.io/library/demo: registry-mirrors send it to the agent, which serves
        # Docker Hub names from its default origin.
        dockerd.pull("library/demo:latest")
        image = dockerd.image_inspect("library/demo:latest")

    assert image["Id"] == image_layout.config_digest
    assert agent.fetched("p2p") == image_layout.total_blob_bytes
    assert agent.fetched("origin") == 0
    for blob in image_layout.blobs:
        assert tls_origin.blob_gets(blob.digest) == 1, blob.digest


def test_docker_pulls_through_https_proxy_with_the_eagle_ca(
    containerd: Containerd,
    veth_ns: VethNamespace,
    start_cluster: Callable[..., EagleCluster],
    origins_yaml: Path,
    tls_origin: OriginRegistry,
    eagle_ca: CaFiles,
    image_layout: ImageInfo,
    tmp_path: Path,
) -> None:
    cluster = start_cluster(
        agent_args=["--proxy", "--ca-cert", str(eagle_ca.cert), "--ca-key", str(eagle_ca.key)]
    )
    (agent,) = cluster.of("agent")
    root = tmp_path / "root"
    eagle_configure(
        "docker", "--mode", "proxy", "--config", str(origins_yaml), "--agent", agent.hostport,
        "--ca-cert", str(eagle_ca.cert), "--write", "--root", str(root),
    )  # fmt: skip
    env = systemd_environment(root / "etc/systemd/system/docker.service.d/eagle-proxy.conf")
    assert env["HTTPS_PROXY"] == agent.url

    with Dockerd(
        tmp_path / "docker", containerd, root / "etc/docker", netns=veth_ns, env=env
    ) as dockerd:
        # An HTTPS registry whose certificate docker never sees: the agent answers with one
        # signed by the Eagle CA, which certs.d/HOST/ca.crt makes docker trust.
        reference = f"{tls_origin.host}/library/demo:latest"
        dockerd.pull(reference)
        image = dockerd.image_inspect(reference)

    assert image["Id"] == image_layout.config_digest
    metrics = agent.metrics()
    assert metrics.get('eagle_agent_proxy_connections_total{action="intercept"}', 0) >= 1
    assert agent.fetched("p2p") == image_layout.total_blob_bytes
    assert agent.fetched("origin") == 0
    for blob in image_layout.blobs:
        assert tls_origin.blob_gets(blob.digest) == 1, blob.digest

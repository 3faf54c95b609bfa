"""Eagle clusters of real processes (tracker, seeders, agents) against the real origin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eagle.testing import OriginRegistry
from eagle.testing.cluster import EagleCluster


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[type[EagleCluster]]:
    """Start clusters with ``cluster_factory(origins=[...], agents=N)``; all stop after the test."""
    started: list[EagleCluster] = []

    class _Cluster(EagleCluster):
        def start(self) -> EagleCluster:
            started.append(self)
            return super().start()

    def make(**kwargs: object) -> EagleCluster:
        workdir = tmp_path / f"cluster{len(started)}"
        # These tests exercise the swarm path: a cold blob's first agent would otherwise
        # stream it from the seeder (tests/agent/test_seeder_stream.py covers that).
        kwargs["agent_args"] = ["--no-seeder-stream", *kwargs.get("agent_args", [])]  # type: ignore[misc]
        return _Cluster(workdir=workdir, **kwargs).start()  # type: ignore[arg-type]

    yield make  # type: ignore[misc]
    for cluster in started:
        cluster.stop()


@pytest.fixture(scope="module")
def shared_cluster(
    tmp_path_factory: pytest.TempPathFactory, origin_session: OriginRegistry
) -> Iterator[EagleCluster]:
    """One tracker, one seeder, two agents for tests that only read (bad input, ranges)."""
    with EagleCluster(
        tmp_path_factory.mktemp("shared-cluster"), [origin_session.url], agents=2
    ) as cluster:
        yield cluster

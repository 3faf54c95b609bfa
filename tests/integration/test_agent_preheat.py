"""``eagle preheat``: a multi-arch image from a real registry into several agents' caches."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from eagle.testing import (
    ImageInfo,
    IndexInfo,
    OriginRegistry,
    build_multiarch_layout,
    push_image,
)
from eagle.testing.cluster import EagleCluster, Node
from eagle.utils.net import free_port

KiB = 1 << 10
REPO = "library/multi"


def eagle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eagle", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cached(agent: Node) -> set[str]:
    with urllib.request.urlopen(f"{agent.url}/v1/cache", timeout=10) as resp:
        return {b["digest"] for b in json.loads(resp.read())["blobs"]}


def blobs_of(image: ImageInfo) -> set[str]:
    return {b.digest for b in image.blobs}


@pytest.fixture(scope="module")
def multiarch(
    tmp_path_factory: pytest.TempPathFactory, origin_session: OriginRegistry
) -> IndexInfo:
    """An OCI index (linux/amd64, linux/arm64) pushed with ``skopeo copy --all``."""
    index = build_multiarch_layout(
        tmp_path_factory.mktemp("multiarch"),
        ["linux/amd64", "linux/arm64"],
        [600 * KiB, 300 * KiB],
        seed=11,
        tag="v1",
    )
    push_image(index.layout_dir, origin_session.host, REPO, "v1", all_platforms=True)
    return index


@pytest.fixture(scope="module")
def agents(
    tmp_path_factory: pytest.TempPathFactory, origin_session: OriginRegistry
) -> Iterator[EagleCluster]:
    with EagleCluster(tmp_path_factory.mktemp("preheat"), [origin_session.url], agents=2) as c:
        yield c


def test_preheat_one_platform_of_a_multiarch_image_on_two_agents(
    agents: EagleCluster, multiarch: IndexInfo, origin: OriginRegistry
) -> None:
    arm, amd = multiarch.images["linux/arm64"], multiarch.images["linux/amd64"]
    image = f"{origin.host}/{REPO}:v1"
    urls = [a.url for a in agents.of("agent")]

    done = eagle("preheat", image, "--platform", "linux/arm64", *(f"--agent={u}" for u in urls))

    assert done.returncode == 0, done.stderr
    assert f"preheated {image} on 2 agent(s)" in done.stderr
    for agent in agents.of("agent"):
        assert cached(agent) == blobs_of(arm), agent.name
        layer = arm.layers[0]
        url = f"{agent.url}/v2/{REPO}/blobs/{layer.digest}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.headers["X-Eagle-Source"] == "cache"
            assert resp.read() == arm.blob_path(layer.digest).read_bytes()
    for digest in blobs_of(arm):
        assert origin.blob_gets(digest) == 1, digest  # the seeder's; agents used p2p
    for digest in blobs_of(amd):
        assert origin.blob_gets(digest) == 0, digest

    # 'all' brings the other platform too; what is cached already costs nothing.
    done = eagle("preheat", image, "--platform", "all", f"--agent={urls[0]}")
    assert done.returncode == 0, done.stderr
    assert cached(agents.of("agent")[0]) == blobs_of(arm) | blobs_of(amd)


def test_preheat_by_digest_of_a_single_image(
    agents: EagleCluster, multiarch: IndexInfo, origin: OriginRegistry
) -> None:
    amd = multiarch.images["linux/amd64"]
    agent = agents.of("agent")[1]
    done = eagle("preheat", f"{origin.host}/{REPO}@{amd.manifest_digest}", f"--agent={agent.url}")
    assert done.returncode == 0, done.stderr
    assert blobs_of(amd) <= cached(agent)


@pytest.mark.parametrize(
    ("reference", "platform", "message"),
    [
        (
            "{host}/library/multi:v1",
            "linux/s390x",
            "has no manifest for linux/s390x; it has: linux/amd64, linux/arm64",
        ),
        ("{host}/library/multi:nope", None, "404"),
        ("{host}/Bad/Name", None, "invalid repository name"),
        ("elsewhere.example:5000/library/multi:v1", None, "is not configured"),
        ("{host}/library/multi:v1", "linux", "os/arch"),
    ],
)
def test_preheat_failures_exit_non_zero_with_the_reason(
    agents: EagleCluster,
    multiarch: IndexInfo,
    origin: OriginRegistry,
    reference: str,
    platform: str | None,
    message: str,
) -> None:
    agent = agents.of("agent")[0]
    args = ["preheat", reference.format(host=origin.host), f"--agent={agent.url}"]
    done = eagle(*args, *(["--platform", platform] if platform else []))
    assert done.returncode == 1
    assert agent.url in done.stderr and message in " ".join(done.stderr.split())


def test_preheat_reports_each_unreachable_agent_and_still_serves_the_others(
    agents: EagleCluster, multiarch: IndexInfo, origin: OriginRegistry
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    good = agents.of("agent")[0].url
    done = eagle("preheat", f"{origin.host}/{REPO}:v1", f"--agent={dead}", f"--agent={good}")
    assert done.returncode == 1
    assert f"{dead}: cannot reach the agent" in " ".join(done.stderr.split())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'image' must name an image"),
        ({"image": "library/multi", "platform": 5}, "'platform' must be"),
        (["x"], "JSON object"),
    ],
)
def test_the_preheat_api_refuses_bad_requests(
    agents: EagleCluster, body: object, message: str
) -> None:
    agent = agents.of("agent")[0]
    request = urllib.request.Request(
        f"{agent.url}/v1/preheat", data=json.dumps(body).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 400
    assert message in json.loads(err.value.read())["errors"][0]["message"]

"""Host-level download limit shared by p2p and origin downloads, changed at runtime."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from eagle.testing import ImageInfo, OriginRegistry, build_oci_layout, push_image
from eagle.testing.cluster import EagleCluster
from eagle.utils.net import free_port

MiB = 1 << 20
REPO = "library/rate"


def request(
    url: str, method: str = "GET", body: object = None
) -> tuple[int, dict[str, str], bytes]:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def rate_image(
    tmp_path_factory: pytest.TempPathFactory, origin_session: OriginRegistry
) -> ImageInfo:
    """Two 20 MiB layers on the session origin as library/rate:v1."""
    image = build_oci_layout(tmp_path_factory.mktemp("rate-image"), [20 * MiB, 20 * MiB], 5, "v1")
    push_image(image.layout_dir, origin_session.host, REPO, "v1")
    return image


@pytest.fixture(scope="module")
def limited_agent(
    tmp_path_factory: pytest.TempPathFactory, origin_session: OriginRegistry
) -> Iterator[EagleCluster]:
    """One agent that also knows the origin as ``localhost:PORT``, a name the seeder does
    not: a blob asked for under that name cannot use p2p and comes from the origin."""
    alias = origin_session.url.replace("127.0.0.1", "localhost")
    with EagleCluster(
        tmp_path_factory.mktemp("rate-cluster"),
        [origin_session.url],
        agents=1,
        # One download over BitTorrent, one over HTTP: no seeder stream of the cold blob.
        agent_args=["--download-rate", "5M", "--origin", alias, "--no-seeder-stream"],
    ) as cluster:
        yield cluster


def test_two_concurrent_downloads_share_one_host_limit(
    limited_agent: EagleCluster, rate_image: ImageInfo, origin_session: OriginRegistry
) -> None:
    agent = limited_agent.of("agent")[0]
    assert request(f"{agent.url}/v1/config/rate", "PUT", {"download_rate": "5M"})[0] == 200
    first, second = rate_image.layers
    host = urlsplit(origin_session.url).netloc
    alias = host.replace("127.0.0.1", "localhost")
    urls = [
        f"{agent.url}/v2/{REPO}/blobs/{first.digest}?ns={host}",
        f"{agent.url}/v2/{REPO}/blobs/{second.digest}?ns={alias}",
    ]

    def timed(url: str) -> tuple[float, int, dict[str, str], bytes]:
        started = time.monotonic()
        status, headers, body = request(url)
        return time.monotonic() - started, status, headers, body

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(timed, urls))

    for (_, status, _, body), layer in zip(results, rate_image.layers, strict=True):
        assert status == 200
        assert body == rate_image.blob_path(layer.digest).read_bytes()
    assert [r[2]["X-Eagle-Source"] for r in results] == ["p2p", "origin"]
    slowest = max(r[0] for r in results)
    # 40 MiB through one 5 MiB/s budget: ~8 s. Two separate budgets would take ~4 s.
    assert 6.4 < slowest < 16, [round(r[0], 2) for r in results]
    metrics = agent.metrics()
    assert metrics['eagle_agent_blob_bytes_served_total{source="p2p"}'] == first.size
    assert metrics['eagle_agent_blob_bytes_served_total{source="origin"}'] == second.size
    assert metrics['eagle_agent_origin_fallbacks_total{reason="SeederUnavailable"}'] == 1


def eagle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eagle", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_limits_change_at_runtime_through_the_cli_and_the_api(
    limited_agent: EagleCluster,
) -> None:
    agent = limited_agent.of("agent")[0]
    url = f"{agent.url}/v1/config/rate"
    request(url, "PUT", {"download_rate": "5M", "upload_rate": 0})

    done = eagle("agent", "set-rate", "--agent", agent.url, "--download", "0", "--upload", "10M")
    assert done.returncode == 0, done.stderr
    assert "download unlimited, upload 10M/s" in done.stdout
    status, _, body = request(url)
    assert (status, json.loads(body)) == (200, {"download_rate": 0, "upload_rate": 10 * MiB})
    assert agent.metrics()['eagle_agent_rate_limit_bytes{direction="upload"}'] == 10 * MiB

    shown = eagle("agent", "set-rate", "--agent", agent.url)  # no limit given: show them
    assert shown.returncode == 0 and "upload 10M/s" in shown.stdout

    status, _, body = request(url, "PUT", {"upload_rate": 1024})
    assert (status, json.loads(body)) == (200, {"download_rate": 0, "upload_rate": 1024})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"download_rate": "fast"}, "size like 100M"),
        ({"download_rate": -1}, "must not be negative"),
        ({"download_rate": True}, "number or a size"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({}, "download_rate and/or upload_rate"),
        (b"{not json", "not JSON"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_rate_changes_are_refused_clearly(
    limited_agent: EagleCluster, body: object, message: str
) -> None:
    agent = limited_agent.of("agent")[0]
    before = request(f"{agent.url}/v1/config/rate")[2]
    status, _, answer = request(f"{agent.url}/v1/config/rate", "PUT", body)
    assert status == 400
    assert message in json.loads(answer)["errors"][0]["message"]
    assert request(f"{agent.url}/v1/config/rate")[2] == before


def test_set_rate_names_the_agent_it_cannot_reach() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = eagle("agent", "set-rate", "--agent", dead, "--download", "1M")
    assert done.returncode == 1
    assert dead in done.stdout and "cannot reach the agent" in done.stdout
    bad = eagle("agent", "set-rate", "--agent", dead, "--download", "lots")
    assert bad.returncode == 2 and "--download" in bad.stdout

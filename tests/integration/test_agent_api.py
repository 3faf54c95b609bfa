"""The agent's registry API against a real origin: headers, ranges, sharing, bad input."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from eagle.testing import ImageInfo, OriginRegistry
from eagle.testing.cluster import EagleCluster

REPO = "library/demo"


def fetch(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def oci_code(body: bytes) -> str:
    return str(json.loads(body)["errors"][0]["code"])


@pytest.fixture
def agent_url(shared_cluster: EagleCluster, demo_image_pushed: ImageInfo) -> str:
    return shared_cluster.of("agent")[0].url


def test_base_endpoint_announces_the_registry_api(agent_url: str) -> None:
    status, headers, _ = fetch(f"{agent_url}/v2/")
    assert status == 200
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_manifest_passes_through_unchanged(
    agent_url: str, origin_session: OriginRegistry, demo_image_pushed: ImageInfo
) -> None:
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    status, headers, body = fetch(f"{agent_url}/v2/{REPO}/manifests/latest", headers=accept)
    o_status, o_headers, o_body = fetch(
        f"{origin_session.url}/v2/{REPO}/manifests/latest", headers=accept
    )
    assert (status, body) == (o_status, o_body) == (200, body)
    assert headers["Docker-Content-Digest"] == o_headers["Docker-Content-Digest"]
    assert headers["Docker-Content-Digest"] == demo_image_pushed.manifest_digest
    assert headers["Content-Type"] == o_headers["Content-Type"]
    status, _, _ = fetch(f"{agent_url}/v2/{REPO}/manifests/latest", "HEAD", accept)
    assert status == 200


def test_unknown_manifest_is_the_origins_404(agent_url: str) -> None:
    status, _, body = fetch(f"{agent_url}/v2/{REPO}/manifests/nope")
    assert status == 404
    assert oci_code(body) == "MANIFEST_UNKNOWN"


def test_blob_ranges_and_source_header(
    shared_cluster: EagleCluster, demo_image_pushed: ImageInfo
) -> None:
    agent = shared_cluster.of("agent")[1]
    layer = max(demo_image_pushed.blobs, key=lambda b: b.size)
    data = demo_image_pushed.blob_path(layer.digest).read_bytes()
    url = f"{agent.url}/v2/{REPO}/blobs/{layer.digest}"

    status, headers, body = fetch(url)
    assert status == 200 and body == data
    assert headers["Docker-Content-Digest"] == layer.digest
    assert headers["X-Eagle-Source"] in ("p2p", "cache")

    status, headers, body = fetch(url, headers={"Range": "bytes=100-1123"})
    assert status == 206
    assert body == data[100:1124]
    assert headers["X-Eagle-Source"] == "cache"

    status, headers, body = fetch(url, "HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == len(data)


def test_concurrent_requests_share_one_download(
    cluster_factory: object, pushed_image: tuple[OriginRegistry, ImageInfo]
) -> None:
    origin, image = pushed_image
    cluster: EagleCluster = cluster_factory(origins=[origin.url], agents=1)  # type: ignore[operator]
    agent = cluster.of("agent")[0]
    layer = max(image.blobs, key=lambda b: b.size)
    url = f"{agent.url}/v2/{REPO}/blobs/{layer.digest}"
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: fetch(url), range(6)))
    data = image.blob_path(layer.digest).read_bytes()
    assert all(status == 200 and body == data for status, _, body in results)
    assert origin.blob_gets(layer.digest) == 1
    fetched = agent.metrics()['eagle_agent_blob_bytes_fetched_total{source="p2p"}']
    assert fetched == layer.size


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (f"/v2/{REPO}/blobs/sha256:1234", 400, "DIGEST_INVALID"),
        (f"/v2/{REPO}/blobs/md5:{'0' * 32}", 400, "DIGEST_INVALID"),
        (f"/v2/Library/Demo/blobs/sha256:{'0' * 64}", 400, "NAME_INVALID"),
        (f"/v2/a/%2e%2e/b/blobs/sha256:{'0' * 64}", 400, "NAME_INVALID"),
        (f"/v2/{REPO}/blobs/sha256:{'0' * 64}", 404, "BLOB_UNKNOWN"),
        (f"/v2/{REPO}/manifests/bad%20tag", 400, "TAG_INVALID"),
        ("/v2/nothing-here", 404, "NOT_FOUND"),
    ],
)
def test_bad_input_gets_oci_errors(agent_url: str, path: str, status: int, code: str) -> None:
    got, headers, body = fetch(agent_url + path)
    assert got == status
    assert headers["Content-Type"] == "application/json"
    assert oci_code(body) == code


def test_writes_are_refused(agent_url: str) -> None:
    status, _, body = fetch(f"{agent_url}/v2/{REPO}/blobs/uploads/", "POST")
    assert status == 405
    assert oci_code(body) == "UNSUPPORTED"

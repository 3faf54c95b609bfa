"""Private registries: credentials pass through, and no one reads a blob the origin would
refuse them, however the agent came by its copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from eagle.testing import BasicAuth, ImageInfo, OriginRegistry, pull_image, push_image
from eagle.testing.cluster import EagleCluster, Node
from eagle.testing.tokenauth import TokenServer

REPO, TAG = "library/demo", "latest"
ALICE = BasicAuth("alice", "through-the-looking-glass")
MALLORY = BasicAuth("alice", "wrong-password")


def fetch(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=60) as resp:
            return resp.status, _lower(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers.items()), exc.read()


def _lower(items: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


def metric(node: Node, name: str) -> float:
    return node.metrics().get(name, 0.0)


@pytest.fixture(scope="module")
def private_origin(
    tmp_path_factory: pytest.TempPathFactory, image_layout: ImageInfo
) -> Iterator[OriginRegistry]:
    """A docker-registry demanding htpasswd basic auth, holding the demo image."""
    with OriginRegistry(tmp_path_factory.mktemp("private-origin"), auth=ALICE) as registry:
        push_image(image_layout.layout_dir, registry.host, REPO, TAG, creds=ALICE.creds)
        yield registry


def test_authorized_pull_works_and_the_cached_blobs_are_refused_to_everyone_else(
    private_origin: OriginRegistry,
    image_layout: ImageInfo,
    cluster_factory: Any,
    tmp_path: Path,
) -> None:
    # The seeder has its own credentials; the agent has none and only passes on clients'.
    config = tmp_path / "origins.yaml"
    entry = {"url": private_origin.url, "username": ALICE.username, "password": ALICE.password}
    config.write_text(yaml.safe_dump({"origin": [entry]}))
    cluster: EagleCluster = cluster_factory(origins=[], config_file=config, agents=1)
    (agent,) = cluster.of("agent")

    pulled = pull_image(agent.hostport, REPO, TAG, tmp_path / "pull", creds=ALICE.creds)
    for blob in image_layout.blobs:
        assert hashlib.sha256(pulled[blob.hex].read_bytes()).hexdigest() == blob.hex
    assert agent.fetched("p2p") == image_layout.total_blob_bytes

    layer = max(image_layout.blobs, key=lambda b: b.size)
    data = image_layout.blob_path(layer.digest).read_bytes()
    path = f"/v2/{REPO}/blobs/{layer.digest}"
    _, origin_headers, _ = fetch(private_origin.url + path)
    challenge = origin_headers["www-authenticate"]

    # Nobody else gets the cached bytes: no credentials, wrong ones, GET or HEAD.
    for headers in ({}, {"Authorization": MALLORY.header}):
        for method in ("GET", "HEAD"):
            status, got_headers, body = fetch(agent.url + path, method, headers)
            assert status == 401, (method, headers)
            assert got_headers["www-authenticate"] == challenge
            assert data[:4096] not in body
            if method == "GET":
                assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"

    # A client with access to one repository cannot read another's blob by naming the
    # blob under its own repository: the registry says the blob is not in it.
    auth = {"Authorization": ALICE.header}
    status, _, body = fetch(f"{agent.url}/v2/library/other/blobs/{layer.digest}", headers=auth)
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"

    # The rightful client still gets them, from the cache.
    status, headers, body = fetch(agent.url + path, headers=auth)
    assert status == 200 and body == data
    assert headers["x-eagle-source"] == "cache"
    assert metric(agent, 'eagle_agent_access_checks_total{result="denied"}') >= 5


class _Recorder:
    """A plain HTTP server run by a handler function; records (method, path, headers)."""

    def __init__(self, respond: Any) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                seen.append(
                    (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                status, headers, body = respond(self.command, self.path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_credentials_never_follow_a_redirect_to_another_host(
    image_layout: ImageInfo, cluster_factory: Any
) -> None:
    layer = min(image_layout.layers, key=lambda b: b.size)
    data = image_layout.blob_path(layer.digest).read_bytes()
    # The blob store a registry redirects to (S3, a CDN): another host.
    store = _Recorder(lambda method, path: (200, {}, data))

    def registry(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/v2/") and "/blobs/" in path:
            return 307, {"Location": f"{store.url}/blob/{layer.hex}?signed=1"}, b""
        return 200, {"Content-Type": "application/json"}, b"{}"

    origin = _Recorder(registry)
    try:
        cluster: EagleCluster = cluster_factory(origins=[origin.url], agents=1)
        # No seeder, no tracker: the agent itself fetches from the origin, with the
        # client's credentials.
        for node in cluster.of("tracker") + cluster.of("seeder"):
            node.process.stop()
        (agent,) = cluster.of("agent")
        status, _, body = fetch(
            f"{agent.url}/v2/{REPO}/blobs/{layer.digest}",
            headers={"Authorization": ALICE.header},
        )
    finally:
        origin.close()
        store.close()
    assert status == 200 and body == data
    to_origin = [h for m, p, h in origin.seen if "/blobs/" in p]
    assert to_origin and all(h.get("authorization") == ALICE.header for h in to_origin)
    assert store.seen, "the agent never followed the redirect"
    assert all("authorization" not in h for _, _, h in store.seen)


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    """The registry token flow's auth server, in a loop of its own (clients here are
    subprocesses and blocking calls); it gives tokens to ALICE only."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = TokenServer(tmp_path / "tokens", ALICE)
    asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_bearer_tokens_pass_through_and_guard_the_cached_blobs(
    token_server: TokenServer, image_layout: ImageInfo, cluster_factory: Any, tmp_path: Path
) -> None:
    with OriginRegistry(
        tmp_path / "origin", auth_config=token_server.registry_auth()
    ) as private_origin:
        push_image(image_layout.layout_dir, private_origin.host, REPO, TAG, creds=ALICE.creds)
        config = tmp_path / "origins.yaml"
        entry = {"url": private_origin.url, "username": ALICE.username, "password": ALICE.password}
        config.write_text(yaml.safe_dump({"origin": [entry]}))
        cluster: EagleCluster = cluster_factory(origins=[], config_file=config, agents=1)
        (agent,) = cluster.of("agent")
        asked = token_server.requests

        # skopeo meets the origin's Bearer challenge at the agent's /v2/, gets its token from
        # the token server itself, and sends it through the agent.
        pulled = pull_image(agent.hostport, REPO, TAG, tmp_path / "pull", creds=ALICE.creds)
        for blob in image_layout.blobs:
            assert hashlib.sha256(pulled[blob.hex].read_bytes()).hexdigest() == blob.hex
        assert token_server.requests > asked
        assert agent.fetched("p2p") == image_layout.total_blob_bytes

        layer = max(image_layout.blobs, key=lambda b: b.size)
        url = f"{agent.url}/v2/{REPO}/blobs/{layer.digest}"
        status, headers, _ = fetch(url)
        assert status == 401
        assert headers["www-authenticate"].startswith(f'Bearer realm="{token_server.realm}"')
        # A valid token, but for another repository, does not open this one.
        other = token_server.token(ALICE.username, "repository:library/other:pull")
        status, _, _ = fetch(url, headers={"Authorization": f"Bearer {other}"})
        assert status == 401
        right = token_server.token(ALICE.username, f"repository:{REPO}:pull")
        status, headers, body = fetch(url, headers={"Authorization": f"Bearer {right}"})
        assert status == 200 and headers["x-eagle-source"] == "cache"
        assert body == image_layout.blob_path(layer.digest).read_bytes()

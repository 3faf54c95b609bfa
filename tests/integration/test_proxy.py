"""Proxy mode: HTTPS_PROXY clients, TLS interception with the Eagle CA, untouched tunnels,
bad input, and credentials that stay with the host they were sent to.

The origin is an HTTPS docker-registry at a non-loopback address inside a network
namespace of the test (``tls_origin``): Go clients never proxy loopback names.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from eagle.ca import CaFiles
from eagle.testing import (
    ImageInfo,
    ManagedProcess,
    OriginRegistry,
    build_oci_layout,
    pull_image,
    skopeo,
    wait_http,
)
from eagle.testing.cluster import EagleCluster, Node
from eagle.testing.vethns import VethNamespace
from eagle.utils.net import free_port

REPO, TAG = "library/demo", "latest"


# -- helpers ------------------------------------------------------------------------------------


def metric(node: Node, name: str) -> float:
    return node.metrics().get(name, 0.0)


def scrape(address: tuple[str, int]) -> dict[str, float]:
    """The Prometheus samples of an agent that is not part of a cluster."""
    response, _ = exchange(
        address, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    samples = {}
    for line in response.partition(b"\r\n\r\n")[2].decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def proxy_args(ca: CaFiles, *extra: str) -> list[str]:
    return ["--proxy", "--ca-cert", str(ca.cert), "--ca-key", str(ca.key), *extra]


def origin_config(path: Path, origin: OriginRegistry) -> Path:
    """YAML with the origin and the CA that signed its certificate (seeder and agent read it)."""
    assert origin.tls is not None
    entry = {"url": origin.url, "ca_bundle": str(origin.tls.certificate)}
    path.write_text(yaml.safe_dump({"origin": [entry]}))
    return path


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def exchange(address: tuple[str, int], request: bytes) -> tuple[bytes, bool]:
    """Send ``request``; return everything the server sent and whether it then closed."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            return data, False
        return data, True


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def tls_through_proxy(
    proxy: tuple[str, int], target: str, cafile: Path
) -> tuple[ssl.SSLSocket, bytes]:
    """CONNECT ``target`` through ``proxy`` and start TLS trusting only ``cafile``."""
    sock = socket.create_connection(proxy, timeout=10)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    context = ssl.create_default_context(cafile=str(cafile))
    tls = context.wrap_socket(sock, server_hostname=target.rpartition(":")[0])
    return tls, head


def http_over(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class RecordingServer:
    """A plain HTTP server that records each request's headers and answers 200 "recorded"."""

    def __init__(self, host: str) -> None:
        self.requests: list[dict[str, str]] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorded.append({k.lower(): v for k, v in self.headers.items()})
                body = b"recorded"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.address = f"{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lone_agent(
    tmp_path_factory: pytest.TempPathFactory, tls_origin: OriginRegistry, eagle_ca: CaFiles
) -> Iterator[tuple[str, int]]:
    """One agent in proxy mode with no tracker or seeder, for requests that never reach p2p."""
    tmp = tmp_path_factory.mktemp("lone-agent")
    port = free_port()
    argv = [
        sys.executable, "-m", "eagle", "agent", "--listen", f"127.0.0.1:{port}",
        "--config", str(origin_config(tmp / "origins.yaml", tls_origin)),
        "--data-dir", str(tmp / "data"), "--p2p-port", str(free_port()), *proxy_args(eagle_ca),
    ]  # fmt: skip
    with ManagedProcess(argv, tmp / "agent.log", name="lone-agent") as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, process=proc)
        yield "127.0.0.1", port


# -- pulls --------------------------------------------------------------------------------------


def test_skopeo_pulls_through_https_proxy_peer_to_peer(
    tls_origin: OriginRegistry,
    image_layout: ImageInfo,
    eagle_ca: CaFiles,
    cluster_factory: Any,
    tmp_path: Path,
) -> None:
    tls_origin.reset_counts()
    cluster: EagleCluster = cluster_factory(
        origins=[],
        config_file=origin_config(tmp_path / "origins.yaml", tls_origin),
        agents=1,
        agent_args=proxy_args(eagle_ca),
    )
    (agent,) = cluster.of("agent")
    # Trust set up exactly as `eagle configure podman --mode proxy` writes it.
    subprocess.run(
        [
            sys.executable, "-m", "eagle", "configure", "podman", "--mode", "proxy",
            "--origin", tls_origin.url, "--agent", agent.hostport,
            "--ca-cert", str(eagle_ca.cert), "--write", "--root", str(tmp_path / "root"),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    cert_dir = tmp_path / "root/etc/containers/certs.d" / tls_origin.host

    dest = tmp_path / "pulled"
    skopeo(
        [
            "copy", "--src-cert-dir", str(cert_dir),
            f"docker://{tls_origin.host}/{REPO}:{TAG}", f"dir:{dest}",
        ],
        env={"HTTPS_PROXY": agent.url},
    )  # fmt: skip

    for blob in image_layout.blobs:
        data = (dest / blob.hex).read_bytes()
        assert hashlib.sha256(data).hexdigest() == blob.hex
    assert metric(agent, 'eagle_agent_proxy_connections_total{action="intercept"}') >= 1
    assert metric(agent, 'eagle_agent_proxy_requests_total{route="p2p"}') == len(image_layout.blobs)
    assert agent.fetched("p2p") == image_layout.total_blob_bytes
    # The origin sent each blob once, to the seeder; the agent's bytes came from the swarm.
    for blob in image_layout.blobs:
        assert tls_origin.blob_gets(blob.digest) == 1, blob.digest


def test_hosts_without_a_rule_are_tunnelled_untouched(
    tls_origin: OriginRegistry, eagle_ca: CaFiles, tmp_path: Path
) -> None:
    port = free_port()
    argv = [
        sys.executable, "-m", "eagle", "agent", "--listen", f"127.0.0.1:{port}",
        "--origin", "http://127.0.0.1:1", "--data-dir", str(tmp_path / "data"),
        "--p2p-port", str(free_port()),
        *proxy_args(eagle_ca, "--proxy-rule", r"registry\.example\.invalid"),
    ]  # fmt: skip
    with ManagedProcess(argv, tmp_path / "agent.log", name="agent") as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, process=proc)
        assert tls_origin.tls is not None
        # Only the origin's own CA is trusted: the handshake succeeds only if the agent
        # passed the origin's TLS through unchanged.
        tls, _ = tls_through_proxy(("127.0.0.1", port), tls_origin.host, tls_origin.tls.certificate)
        with tls:
            seen = tls.getpeercert(binary_form=True)
            request = f"GET /v2/ HTTP/1.1\r\nHost: {tls_origin.host}\r\nConnection: close\r\n\r\n"
            answer = http_over(tls, request.encode())
        pem = tls_origin.tls.certificate.read_text()
        assert seen == ssl.PEM_cert_to_DER_cert(pem)
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"registry/2.0" in answer.lower()
        node = Node("agent", "agent", f"http://127.0.0.1:{port}", proc)
        assert metric(node, 'eagle_agent_proxy_connections_total{action="tunnel"}') == 1
        assert metric(node, 'eagle_agent_proxy_connections_total{action="intercept"}') == 0


# -- bad input ----------------------------------------------------------------------------------

BIG = b"a" * 40_000


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"CONNECT nohost HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT example.com:0 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT example.com:99999 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT [::1:443 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT bad_host!:443 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT a b HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n", 403),
        (b"CONNECT example.com:443 HTTP/1.1\r\nX-Big: " + BIG + b"\r\n\r\n", 431),
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + BIG + b"\r\n\r\n", 400),
        (b"GET ftp://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n", 400),
        (b"GET https://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n", 400),
        (b"GET http://u:p@example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n", 400),
        (b"GET http://127.0.0.1:9/x HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n", 403),
    ],
    ids=[
        "connect-no-port", "connect-port-0", "connect-port-too-big", "connect-broken-ipv6",
        "connect-bad-host", "connect-bad-line", "connect-loopback", "connect-huge-head",
        "huge-head", "ftp-scheme", "https-absolute-form", "userinfo", "absolute-loopback",
    ],
)  # fmt: skip
def test_bad_proxy_input_gets_4xx_and_a_closed_connection(
    lone_agent: tuple[str, int], request_bytes: bytes, status: int
) -> None:
    response, closed = exchange(lone_agent, request_bytes)
    assert status_of(response) == status, response[:300]
    assert closed
    # ... and the agent keeps serving.
    ok, _ = exchange(lone_agent, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(ok) == 200


def test_connect_to_an_agent_without_proxy_mode_is_refused(tmp_path: Path) -> None:
    port = free_port()
    argv = [
        sys.executable, "-m", "eagle", "agent", "--listen", f"127.0.0.1:{port}",
        "--origin", "http://127.0.0.1:1", "--data-dir", str(tmp_path / "data"),
        "--p2p-port", str(free_port()),
    ]  # fmt: skip
    with ManagedProcess(argv, tmp_path / "agent.log", name="agent") as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, process=proc)
        response, closed = exchange(
            ("127.0.0.1", port), b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"
        )
        assert status_of(response) == 405 and b"--proxy" in response and closed
        response, closed = exchange(
            ("127.0.0.1", port), b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        assert status_of(response) == 400 and b"--proxy" in response and closed


# -- credentials --------------------------------------------------------------------------------


def test_intercepted_requests_go_to_the_connect_target_whatever_their_host_header(
    lone_agent: tuple[str, int],
    tls_origin: OriginRegistry,
    eagle_ca: CaFiles,
    veth_ns: VethNamespace,
) -> None:
    with RecordingServer(veth_ns.host_address) as other:
        tls, _ = tls_through_proxy(lone_agent, tls_origin.host, eagle_ca.cert)
        with tls:
            answer = http_over(
                tls,
                f"GET /v2/ HTTP/1.1\r\nHost: {other.address}\r\n"
                "Authorization: Basic c2VjcmV0OnNlY3JldA==\r\nConnection: close\r\n\r\n".encode(),
            )
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"registry/2.0" in answer.lower()  # the origin answered, not the other host
    assert other.requests == []


def test_proxy_credentials_and_hop_headers_are_not_passed_on(
    lone_agent: tuple[str, int], veth_ns: VethNamespace
) -> None:
    with RecordingServer(veth_ns.host_address) as target:
        response, _ = exchange(
            lone_agent,
            f"GET http://{target.address}/x HTTP/1.1\r\nHost: {target.address}\r\n"
            "Proxy-Authorization: Basic cHJveHk6cHJveHk=\r\nAuthorization: Bearer for-target\r\n"
            "Connection: close, X-Hop\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n".encode(),
        )
    assert status_of(response) == 200 and response.endswith(b"recorded")
    (seen,) = target.requests
    assert seen["authorization"] == "Bearer for-target"  # the client sent it to this host
    assert "proxy-authorization" not in seen
    assert "x-hop" not in seen
    assert seen["x-end"] == "2"


def test_pushes_through_the_proxy_are_relayed_unchanged(
    lone_agent: tuple[str, int], tls_origin: OriginRegistry, eagle_ca: CaFiles, tmp_path: Path
) -> None:
    # Uploads (POST, PATCH, PUT with bodies, 202 + Location) are not Eagle's business:
    # a docker daemon behind the proxy must still push.
    layout = build_oci_layout(tmp_path / "layout", [300_000], seed=77, tag="pushed")
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(eagle_ca.cert, certs / "ca.crt")
    host, port = lone_agent
    relayed = scrape(lone_agent).get('eagle_agent_proxy_requests_total{route="relay"}', 0.0)
    skopeo(
        [
            "copy", "--preserve-digests", "--dest-cert-dir", str(certs),
            f"oci:{layout.layout_dir}:pushed", f"docker://{tls_origin.host}/team/pushed:v1",
        ],
        env={"HTTPS_PROXY": f"http://{host}:{port}"},
    )  # fmt: skip
    after = scrape(lone_agent)['eagle_agent_proxy_requests_total{route="relay"}']
    assert after - relayed >= 4  # intercepted and relayed, not tunnelled past the agent
    # Read back straight from the origin, without the agent.
    pulled = pull_image(tls_origin.host, "team/pushed", "v1", tmp_path / "back")
    for blob in layout.blobs:
        assert pulled[blob.hex].read_bytes() == layout.blob_path(blob.digest).read_bytes()

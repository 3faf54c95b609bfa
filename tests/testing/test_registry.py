"""OriginRegistry and ManagedProcess against the real docker-registry binary."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from eagle.testing import (
    BasicAuth,
    ImageInfo,
    ManagedProcess,
    OriginRegistry,
    SkopeoError,
    build_oci_layout,
    http_get_status,
    pull_image,
    push_image,
    self_signed_tls,
    wait_http,
)


def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, method=method, headers=headers or {})
    with opener.open(request, timeout=10) as response:
        return bytes(response.read())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- lifecycle ------------------------------------------------------------------------------


def test_starts_serves_and_stops_without_leaking(tmp_path: Path) -> None:
    with OriginRegistry(tmp_path) as registry:
        pid = registry.pid
        assert registry.alive
        assert registry.url == f"http://{registry.host}"
        assert registry.host.startswith("127.0.0.1:")
        assert http_get_status(f"{registry.url}/v2/") == 200
    assert not registry.alive
    assert _gone(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left in its process group either


def test_restart_keeps_port_and_content(tmp_path: Path, image_layout: ImageInfo) -> None:
    small = build_oci_layout(tmp_path / "layout", [4096], seed=99, tag="v1")
    with OriginRegistry(tmp_path / "origin") as registry:
        push_image(small.layout_dir, registry.host, "x/small", "v1")
        url = registry.url
        registry.stop()
        assert not registry.alive
        with pytest.raises(OSError):
            _request(f"{url}/v2/")
        registry.start()
        assert registry.url == url
        blob = small.layers[0]
        body = _request(f"{url}/v2/x/small/blobs/{blob.digest}")
        assert body == small.blob_path(blob.digest).read_bytes()


def test_temporary_directory_is_removed_on_exit() -> None:
    with OriginRegistry() as registry:
        directory = registry.directory
        assert registry.log_path.exists()
    assert not directory.exists()


# -- counting what the origin served --------------------------------------------------------


def test_blob_gets_counts_gets_and_not_heads(
    pushed_image: tuple[OriginRegistry, ImageInfo],
) -> None:
    origin, image = pushed_image
    layer, other = image.layers[1], image.layers[2]
    url = f"{origin.url}/v2/library/demo/blobs/{layer.digest}"
    assert origin.blob_gets() == 0

    for _ in range(2):
        assert _request(url) == image.blob_path(layer.digest).read_bytes()
    _request(url, method="HEAD")
    _request(
        f"{origin.url}/v2/library/demo/manifests/latest",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )

    assert origin.blob_gets(layer.digest) == 2
    assert origin.blob_gets(other.digest) == 0
    assert origin.blob_gets() == 2
    assert origin.blob_bytes(layer.digest) == 2 * layer.size
    methods = sorted(r.method for r in origin.blob_requests())
    assert methods == ["GET", "GET", "HEAD"]


def test_range_gets_count_with_the_bytes_written(
    pushed_image: tuple[OriginRegistry, ImageInfo],
) -> None:
    origin, image = pushed_image
    layer = image.layers[0]
    url = f"{origin.url}/v2/library/demo/blobs/{layer.digest}"
    part = _request(url, headers={"Range": "bytes=1000-1999"})
    assert part == image.blob_path(layer.digest).read_bytes()[1000:2000]
    assert origin.blob_gets(layer.digest) == 1
    assert origin.blob_bytes() == 1000
    assert [r.status for r in origin.blob_requests()] == [206]


def test_missing_blob_is_not_counted(origin: OriginRegistry) -> None:
    missing = "sha256:" + "0" * 64
    assert http_get_status(f"{origin.url}/v2/library/demo/blobs/{missing}") == 404
    assert origin.blob_gets() == 0
    assert [(r.digest, r.status) for r in origin.blob_requests()] == [(missing, 404)]


def test_reset_counts_forgets_earlier_requests(
    pushed_image: tuple[OriginRegistry, ImageInfo],
) -> None:
    origin, image = pushed_image
    _request(f"{origin.url}/v2/library/demo/blobs/{image.config_digest}")
    assert origin.blob_gets() == 1
    origin.reset_counts()
    assert origin.blob_gets() == 0


# -- basic auth and TLS ---------------------------------------------------------------------


def test_basic_auth_over_tls(tmp_path: Path) -> None:
    small = build_oci_layout(tmp_path / "layout", [10 * 1024], seed=5, tag="v1")
    auth = BasicAuth("alice", "s3cret")
    tls = self_signed_tls(tmp_path / "tls")
    with OriginRegistry(tmp_path / "origin", auth=auth, tls=tls) as registry:
        assert registry.url.startswith("https://127.0.0.1:")
        assert registry.creds == "alice:s3cret"
        assert http_get_status(f"{registry.url}/v2/") == 401
        assert http_get_status(f"{registry.url}/v2/", headers={"Authorization": auth.header}) == 200

        with pytest.raises(SkopeoError) as failure:
            push_image(small.layout_dir, registry.host, "private/img", "v1", creds="alice:wrong")
        assert "wrong" not in str(failure.value)  # passwords never reach messages

        push_image(small.layout_dir, registry.host, "private/img", "v1", creds=registry.creds)
        registry.reset_counts()
        pulled = pull_image(
            registry.host, "private/img", "v1", tmp_path / "pulled", creds=registry.creds
        )
        assert set(pulled) == {blob.hex for blob in small.blobs}
        assert registry.blob_gets() == len(small.blobs)


# -- ManagedProcess and wait_http -----------------------------------------------------------


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"sleep 600 & echo $! > {pidfile}; wait"
    with ManagedProcess(["sh", "-c", script], tmp_path / "sh.log") as proc:
        deadline = time.monotonic() + 5
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline, "child never wrote its grandchild's pid"
            time.sleep(0.01)
        grandchild = int(pidfile.read_text())
        assert proc.alive
    assert not proc.alive
    assert _gone(proc.pid)
    # Dead is enough: reaping the orphan is up to init, and some inits are slow at it.
    deadline = time.monotonic() + 5
    while not (_gone(grandchild) or _is_zombie(grandchild)):
        assert time.monotonic() < deadline, "grandchild survived stop()"
        time.sleep(0.01)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    proc = ManagedProcess(["sh", "-c", "trap '' TERM; sleep 600 & wait"], tmp_path / "log")
    proc.start()
    time.sleep(0.2)  # let the shell install its trap
    started = time.monotonic()
    proc.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    assert not proc.alive
    assert proc.returncode == -9


def test_wait_http_reports_an_early_exit_with_the_log_tail(tmp_path: Path, free_port: int) -> None:
    proc = ManagedProcess(["sh", "-c", "echo boom-marker >&2; exit 3"], tmp_path / "log")
    with proc, pytest.raises(TimeoutError, match="boom-marker"):
        wait_http(f"http://127.0.0.1:{free_port}/", timeout=10, process=proc)


def test_wait_http_times_out_on_a_silent_port(free_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not answer"):
        wait_http(f"http://127.0.0.1:{free_port}/", timeout=0.3)
    assert time.monotonic() - started < 3


def test_wait_http_refuses_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        wait_http("http://192.0.2.1/", timeout=0.1)

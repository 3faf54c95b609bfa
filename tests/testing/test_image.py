"""OCI layouts built locally, and moved with the real skopeo."""

from __future__ import annotations

import filecmp
import gzip
import hashlib
import json
import tarfile
import urllib.request
from pathlib import Path

import pytest

from eagle.testing import (
    ImageInfo,
    OriginRegistry,
    SkopeoError,
    build_oci_layout,
    pull_image,
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# -- building -------------------------------------------------------------------------------


def test_same_seed_same_digests(tmp_path: Path) -> None:
    sizes = [300 * 1024, 70_001, 0]
    first = build_oci_layout(tmp_path / "a", sizes, seed=7)
    again = build_oci_layout(tmp_path / "b", sizes, seed=7)
    other = build_oci_layout(tmp_path / "c", sizes, seed=8)
    assert first.manifest_digest == again.manifest_digest
    assert first.layers == again.layers
    assert first.config == again.config
    assert set(first.layer_digests).isdisjoint(other.layer_digests)
    assert len(set(first.layer_digests)) == len(sizes)  # layers of one image differ too


def test_layer_sizes_are_within_one_percent(
    image_layout: ImageInfo, image_layer_sizes: tuple[int, ...]
) -> None:
    assert len(image_layout.layers) == len(image_layer_sizes)
    for layer, requested in zip(image_layout.layers, image_layer_sizes, strict=True):
        assert abs(layer.size - requested) <= requested / 100, (layer, requested)
    assert image_layout.total_blob_bytes == sum(b.size for b in image_layout.blobs)


def test_layout_is_a_valid_oci_image(
    image_layout: ImageInfo, image_layer_sizes: tuple[int, ...]
) -> None:
    root = image_layout.layout_dir
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["digest"] == image_layout.manifest_digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "latest"

    manifest_path = image_layout.blob_path(image_layout.manifest_digest)
    assert _sha256(manifest_path) == image_layout.manifest_digest
    manifest = json.loads(manifest_path.read_text())
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["digest"] == image_layout.config_digest
    assert [layer["digest"] for layer in manifest["layers"]] == list(image_layout.layer_digests)
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }

    config = json.loads(image_layout.blob_path(image_layout.config_digest).read_text())
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    for blob in image_layout.blobs:
        assert _sha256(image_layout.blob_path(blob.digest)) == blob.digest
        assert image_layout.blob_path(blob.digest).stat().st_size == blob.size

    # diff_ids are the digests of the uncompressed tars, each holding one file.
    for layer, diff_id, requested in zip(
        image_layout.layers, config["rootfs"]["diff_ids"], image_layer_sizes, strict=True
    ):
        digest = hashlib.sha256()
        with gzip.open(image_layout.blob_path(layer.digest)) as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        assert "sha256:" + digest.hexdigest() == diff_id
        with tarfile.open(image_layout.blob_path(layer.digest)) as tar:
            [member] = tar.getmembers()
            assert member.isfile() and member.size == requested


def test_second_tag_keeps_the_first(tmp_path: Path) -> None:
    one = build_oci_layout(tmp_path, [1000], seed=1, tag="one")
    two = build_oci_layout(tmp_path, [2000], seed=2, tag="two")
    index = json.loads((tmp_path / "index.json").read_text())
    tags = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }
    assert tags == {"one": one.manifest_digest, "two": two.manifest_digest}


# -- pushing and pulling --------------------------------------------------------------------


def test_push_keeps_the_manifest_digest(pushed_image: tuple[OriginRegistry, ImageInfo]) -> None:
    origin, image = pushed_image
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"{origin.url}/v2/library/demo/manifests/latest",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with opener.open(request, timeout=10) as response:
        assert response.headers["Docker-Content-Digest"] == image.manifest_digest
        assert response.read() == image.blob_path(image.manifest_digest).read_bytes()


def test_pull_from_origin_is_byte_identical(
    pushed_image: tuple[OriginRegistry, ImageInfo], tmp_path: Path
) -> None:
    origin, image = pushed_image
    pulled = pull_image(origin.host, "library/demo", "latest", tmp_path / "pulled")
    assert set(pulled) == {blob.hex for blob in image.blobs}
    for blob in image.blobs:
        assert filecmp.cmp(pulled[blob.hex], image.blob_path(blob.digest), shallow=False)
    # A direct pull fetches every blob from the origin exactly once.
    for blob in image.blobs:
        assert origin.blob_gets(blob.digest) == 1
    assert origin.blob_bytes() == image.total_blob_bytes


def test_pull_by_digest(pushed_image: tuple[OriginRegistry, ImageInfo], tmp_path: Path) -> None:
    origin, image = pushed_image
    pulled = pull_image(origin.host, "library/demo", f"@{image.manifest_digest}", tmp_path / "d")
    assert set(pulled) == {blob.hex for blob in image.blobs}


def test_pull_failure_carries_skopeos_message(origin: OriginRegistry, tmp_path: Path) -> None:
    with pytest.raises(SkopeoError, match="manifest unknown"):
        pull_image(origin.host, "library/nothing", "latest", tmp_path / "none")

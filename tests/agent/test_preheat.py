"""Image references, platforms and manifest selection for preheat (pure logic)."""

from __future__ import annotations

import pytest

from eagle.agent.preheat import ImageRef, Platform, select_manifests
from eagle.core.digest import Digest
from eagle.core.errors import InvalidInput, OriginError
from eagle.registry.manifests import blobs_of

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repo", "reference"),
    [
        ("alpine", None, "alpine", "latest"),
        ("library/alpine:3.20", None, "library/alpine", "3.20"),
        (f"library/alpine@{D1}", None, "library/alpine", D1),
        (f"library/alpine:3.20@{D1}", None, "library/alpine", D1),
        ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000", "team/app", "v1"),
        ("localhost/app", "localhost", "app", "latest"),
        ("registry.example.com/a/b/c", "registry.example.com", "a/b/c", "latest"),
        ("registry.example.com:443/a", "registry.example.com:443", "a", "latest"),
    ],
)
def test_image_references_parse_like_docker(
    text: str, registry: str | None, repo: str, reference: str
) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repo, ref.reference) == (registry, repo, reference)
    assert ImageRef.parse(str(ref)) == ref


@pytest.mark.parametrize("text", ["", "UPPER/case", "a/../b", "app:bad tag", "app@md5:00", ":tag"])
def test_bad_image_references_are_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput):
        ImageRef.parse(text)


def test_platforms() -> None:
    arm = Platform.parse("linux/arm64/v8")
    assert (arm.os, arm.architecture, arm.variant) == ("linux", "arm64", "v8")
    assert arm.matches({"os": "linux", "architecture": "arm64", "variant": "v8"})
    assert not arm.matches({"os": "linux", "architecture": "arm64", "variant": "v7"})
    assert Platform.parse("linux/arm64").matches({"os": "linux", "architecture": "arm64"})
    assert str(Platform.of_host()).startswith("linux/")
    for bad in ("linux", "linux/", "a/b/c/d"):
        with pytest.raises(InvalidInput):
            Platform.parse(bad)


INDEX = {
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"digest": D1, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": D2, "platform": {"os": "linux", "architecture": "arm64"}},
        # Attestations and other artifacts are not images to preheat.
        {"digest": D3, "mediaType": "application/vnd.in-toto+json", "platform": {"os": "x"}},
    ],
}


def test_an_index_is_narrowed_to_the_platform_asked_for() -> None:
    chosen = select_manifests(INDEX, Platform.parse("linux/arm64"), "img")
    assert [m["digest"] for m in chosen] == [D2]
    assert [m["digest"] for m in select_manifests(INDEX, None, "img")] == [D1, D2]


def test_a_missing_platform_names_the_ones_there_are() -> None:
    with pytest.raises(InvalidInput, match="linux/amd64, linux/arm64") as err:
        select_manifests(INDEX, Platform.parse("linux/s390x"), "img:1")
    assert "img:1 has no manifest for linux/s390x" in str(err.value)


def test_blobs_of_a_manifest_are_its_config_and_layers() -> None:
    manifest = {"config": {"digest": D1, "size": 10}, "layers": [{"digest": D2, "size": 20}]}
    assert blobs_of(manifest) == [(Digest.parse(D1), 10), (Digest.parse(D2), 20)]
    with pytest.raises(OriginError):
        blobs_of({"layers": []})

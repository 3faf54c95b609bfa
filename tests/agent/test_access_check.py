"""The access check against a real htpasswd-protected docker-registry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from eagle.agent.access import AccessCheck, credential_fingerprint
from eagle.core.digest import Digest
from eagle.core.errors import OriginError, OriginStatus
from eagle.registry.client import OriginClient, OriginSet
from eagle.testing import BasicAuth, ImageInfo, OriginRegistry, build_oci_layout, push_image

ALICE = BasicAuth("alice", "s3cret")
REPO = "team/app"


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginRegistry, Digest]]:
    image: ImageInfo = build_oci_layout(tmp_path_factory.mktemp("layout"), [4096], seed=7, tag="v1")
    with OriginRegistry(tmp_path_factory.mktemp("registry"), auth=ALICE) as registry:
        push_image(image.layout_dir, registry.host, REPO, "v1", creds=ALICE.creds)
        yield registry, Digest.parse(image.layers[0].digest)


@pytest.fixture
async def client(private: tuple[OriginRegistry, Digest]) -> AsyncIterator[OriginClient]:
    registry, _ = private
    origins = OriginClient(OriginSet([registry.url]))
    yield origins
    await origins.close()


def heads(registry: OriginRegistry) -> int:
    return sum(1 for r in registry.blob_requests() if r.method == "HEAD")


def test_fingerprints_hide_the_credential() -> None:
    fp = credential_fingerprint({"Authorization": ALICE.header})
    assert fp and ALICE.password not in fp and len(fp) == 64
    assert credential_fingerprint({}) == ""
    assert credential_fingerprint({"Authorization": MALLORY}) != fp


MALLORY = BasicAuth("alice", "guess").header


async def test_yes_is_remembered_per_credential_no_is_not(
    private: tuple[OriginRegistry, Digest], client: OriginClient
) -> None:
    registry, digest = private
    metrics = CollectorRegistry()
    check = AccessCheck(client, ttl=60, registry=metrics)
    origin = client.origins.default
    registry.reset_counts()

    await check.check(origin, REPO, digest, {"Authorization": ALICE.header})
    await check.check(origin, REPO, digest, {"Authorization": ALICE.header})
    assert heads(registry) == 1  # the second answer came from the cache

    for headers in ({}, {"Authorization": MALLORY}, {}):
        with pytest.raises(OriginStatus) as denied:
            await check.check(origin, REPO, digest, headers)
        assert denied.value.status == 401
        assert denied.value.headers["WWW-Authenticate"].startswith("Basic realm=")

    # Refusals are asked again every time (the registry does not log them; we count them).
    def count(result: str) -> float | None:
        return metrics.get_sample_value("eagle_agent_access_checks_total", {"result": result})

    assert (count("allowed"), count("cached"), count("denied")) == (1, 1, 3)

    # The blob is not in another repository, whatever the client may read.
    with pytest.raises(OriginStatus) as unknown:
        await check.check(origin, "team/other", digest, {"Authorization": ALICE.header})
    assert unknown.value.status == 404 and unknown.value.code == "BLOB_UNKNOWN"


async def test_zero_ttl_asks_every_time(
    private: tuple[OriginRegistry, Digest], client: OriginClient
) -> None:
    registry, digest = private
    check = AccessCheck(client, ttl=0, registry=CollectorRegistry())
    registry.reset_counts()
    for _ in range(3):
        await check.check(client.origins.default, REPO, digest, {"Authorization": ALICE.header})
    assert heads(registry) == 3


async def test_an_unreachable_origin_is_an_error_not_a_yes(tmp_path: Path) -> None:
    origins = OriginClient(OriginSet(["http://127.0.0.1:1"]), connect_timeout=2)
    check = AccessCheck(origins, ttl=60, registry=CollectorRegistry())
    digest = Digest("0" * 64)
    try:
        with pytest.raises(OriginError):
            await check.check(origins.origins.default, REPO, digest, {})
    finally:
        await origins.close()

"""Shared pytest fixtures: real servers on loopback, started once where that is safe and
always stopped.

Sections, each building on the ones above it:

* generic helpers (ports);
* origin registry and images (Docker Distribution, skopeo);
* Eagle components (agents, seeders, trackers) -- to come.

Session-scoped fixtures hold the expensive parts (a registry process, a 21 MiB image
pushed once). Function-scoped wrappers hand them to each test in a known state: running,
with the origin's request counts reset. Tests must not delete what the session pushed;
a test that needs a pristine or differently configured registry starts its own
``OriginRegistry`` in ``tmp_path``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from eagle.ca import CaFiles, init_ca
from eagle.testing import (
    ImageInfo,
    OriginRegistry,
    build_oci_layout,
    push_image,
    self_signed_tls,
)
from eagle.testing.redis import RedisServer
from eagle.testing.s3 import MotoS3, s3_client_env
from eagle.testing.vethns import VethNamespace
from eagle.utils import net

KiB = 1 << 10
MiB = 1 << 20
DEMO_LAYER_SIZES = (20 * MiB, 1 * MiB, 200 * KiB)
DEMO_SEED = 0
DEMO_REPO = "library/demo"
DEMO_TAG = "latest"


# -- generic helpers ------------------------------------------------------------------------


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    return net.free_port()


# -- origin registry and images -------------------------------------------------------------


@pytest.fixture(scope="session")
def origin_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginRegistry]:
    """One origin registry for the whole session; prefer the ``origin`` fixture."""
    with OriginRegistry(tmp_path_factory.mktemp("origin")) as registry:
        yield registry


@pytest.fixture
def origin(origin_session: OriginRegistry) -> OriginRegistry:
    """The session's origin registry, running, with its blob request counts reset."""
    # An earlier test may have stopped it to play an outage; the port and content survive.
    origin_session.start()
    origin_session.reset_counts()
    return origin_session


@pytest.fixture(scope="session")
def image_layer_sizes() -> tuple[int, ...]:
    """The payload sizes asked for the layers of ``image_layout``."""
    return DEMO_LAYER_SIZES


@pytest.fixture(scope="session")
def image_layout(
    tmp_path_factory: pytest.TempPathFactory, image_layer_sizes: tuple[int, ...]
) -> ImageInfo:
    """An OCI layout with one image of three layers: 20 MiB, 1 MiB and 200 KiB."""
    return build_oci_layout(
        tmp_path_factory.mktemp("image-layout"), list(image_layer_sizes), DEMO_SEED, DEMO_TAG
    )


@pytest.fixture(scope="session")
def demo_image_pushed(origin_session: OriginRegistry, image_layout: ImageInfo) -> ImageInfo:
    """``image_layout`` pushed to the session origin as ``library/demo:latest``, once."""
    push_image(image_layout.layout_dir, origin_session.host, DEMO_REPO, DEMO_TAG)
    return image_layout


@pytest.fixture
def pushed_image(
    demo_image_pushed: ImageInfo, origin: OriginRegistry
) -> tuple[OriginRegistry, ImageInfo]:
    """``(origin, image)``: the demo image is on the origin as ``library/demo:latest`` and
    the origin's counts start from zero (the push itself is not counted)."""
    return origin, demo_image_pushed


# -- S3 (moto_server) -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """One ``moto_server`` on loopback for the session; make a fresh bucket per test with
    ``moto_s3.bucket()``. It runs without the machine's ``AWS_*`` and proxy variables."""
    with MotoS3(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test process without ``AWS_*`` and proxy variables (see ``s3_client_env``)."""
    for key in os.environ.keys() - s3_client_env().keys():
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# -- proxy mode: a non-loopback HTTPS origin and the Eagle CA -------------------------------


@pytest.fixture(scope="session")
def veth_ns() -> Iterator[VethNamespace]:
    """A namespace joined to ours by a veth pair: addresses no one else can reach, and not
    loopback (Go clients never send loopback requests through a proxy)."""
    with VethNamespace() as ns:
        yield ns


@pytest.fixture(scope="session")
def tls_origin(
    tmp_path_factory: pytest.TempPathFactory, veth_ns: VethNamespace, image_layout: ImageInfo
) -> Iterator[OriginRegistry]:
    """An HTTPS origin inside ``veth_ns`` (certificate: ``tls_origin.tls``) holding the demo
    image as ``library/demo:latest``. Reset its counts before counting."""
    directory = tmp_path_factory.mktemp("tls-origin")
    tls = self_signed_tls(directory / "tls", veth_ns.address)
    with OriginRegistry(
        directory / "registry", tls=tls, netns=veth_ns.name, listen_host=veth_ns.address
    ) as registry:
        push_image(image_layout.layout_dir, registry.host, DEMO_REPO, DEMO_TAG)
        yield registry


@pytest.fixture(scope="session")
def eagle_ca(tmp_path_factory: pytest.TempPathFactory) -> CaFiles:
    """An Eagle CA made with ``eagle ca init``'s code."""
    return init_ca(tmp_path_factory.mktemp("eagle-ca"))


# -- Redis (the shared tracker peer store) ---------------------------------------------------


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh, empty ``redis-server`` on a free loopback port; stopped after the test."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server

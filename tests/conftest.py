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

from collections.abc import Iterator

import pytest

from eagle.testing import ImageInfo, OriginRegistry, build_oci_layout, push_image
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

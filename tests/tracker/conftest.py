"""Fixtures of the tracker tests: a clock, and every peer store behind one fixture."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest

from eagle.testing.redis import RedisServer
from eagle.tracker.memstore import MemoryPeerStore
from eagle.tracker.peerstore import PeerStore
from eagle.tracker.redisstore import RedisPeerStore

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def redis_module(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    """One Redis for a module's tests; each test uses its own key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server  # type: ignore[misc]
    server.stop()


class StoreMaker:
    """Builds stores of one backend with the test's clock; closes them all afterwards."""

    def __init__(self, backend: str, clock: FakeClock, redis: RedisServer | None) -> None:
        self.backend = backend
        self.clock = clock
        self.redis = redis
        self.prefix = f"test:{uuid.uuid4().hex[:8]}:"
        self.made: list[PeerStore] = []

    def __call__(self, **bounds: int) -> PeerStore:
        store: PeerStore
        if self.backend == "memory":
            store = MemoryPeerStore(clock=self.clock, rng=random.Random(len(self.made)), **bounds)
        else:
            assert self.redis is not None
            store = RedisPeerStore(
                self.redis.url,
                prefix=self.prefix,
                clock=self.clock,
                rng=random.Random(len(self.made)),
                **bounds,
            )
        self.made.append(store)
        return store


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[StoreMaker]:
    """``make_store(**bounds)`` → a store of the parametrised backend; all share one view."""
    redis = request.getfixturevalue("redis_module") if request.param == "redis" else None
    maker = StoreMaker(request.param, clock, redis)
    yield maker
    for store in maker.made:
        await store.close()


@pytest.fixture
def store(make_store: StoreMaker) -> PeerStore:
    """A store of each backend."""
    return make_store()

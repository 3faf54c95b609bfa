"""The shared peer store: swarms in Redis, so several trackers hand out one view (HA).

An announce is two round trips, each one atomic Lua script
(:mod:`eagle.tracker.redis_scripts`): the first records the peer, expires the
swarm's dead peers and returns its bucket sizes; the policy allocates in Python
(one policy implementation for every store); the second takes the peers from
the buckets, least recently handed out first, and marks them handed out.

Redis errors become :class:`PeerStoreUnavailable`, whose message is what clients
see as the ``failure reason``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import redis.asyncio as redis
from redis.exceptions import RedisError

from eagle.core.errors import EagleError
from eagle.tracker.config import TrackerConfig
from eagle.tracker.handout import HandoutPolicy, Kind, Requester
from eagle.tracker.locations import Location
from eagle.tracker.peerstore import Handout, PeerAnnounce, PeerStore, SwarmStats
from eagle.tracker.redis_scripts import ANNOUNCE, PURGE, STATS, TAKE

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_KIND_CODES = {Kind.COMPLETE: b"C", Kind.SEEDER: b"S", Kind.INCOMPLETE: b"I"}
_KINDS = {ord(code): kind for kind, code in _KIND_CODES.items()}
_PURGE_BATCH = 500


class PeerStoreUnavailable(EagleError):
    """The shared peer store cannot be reached or failed."""

    status = 503
    code = "UNAVAILABLE"


def _location_key(location: Location) -> bytes:
    return location.key().encode()


def _sizes(flat: list[bytes]) -> dict[Location, list[int]]:
    """Bucket counts (``HGETALL`` of ``:n``, flattened) by location and kind."""
    sizes: dict[Location, list[int]] = {}
    for index in range(0, len(flat), 2):
        bucket, count = flat[index], int(flat[index + 1])
        if count <= 0:
            continue
        location = Location.from_key(bucket[2:].decode())
        sizes.setdefault(location, [0, 0, 0])[_KINDS[bucket[0]]] += count
    return sizes


class RedisPeerStore(PeerStore):
    """A :class:`PeerStore` in Redis (``redis://host:port/db``), shared by trackers.

    Safe for concurrent use: every change is one Lua script, atomic in Redis.
    Connects lazily, so a tracker starts (and reports unhealthy) while Redis is down.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "eagle:tracker:",
        max_swarm_peers: int = 50000,
        max_swarms: int = 100000,
        max_locations: int = 256,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.prefix = prefix.encode()
        self.max_swarm_peers = max_swarm_peers
        self.max_swarms = max_swarms
        self.max_locations = max_locations
        self._clock = clock
        self._rng = rng or random.Random()
        self._redis = redis.Redis.from_url(
            url,
            decode_responses=False,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=256,
        )
        self._announce = self._redis.register_script(ANNOUNCE)
        self._take = self._redis.register_script(TAKE)
        self._stats = self._redis.register_script(STATS)
        self._purge = self._redis.register_script(PURGE)

    @classmethod
    def from_config(cls, config: TrackerConfig) -> RedisPeerStore:
        """A store at ``config.peer_store`` with the bounds of ``config``."""
        return cls(
            config.peer_store,
            prefix=config.redis_prefix,
            max_swarm_peers=config.max_swarm_peers,
            max_swarms=config.max_swarms,
            max_locations=config.max_locations,
        )

    async def _call(self, operation: str, pending: Awaitable[Any]) -> Any:
        try:
            return await pending
        except (RedisError, OSError) as exc:
            log.warning("redis %s failed url=%s error=%r", operation, self.url, exc)
            raise PeerStoreUnavailable("peer store unavailable") from exc

    async def announce(self, request: PeerAnnounce, policy: HandoutPolicy) -> Handout:
        """See :meth:`PeerStore.announce`."""
        info_hash = request.info_hash.hex().encode()
        now = self._clock()
        ttl = request.ttl
        gateway, flat = await self._call(
            "announce",
            self._announce(
                args=[
                    self.prefix,
                    info_hash,
                    request.address,
                    request.peer_id,
                    _KIND_CODES[request.kind],
                    _location_key(request.location),
                    request.event or "",
                    repr(now),
                    repr(ttl),
                    self.max_swarm_peers,
                    policy.gateways_per_idc,
                    self.max_swarms,
                    self.max_locations,
                    repr(self._rng.random()),
                    int((2 * ttl + 60) * 1000),
                ]
            ),
        )
        sizes = _sizes(flat)
        complete = sum(c[Kind.COMPLETE] + c[Kind.SEEDER] for c in sizes.values())
        incomplete = sum(c[Kind.INCOMPLETE] for c in sizes.values())
        if request.event == "stopped" or request.numwant <= 0:
            return Handout([], None, complete, incomplete)
        own = sizes.get(request.location)
        if own is None:
            # The store filed the peer as unlabelled (too many locations in the swarm).
            own = sizes.get(Location(), [0, 0, 0])
            location = Location()
        else:
            location = request.location
        if own[request.kind] > 0:
            own[request.kind] -= 1
        requester = Requester(
            location,
            request.kind != Kind.INCOMPLETE,
            request.kind == Kind.SEEDER,
            gateway == b"1",
        )
        allocation = policy.allocate(requester, sizes, request.numwant)
        if not allocation:
            return Handout([], [] if request.with_peer_ids else None, complete, incomplete)
        args: list[bytes | str | int] = [
            self.prefix,
            info_hash,
            request.address,
            b"1" if request.with_peer_ids else b"0",
            repr(now),
            repr(self._rng.random()),
        ]
        for bucket_location, kind, count in allocation:
            args += [_KIND_CODES[kind] + b"|" + _location_key(bucket_location), count]
        v4, v6, ids = await self._call("take", self._take(args=args))
        addresses = [v4[i : i + 6] for i in range(0, len(v4), 6)]
        addresses += [v6[i : i + 18] for i in range(0, len(v6), 18)]
        peer_ids = [ids[i : i + 20] for i in range(0, len(ids), 20)]
        return Handout(addresses, peer_ids if request.with_peer_ids else None, complete, incomplete)

    async def stats(self, info_hashes: Sequence[bytes]) -> list[SwarmStats]:
        """See :meth:`PeerStore.stats`."""
        now = repr(self._clock())
        async with self._redis.pipeline(transaction=False) as pipe:
            for info_hash in info_hashes:
                # Queued on the pipeline, sent by execute().
                await self._stats(args=[self.prefix, info_hash.hex(), now], client=pipe)
            results = await self._call("stats", pipe.execute())
        stats = []
        for info_hash, (flat, downloaded) in zip(info_hashes, results, strict=True):
            sizes = _sizes(flat)
            locations = {loc: (c[0], c[1], c[2]) for loc, c in sizes.items()}
            stats.append(SwarmStats(info_hash, locations, int(downloaded)))
        return stats

    async def swarms(self, limit: int) -> list[bytes]:
        """See :meth:`PeerStore.swarms`."""
        hashes = await self._call(
            "swarms",
            self._redis.zrevrangebyscore(
                self.prefix + b"swarms", "+inf", repr(self._clock()), start=0, num=limit
            ),
        )
        return [bytes.fromhex(h.decode()) for h in hashes]

    async def totals(self) -> tuple[int, int]:
        """See :meth:`PeerStore.totals`."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcount(self.prefix + b"swarms", repr(self._clock()), "+inf")
            pipe.hget(self.prefix + b"totals", "peers")
            swarms, peers = await self._call("totals", pipe.execute())
        return int(swarms), int(peers or 0)

    async def purge(self) -> int:
        """See :meth:`PeerStore.purge`: forgets swarms whose peers all expired.

        Peers that expired in swarms still alive are dropped by the next announce
        or stats call on that swarm, which is enough for exact answers.
        """
        removed_total = 0
        while True:
            dead, removed = await self._call(
                "purge",
                self._purge(args=[self.prefix, "", repr(self._clock()), _PURGE_BATCH]),
            )
            removed_total += int(removed)
            if int(dead) < _PURGE_BATCH:
                return removed_total

    async def ping(self) -> None:
        """See :meth:`PeerStore.ping`."""
        await self._call("ping", cast(Awaitable[Any], self._redis.ping()))

    async def close(self) -> None:
        """See :meth:`PeerStore.close`: closes the connection pool (data stays in Redis)."""
        await self._redis.aclose()

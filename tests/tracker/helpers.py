"""Helpers shared by the tracker tests: a hand-moved clock and announce builders."""

from __future__ import annotations

import ipaddress
import time

from eagle.tracker.handout import Kind
from eagle.tracker.locations import Location
from eagle.tracker.peerstore import PeerAnnounce

SWARM = b"s" * 20
UNLABELLED = Location()
OTHER = b"o" * 20


class FakeClock:
    """A clock the test moves by hand; starts at the wall clock (Redis stores wall times)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def address(port: int, ip: str = "127.0.0.1") -> bytes:
    """The compact form of ``ip:port`` (IPv4 or IPv6)."""
    return ipaddress.ip_address(ip).packed + port.to_bytes(2, "big")


def peer_announce(
    port: int,
    *,
    info_hash: bytes = SWARM,
    kind: Kind = Kind.INCOMPLETE,
    location: Location = UNLABELLED,
    event: str | None = None,
    numwant: int = 50,
    ttl: float = 10.0,
    ip: str = "127.0.0.1",
    peer_id: bytes = b"",
    with_peer_ids: bool = False,
) -> PeerAnnounce:
    """An announce from ``ip:port`` (peer id derived from the port unless given)."""
    return PeerAnnounce(
        info_hash,
        address(port, ip),
        (peer_id or b"%05d" % port).ljust(20, b"-"),
        location,
        kind,
        event,
        numwant,
        ttl,
        with_peer_ids,
    )


def ports(addresses: list[bytes]) -> list[int]:
    """The ports of compact addresses, in order."""
    return [int.from_bytes(a[-2:], "big") for a in addresses]

"""A peer as the tracker sees it."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class PeerAddress:
    """Where a peer accepts BitTorrent connections."""

    ip: str
    port: int

    def compact(self) -> bytes:
        """BEP 23 (IPv4, 6 bytes) or BEP 7 (IPv6, 18 bytes) compact form."""
        return ipaddress.ip_address(self.ip).packed + struct.pack("!H", self.port)

    @property
    def is_ipv6(self) -> bool:
        return ipaddress.ip_address(self.ip).version == 6


@dataclass(frozen=True)
class Peer:
    """One announcing client in one swarm."""

    peer_id: bytes
    address: PeerAddress
    complete: bool = False

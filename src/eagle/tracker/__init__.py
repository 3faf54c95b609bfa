"""The tracker: a BEP 3 HTTP tracker with BEP 23 compact peers and BEP 48 scrape.

``announce`` is the pure protocol logic (parsing and encoding), ``peerstore`` the
swarm state behind an interface, ``server`` the thin aiohttp adapter between them.
"""

from __future__ import annotations

from eagle.tracker.config import TrackerConfig
from eagle.tracker.peerstore import MemoryPeerStore, PeerStore
from eagle.tracker.server import TrackerServer

__all__ = ["MemoryPeerStore", "PeerStore", "TrackerConfig", "TrackerServer"]

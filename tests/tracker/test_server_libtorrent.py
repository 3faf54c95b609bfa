"""A real BitTorrent client (libtorrent) against the tracker: a download, and labels."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from eagle.p2p.labels import announce_labels, label_url
from eagle.tracker.config import TrackerConfig
from eagle.tracker.locations import Location
from eagle.tracker.server import TrackerServer
from eagle.utils.net import free_port

lt = pytest.importorskip("libtorrent")


def _session() -> Any:
    return lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "allow_multiple_connections_per_ip": True,
            # libtorrent ignores tracker intervals below this (default five minutes).
            "min_announce_interval": 1,
            "alert_mask": 0,
        }
    )


def _add_torrent(session: Any, info: Any, save_path: Path, flags: int = 0) -> Any:
    params = lt.add_torrent_params()
    params.ti, params.save_path, params.flags = info, str(save_path), flags
    return session.add_torrent(params)


async def _wait_for(predicate: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _torrent(seed_dir: Path, trackers: list[str]) -> tuple[Any, bytes]:
    payload = hashlib.sha256(b"eagle").digest() * 4096  # 128 KiB: 8 pieces
    (seed_dir / "blob").write_bytes(payload)
    creator = lt.create_torrent(
        lt.list_files(str(seed_dir / "blob")), 16 * 1024, lt.create_torrent.v1_only
    )
    creator.set_priv(True)
    for tier, url in enumerate(trackers):
        creator.add_tracker(url, tier)
    lt.set_piece_hashes(creator, str(seed_dir))
    return lt.torrent_info(creator.generate()), payload


async def test_libtorrent_download_with_labels(tmp_path: Path) -> None:
    tracker = TrackerServer(TrackerConfig(listen=f"127.0.0.1:{free_port()}", interval=1))
    await tracker.start()
    seed_dir, leech_dir = tmp_path / "seed", tmp_path / "leech"
    seed_dir.mkdir()
    leech_dir.mkdir()
    # Each side announces to the same tracker with its own labels, the way the engine
    # decorates URLs; libtorrent appends its parameters after ours.
    seed_url = label_url(tracker.url, announce_labels(region="eu", idc="a", seeder=True))
    leech_url = label_url(tracker.url, announce_labels(region="eu", idc="a", rack="r2"))
    info, payload = _torrent(seed_dir, [seed_url])
    leech_info, _ = _torrent(seed_dir, [leech_url])
    info_hash = info.info_hashes().v1.to_bytes()
    assert leech_info.info_hashes().v1.to_bytes() == info_hash  # trackers are outside info
    store = tracker.store

    async def locations_are(expected: dict[Location, tuple[int, int, int]]) -> bool:
        (stats,) = await store.stats([info_hash])
        return stats.locations == expected

    seeder, leecher = _session(), _session()
    try:
        seed = _add_torrent(seeder, info, seed_dir, lt.torrent_flags.seed_mode)
        # The seeder announces first, so the leecher's first answer already holds it.
        assert await _wait_for(lambda: locations_are({Location("eu", "a", ""): (0, 1, 0)}), 10)
        leech = _add_torrent(leecher, leech_info, leech_dir)

        async def leech_done() -> bool:
            return bool(leech.status().is_seeding)

        assert await _wait_for(leech_done, 30), leech.status().state
        assert (leech_dir / "blob").read_bytes() == payload
        done = {Location("eu", "a", ""): (0, 1, 0), Location("eu", "a", "r2"): (1, 0, 0)}
        assert await _wait_for(lambda: locations_are(done), 10)
        (stats,) = await store.stats([info_hash])
        assert stats.downloaded == 1

        # Removing the torrents sends event=stopped, which empties the swarm. It also
        # spares the session destructors from blocking the loop (and so this tracker)
        # while they wait for stop announces.
        seeder.remove_torrent(seed)
        leecher.remove_torrent(leech)
        assert await _wait_for(lambda: locations_are({}), 10)
    finally:
        del seeder, leecher
        await tracker.stop()

"""The one libtorrent session of a host, driven from asyncio.

All torrents of a host (downloads and seeds) share this session, so its rate
limits are host-level limits. libtorrent runs its own threads; we talk to it
only through non-blocking calls and poll its alert queue from an asyncio task,
which resolves the futures callers await.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libtorrent as lt

from eagle.core.errors import PeerError, StorageError, SwarmStalled
from eagle.core.metainfo import Metainfo
from eagle.p2p.labels import label_url
from eagle.p2p.settings import global_peer_class_filter, session_settings
from eagle.p2p.steering import TICK_SECONDS as STEER_SECONDS
from eagle.p2p.steering import SwarmSteering, initial_priorities, worth_steering
from eagle.utils.net import HostPort
from eagle.utils.tasks import TaskSet

log = logging.getLogger(__name__)

ALERT_POLL_SECONDS = 0.05
PROGRESS_POLL_SECONDS = 0.5
OPERATION_TIMEOUT_SECONDS = 60.0
# libtorrent waits ~13 s before retrying a failed first announce; a tracker that
# was briefly unreachable (started after us, restarting) should not cost that much.
REANNOUNCE_BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0)


@dataclass
class _Torrent:
    handle: Any
    meta: Metainfo
    finished: asyncio.Future[None]
    tracker_failures: int = 0
    # One-shot operations (flush, move) awaiting their alert, by operation name.
    waiting: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    peers_seen: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class DownloadResult:
    """What a finished download used: for logs and source accounting."""

    seconds: float
    peers: int
    payload_bytes: int


def _release(session: Any) -> None:
    del session


class TorrentEngine:
    """The host's libtorrent session: seed verified files, download blobs, enforce limits."""

    def __init__(
        self,
        listen: HostPort,
        *,
        download_rate: int = 0,
        upload_rate: int = 0,
        announce_labels: Mapping[str, str] | None = None,
        role: str = "agent",
    ) -> None:
        self.listen = listen
        # Agents steer their downloads (eagle.p2p.steering); seeders say who they are.
        self.role = role
        # The host's location labels (p2p.labels), added to every tracker URL it announces to.
        self.announce_labels = dict(announce_labels or {})
        # Agents share swarm stripes with the agents of their IDC (eagle.p2p.steering).
        self._site = self.announce_labels.get("idc", "")
        self._settings = session_settings(
            listen, download_rate=download_rate, upload_rate=upload_rate, role=role, site=self._site
        )
        self._steering: SwarmSteering | None = None
        self._session: Any = None
        self._torrents: dict[bytes, _Torrent] = {}
        self._tasks = TaskSet("p2p")

    @property
    def session(self) -> Any:
        if self._session is None:
            raise PeerError("p2p engine not started")
        return self._session

    async def start(self) -> None:
        params = lt.session_params()
        params.settings = self._settings  # type: ignore[assignment]  # a dict works
        self._session = lt.session(params)
        self._session.set_peer_class_filter(global_peer_class_filter())
        self._tasks.spawn(self._pump_alerts(), name="alerts")
        if self.role == "agent":
            self._steering = SwarmSteering(self._session, str(self.listen), site=self._site)
            self._tasks.spawn(self._steer(), name="steering")
        log.info("p2p started listen=%s", self.listen)

    async def stop(self) -> None:
        await self._tasks.close()
        # Steering holds the session too; it must go for the session to be destroyed.
        self._steering = None
        if self._session is not None:
            for t in self._torrents.values():
                if not t.finished.done():
                    t.finished.cancel()
            session, self._session = self._session, None
            session.pause()
            # Destroying a session waits (up to stop_tracker_timeout) for its "stopped"
            # announces; do that off the event loop, which may serve a tracker too.
            await asyncio.to_thread(_release, session)
        self._torrents.clear()

    @property
    def port(self) -> int:
        return int(self.session.listen_port())

    def set_rates(self, download_rate: int, upload_rate: int) -> None:
        self.session.apply_settings(
            {"download_rate_limit": download_rate, "upload_rate_limit": upload_rate}
        )

    def has(self, infohash: bytes) -> bool:
        return infohash in self._torrents

    def seed(self, meta: Metainfo, save_dir: Path, trackers: Sequence[str]) -> None:
        """Seed a verified file ``save_dir/<hex>`` without re-hashing it (seed mode)."""
        if meta.infohash in self._torrents:
            return
        params = self._params(meta, save_dir, trackers)
        params.flags |= lt.torrent_flags.seed_mode
        self._add(meta, params)
        log.info("seeding digest=%s infohash=%s", meta.digest, meta.infohash.hex())

    async def download(
        self, meta: Metainfo, save_dir: Path, trackers: Sequence[str], stall_timeout: float
    ) -> DownloadResult:
        """Download ``meta``'s blob to ``save_dir/<hex>``; the torrent stays in the session.

        Raises :class:`SwarmStalled` when no byte arrives for ``stall_timeout`` seconds;
        the torrent is then removed with its partial data.
        """
        started = time.monotonic()
        torrent = self._torrents.get(meta.infohash)
        if torrent is None:
            params = self._params(meta, save_dir, trackers)
            steer = self._steering is not None and worth_steering(params.ti.num_pieces())
            if steer:
                params.piece_priorities = initial_priorities(
                    params.ti.num_pieces(), str(self.listen)
                )
            torrent = self._add(meta, params)
            if steer and self._steering is not None:
                self._steering.add(torrent.handle)
        try:
            await self._until_finished(torrent, stall_timeout)
            # "Finished" means every piece passed its hash check, not that the disk
            # has every byte: reading the file before the flush can see holes.
            await self._operation(torrent, "flush", torrent.handle.flush_cache)
        except BaseException:
            self.remove(meta.infohash, delete_files=True)
            raise
        self._note_peers(torrent)
        status = torrent.handle.status()
        return DownloadResult(
            time.monotonic() - started,
            len(torrent.peers_seen),
            int(status.total_payload_download),
        )

    async def move(self, infohash: bytes, final_dir: Path) -> None:
        """Move a downloaded torrent's file (an atomic rename on one file system); keep seeding."""
        torrent = self._torrents.get(infohash)
        if torrent is None:
            raise StorageError(f"no torrent {infohash.hex()} to move")
        await self._operation(torrent, "move", lambda: torrent.handle.move_storage(str(final_dir)))

    def remove(self, infohash: bytes, delete_files: bool = False) -> None:
        torrent = self._torrents.pop(infohash, None)
        if torrent is None or self._session is None:
            return
        flags = lt.session.delete_files if delete_files else 0
        if self._steering is not None:
            self._steering.remove(torrent.handle)
        self._session.remove_torrent(torrent.handle, flags)
        if not torrent.finished.done():
            torrent.finished.cancel()

    def stats(self) -> dict[str, int]:
        """Totals over the torrents in the session now: payload bytes up and down."""
        up = down = 0
        for t in self._torrents.values():
            s = t.handle.status()
            up += s.all_time_upload
            down += s.all_time_download
        return {"uploaded": up, "downloaded": down, "torrents": len(self._torrents)}

    def downloaded(self, infohash: bytes) -> int | None:
        """Payload bytes a torrent in the session has received so far; None if absent."""
        torrent = self._torrents.get(infohash)
        if torrent is None or not torrent.handle.is_valid():
            return None
        return int(torrent.handle.status().total_payload_download)

    def session_totals(self) -> tuple[int, int]:
        """Payload bytes (downloaded, uploaded) by the session since it started; monotonic,
        unlike :meth:`stats`, which loses the bytes of removed torrents."""
        if self._session is None:
            return 0, 0
        with warnings.catch_warnings():
            # session.status() is deprecated in favour of the asynchronous stats alert,
            # but it is still the one synchronous read of the session's byte counters.
            warnings.simplefilter("ignore", DeprecationWarning)
            status = self._session.status()
        return int(status.total_payload_download), int(status.total_payload_upload)

    def leechers(self, infohash: bytes) -> int:
        """Connected peers of a torrent that still miss pieces: while there are any, a
        seeder's copy is in use. 0 for a torrent not in the session."""
        torrent = self._torrents.get(infohash)
        if torrent is None or not torrent.handle.is_valid():
            return 0
        status = torrent.handle.status()
        return max(0, int(status.num_peers) - int(status.num_seeds))

    # -- internals ----------------------------------------------------------------

    def _params(self, meta: Metainfo, save_dir: Path, trackers: Sequence[str]) -> Any:
        try:
            labelled = [label_url(url, self.announce_labels) for url in trackers]
            info = lt.torrent_info(meta.with_trackers(labelled).to_bytes())
        except RuntimeError as exc:
            raise PeerError(f"libtorrent refused the torrent of {meta.digest}: {exc}") from exc
        params = lt.add_torrent_params()
        params.ti = info
        params.save_path = str(save_dir)
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        params.flags |= lt.torrent_flags.duplicate_is_error
        # The session's IP filter lists seeders to stop asking; only steering sets this
        # flag, per torrent, when a download is done with the seeder.
        params.flags &= ~lt.torrent_flags.apply_ip_filter
        return params

    def _add(self, meta: Metainfo, params: Any) -> _Torrent:
        try:
            handle = self.session.add_torrent(params)
        except RuntimeError as exc:
            raise PeerError(f"cannot add torrent of {meta.digest}: {exc}") from exc
        torrent = _Torrent(handle, meta, asyncio.get_running_loop().create_future())
        self._torrents[meta.infohash] = torrent
        return torrent

    async def _operation(self, torrent: _Torrent, name: str, start: Callable[[], object]) -> None:
        """Start an asynchronous libtorrent operation and wait for the alert that ends it."""
        done = asyncio.get_running_loop().create_future()
        torrent.waiting[name] = done
        start()
        try:
            await asyncio.wait_for(done, OPERATION_TIMEOUT_SECONDS)
        except TimeoutError as exc:
            raise StorageError(f"{name} of {torrent.meta.digest} timed out") from exc
        finally:
            torrent.waiting.pop(name, None)

    def _resolve(self, torrent: _Torrent, name: str, error: str | None = None) -> None:
        done = torrent.waiting.get(name)
        if done is None or done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(StorageError(f"{name} of {torrent.meta.digest}: {error}"))

    def _note_peers(self, torrent: _Torrent) -> None:
        for peer in torrent.handle.get_peer_info():
            torrent.peers_seen.add(f"{peer.ip[0]}:{peer.ip[1]}")

    async def _until_finished(self, torrent: _Torrent, stall_timeout: float) -> None:
        last_done = -1
        last_progress = time.monotonic()
        while not torrent.finished.done():
            try:
                await asyncio.wait_for(asyncio.shield(torrent.finished), PROGRESS_POLL_SECONDS)
                break
            except TimeoutError:
                pass
            status = torrent.handle.status()
            self._note_peers(torrent)
            if status.is_seeding:
                # Also done when libtorrent's "finished" came before the last pieces were
                # wanted (steering priorities): no second alert is promised.
                if not torrent.finished.done():
                    torrent.finished.set_result(None)
                break
            if status.total_wanted_done != last_done:
                last_done, last_progress = status.total_wanted_done, time.monotonic()
            elif time.monotonic() - last_progress > stall_timeout:
                raise SwarmStalled(
                    f"{torrent.meta.digest}: no progress for {stall_timeout:.0f}s at "
                    f"{last_done}/{torrent.meta.length} bytes, peers={status.num_peers}"
                )
        torrent.finished.result()

    async def _steer(self) -> None:
        steering = self._steering
        assert steering is not None
        while True:
            if len(steering):
                steering.tick()
            await asyncio.sleep(steering.next_tick() if len(steering) else STEER_SECONDS)

    async def _pump_alerts(self) -> None:
        while True:
            for alert in self.session.pop_alerts():
                try:
                    self._on_alert(alert)
                except Exception:
                    log.exception("alert handler failed alert=%s", type(alert).__name__)
            await asyncio.sleep(ALERT_POLL_SECONDS)

    def _torrent_of(self, alert: Any) -> _Torrent | None:
        handle = getattr(alert, "handle", None)
        if handle is None or not handle.is_valid():
            return None
        infohash = handle.info_hashes().v1.to_bytes()
        return self._torrents.get(infohash)

    def _on_alert(self, alert: Any) -> None:
        torrent = self._torrent_of(alert)
        if torrent is None:
            return
        if isinstance(alert, lt.torrent_finished_alert):
            # Steering gives pieces nobody can send yet priority 0, and libtorrent calls a
            # torrent whose wanted pieces are all done "finished": only a seed is.
            if not torrent.finished.done() and torrent.handle.status().is_seeding:
                torrent.finished.set_result(None)
        elif isinstance(alert, lt.torrent_error_alert | lt.file_error_alert):
            if not torrent.finished.done():
                torrent.finished.set_exception(
                    StorageError(f"{torrent.meta.digest}: {alert.message()}")
                )
        elif isinstance(alert, lt.storage_moved_alert):
            self._resolve(torrent, "move")
        elif isinstance(alert, lt.storage_moved_failed_alert):
            self._resolve(torrent, "move", alert.message())
        elif isinstance(alert, lt.cache_flushed_alert):
            self._resolve(torrent, "flush")
        elif isinstance(alert, lt.tracker_error_alert):
            delay = REANNOUNCE_BACKOFF[min(torrent.tracker_failures, len(REANNOUNCE_BACKOFF) - 1)]
            torrent.tracker_failures += 1
            log.debug(
                "tracker error digest=%s msg=%s retry_in=%.0fs",
                torrent.meta.digest,
                alert.message(),
                delay,
            )
            # (seconds) alone: the (seconds, -1) overload raises OverflowError in the bindings.
            torrent.handle.force_reannounce(int(delay))
        elif isinstance(alert, lt.tracker_reply_alert):
            torrent.tracker_failures = 0

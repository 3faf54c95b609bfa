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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libtorrent as lt

from eagle.core.errors import PeerError, StorageError, SwarmStalled
from eagle.core.metainfo import Metainfo
from eagle.p2p.settings import global_peer_class_filter, session_settings
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

    def __init__(self, listen: HostPort, *, download_rate: int = 0, upload_rate: int = 0) -> None:
        self.listen = listen
        self._settings = session_settings(
            listen, download_rate=download_rate, upload_rate=upload_rate
        )
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
        log.info("p2p started listen=%s", self.listen)

    async def stop(self) -> None:
        await self._tasks.close()
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
            torrent = self._add(meta, self._params(meta, save_dir, trackers))
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

    # -- internals ----------------------------------------------------------------

    def _params(self, meta: Metainfo, save_dir: Path, trackers: Sequence[str]) -> Any:
        try:
            info = lt.torrent_info(meta.with_trackers(trackers).to_bytes())
        except RuntimeError as exc:
            raise PeerError(f"libtorrent refused the torrent of {meta.digest}: {exc}") from exc
        params = lt.add_torrent_params()
        params.ti = info
        params.save_path = str(save_dir)
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        params.flags |= lt.torrent_flags.duplicate_is_error
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
            if status.total_wanted_done != last_done:
                last_done, last_progress = status.total_wanted_done, time.monotonic()
            elif time.monotonic() - last_progress > stall_timeout:
                raise SwarmStalled(
                    f"{torrent.meta.digest}: no progress for {stall_timeout:.0f}s at "
                    f"{last_done}/{torrent.meta.length} bytes, peers={status.num_peers}"
                )
        torrent.finished.result()

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
            if not torrent.finished.done():
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
            torrent.handle.force_reannounce(int(delay), -1)
        elif isinstance(alert, lt.tracker_reply_alert):
            torrent.tracker_failures = 0

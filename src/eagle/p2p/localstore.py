"""Verified blobs on local disk, each with its torrent, ready for libtorrent to seed.

Layout under the root::

    blobs/<hex>        complete blobs whose sha256 was verified (libtorrent seeds these)
    torrents/<hex>     their metainfo, so a restart seeds them without re-hashing
    incoming/<hex>     partial p2p downloads (libtorrent writes here, may be sparse)
    tmp/               origin downloads being written and hashed

A blob enters ``blobs/`` only by an atomic rename after verification, so a
crash never leaves a half-written file under a name that looks whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from eagle.core.digest import Digest
from eagle.core.errors import InvalidInput, StorageError
from eagle.core.metainfo import Metainfo, PieceHasher

log = logging.getLogger(__name__)


class LocalBlobs:
    """A directory of verified blobs and their torrents."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.torrents_dir = root / "torrents"
        self.incoming_dir = root / "incoming"
        self.tmp_dir = root / "tmp"
        try:
            for d in (self.blobs_dir, self.torrents_dir, self.incoming_dir, self.tmp_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {root}: {exc}") from exc

    def discard_partial(self) -> None:
        """Forget unfinished work of a previous run: it was never verified."""
        for d in (self.incoming_dir, self.tmp_dir):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.blobs_dir / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file() and (self.torrents_dir / digest.hex).is_file()

    def metainfo(self, digest: Digest) -> Metainfo:
        try:
            return Metainfo.from_bytes((self.torrents_dir / digest.hex).read_bytes())
        except (OSError, InvalidInput) as exc:
            raise StorageError(f"no usable torrent for {digest}: {exc}") from exc

    def complete(self) -> list[Metainfo]:
        """The torrents of complete blobs: a blob file and a matching torrent of the right
        length."""
        found = []
        for entry in self.blobs_dir.iterdir():
            try:
                meta = self.metainfo(Digest(entry.name))
            except (InvalidInput, StorageError):
                continue
            # lstat: a symlink or a directory under a digest's name is not a blob we wrote.
            with contextlib.suppress(OSError):
                st = entry.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_size == meta.length:
                    found.append(meta)
        return found

    def by_last_use(self, stamp: Callable[[Digest], Path]) -> list[Metainfo]:
        """Complete blobs, least recently used first: by the mtime of ``stamp(digest)``,
        the file its owner touches on each use (for a start-up's LRU order)."""
        found = []
        for meta in self.complete():
            with contextlib.suppress(OSError):
                found.append((stamp(meta.digest).stat().st_mtime_ns, meta.digest.hex, meta))
        return [meta for *_, meta in sorted(found, key=lambda f: f[:2])]

    def size(self, digest: Digest) -> int:
        return self.path(digest).stat().st_size

    def sweep(self) -> tuple[Path, ...]:
        """Delete what :meth:`list` would skip: stray or truncated files, orphan torrents.

        Returns the paths removed. Only for a start-up, before anything is served.
        """
        complete = {meta.digest.hex for meta in self.complete()}
        removed = []
        for directory in (self.blobs_dir, self.torrents_dir):
            for entry in directory.iterdir():
                if entry.name in complete and entry.is_file() and not entry.is_symlink():
                    continue
                try:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                except OSError as exc:
                    log.warning("cannot remove stray file path=%s error=%s", entry, exc)
                    continue
                removed.append(entry)
        return tuple(removed)

    def write_torrent(self, meta: Metainfo) -> None:
        """Store a blob's torrent. Written before the blob, so a blob never lacks one."""
        final = self.torrents_dir / meta.digest.hex
        tmp = self.tmp_dir / f"{meta.digest.hex}.torrent.{os.getpid()}"
        try:
            tmp.write_bytes(meta.with_trackers(()).to_bytes())
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StorageError(f"cannot store the torrent of {meta.digest}: {exc}") from exc

    def commit(self, digest: Digest, verified_file: Path, meta: Metainfo) -> Path:
        """Move a verified file into place (atomic rename), after its torrent."""
        self.write_torrent(meta)
        try:
            os.replace(verified_file, self.path(digest))
        except OSError as exc:
            raise StorageError(f"cannot store {digest}: {exc}") from exc
        return self.path(digest)

    def remove(self, digest: Digest) -> None:
        for p in (
            self.path(digest),
            self.torrents_dir / digest.hex,
            self.incoming_dir / digest.hex,
        ):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    async def write_verified(
        self, digest: Digest, size: int | None, chunks: AsyncIterator[bytes]
    ) -> tuple[Path, Metainfo]:
        """Stream to a temp file while hashing, verify, commit. Nothing stays behind on failure."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=f"{digest.hex}.")
        tmp = Path(name)
        try:
            sha = hashlib.sha256()
            # Piece hashes need the final size up front; without it (a chunked
            # response) they come from a second read of the file, in a thread.
            pieces = PieceHasher(size) if size is not None else None
            written = 0
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    sha.update(chunk)
                    if pieces is not None:
                        pieces.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
            if size is not None and written != size:
                raise StorageError(f"{digest}: got {written} of {size} bytes")
            digest.verify(sha)
            if pieces is not None:
                meta = Metainfo(digest, written, pieces.piece_length, pieces.pieces())
            else:
                meta = await asyncio.to_thread(metainfo_of_file, digest, tmp)
            return self.commit(digest, tmp, meta), meta
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def metainfo_of_file(digest: Digest, path: Path) -> Metainfo:
    """Build the torrent of a file already on disk (blocking: run it in a thread)."""
    size = path.stat().st_size
    hasher = PieceHasher(size)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return Metainfo(digest, size, hasher.piece_length, hasher.pieces())

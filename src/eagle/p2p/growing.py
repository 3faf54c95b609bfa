"""A blob being written to a temp file while clients read it: a download streams at once.

The agent streams origin fallbacks and a seeder's stream of a cold blob this way; the
seeder streams its local copy of a blob to the first agent while the origin sends it.
One writer appends and hashes; any number of readers follow it with ``pread`` on the
same file descriptor, so a rename (commit to the cache) or an unlink (eviction,
failure) under them changes nothing; the descriptor is closed when the last
reference to the :class:`GrowingBlob` goes, whoever holds it.

Readers never get the blob's last byte before the writer has checked the whole
blob's sha256: a client can never receive a complete blob that does not match its
digest, even though it got most bytes early.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import tempfile
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from eagle.core.digest import Digest
from eagle.core.errors import EagleError, OriginError, StorageError
from eagle.core.metainfo import Metainfo, PieceHasher
from eagle.p2p.localstore import metainfo_of_file

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
THREAD_CHUNK = 256 * 1024  # smaller chunks are hashed inline: a thread hop costs more


class CacheWriteFailed(StorageError):
    """The local disk refused the blob (full, read-only, ...): stream it, do not cache it."""


class GrowingBlob:
    """A blob file that is still being written, readable from any offset meanwhile.

    ``source`` names where the bytes come from (``origin``, ``seeder``), for metrics and logs.
    """

    def __init__(
        self, digest: Digest, size: int | None, tmp_dir: Path, source: str = "origin"
    ) -> None:
        self.digest = digest
        self.size = size
        self.source = source
        self.written = 0
        self.verified = False
        self.error: EagleError | None = None
        self.meta: Metainfo | None = None
        self._changed = asyncio.Event()
        self._fd: int | None = None
        self.path: Path | None = None
        try:
            fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=f"{digest.hex}.")
        except OSError as exc:
            self.error = CacheWriteFailed(f"cannot create a temp file in {tmp_dir}: {exc}")
        else:
            self._fd, self.path = fd, Path(name)
            weakref.finalize(self, os.close, fd)

    @property
    def done(self) -> bool:
        """True once the blob is verified or the writer failed."""
        return self.verified or self.error is not None

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def write_from(self, chunks: AsyncIterator[bytes]) -> Metainfo:
        """Append ``chunks``, hash them, verify the digest; the writer's whole job.

        Raises :class:`CacheWriteFailed` when the disk refuses a write,
        :class:`OriginError` or :class:`DigestMismatch` when the bytes are wrong.
        Either way readers are told (``error``) and may go on from elsewhere.
        """
        try:
            if self.error is not None:
                raise self.error
            sha = hashlib.sha256()
            pieces = PieceHasher(self.size) if self.size is not None else None
            async for chunk in chunks:
                # Hashing releases the GIL: in a thread it overlaps with the event loop
                # reading the next chunk and serving readers (a cold pull is a pipeline).
                if len(chunk) >= THREAD_CHUNK:
                    await asyncio.to_thread(self._absorb, chunk, sha, pieces)
                else:
                    self._absorb(chunk, sha, pieces)
                self.written += len(chunk)
                self._notify()
            if self.size is not None and self.written != self.size:
                raise OriginError(
                    f"{self.digest}: {self.source} sent {self.written} of {self.size} bytes"
                )
            self.digest.verify(sha)
            if pieces is not None:
                meta = Metainfo(self.digest, self.written, pieces.piece_length, pieces.pieces())
            else:
                assert self.path is not None
                meta = await asyncio.to_thread(metainfo_of_file, self.digest, self.path)
        except EagleError as exc:
            self.fail(exc)
            raise
        except BaseException:
            self.fail(OriginError(f"{self.digest}: download cancelled"))
            raise
        self.meta = meta
        self.verified = True
        self.size = self.written
        self._notify()
        return meta

    def _absorb(self, chunk: bytes, sha: Any, pieces: PieceHasher | None) -> None:
        sha.update(chunk)
        if pieces is not None:
            pieces.update(chunk)
        self._append(chunk)

    def _append(self, chunk: bytes) -> None:
        assert self._fd is not None
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise CacheWriteFailed(
                f"{'disk full' if full else 'cannot write'} while caching {self.digest}: {exc}"
            ) from exc

    def fail(self, error: EagleError) -> None:
        """Stop: readers raise ``error`` once they have read what was written."""
        if self.error is None and not self.verified:
            self.error = error
            self._notify()

    def discard(self) -> None:
        """Delete the temp file if it is still there (not committed)."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def wait(self) -> None:
        """Until the blob is verified or failed."""
        while not self.done:
            await self._changed.wait()

    async def read(self, offset: int = 0) -> AsyncGenerator[bytes, None]:
        """The blob's bytes from ``offset``, as they are written; the last one after verification.

        Raises the writer's error once every byte written before it was read.
        """
        while True:
            # Hold the final byte back until the whole blob is verified.
            limit = self.written if self.verified else max(0, self.written - 1)
            if offset < limit:
                data = self._pread(offset, limit - offset)
                offset += len(data)
                yield data
                continue
            if self.verified:
                return
            if self.error is not None:
                raise self.error
            await self._changed.wait()

    def sha256_of_prefix(self, length: int) -> Any:
        """sha256 over the first ``length`` bytes (blocking: run it in a thread).

        A reader that must finish from elsewhere needs the hash of what it sent; it
        is read back from the file only then, so the common path hashes once.
        """
        sha = hashlib.sha256()
        offset = 0
        while offset < length:
            data = self._pread(offset, length - offset)
            sha.update(data)
            offset += len(data)
        return sha

    def _pread(self, offset: int, most: int) -> bytes:
        """Up to ``most`` (and at most a chunk of) written bytes from ``offset``."""
        assert self._fd is not None
        try:
            data = os.pread(self._fd, min(READ_CHUNK, most), offset)
        except OSError as exc:
            raise StorageError(f"cannot read back {self.digest}: {exc}") from exc
        if not data:
            raise StorageError(f"{self.digest}: file shorter than written")
        return data


async def verified_stream(
    chunks: AsyncIterator[bytes], sha: hashlib._Hash, digest: Digest
) -> AsyncGenerator[bytes, None]:
    """Pass ``chunks`` on, continuing ``sha``, and hold the last byte back until it matches.

    ``sha`` has hashed whatever the client got before these chunks.
    """
    held = b""
    async for chunk in chunks:
        if not chunk:
            continue
        sha.update(chunk)
        if held:
            yield held
        chunk, held = chunk[:-1], chunk[-1:]
        if chunk:
            yield chunk
    digest.verify(sha)
    if held:
        yield held

"""The ``fs`` storage backend: blobs as files under a directory (local disk or a shared mount).

Layout under the root::

    sha256/<hex[:2]>/<hex>   complete, verified blobs
    .tmp/<hex>.<random>      writes in progress (never listed, never read)

A write goes to ``.tmp/``, is fsynced and verified, then renamed into place:
rename is atomic within one file system, so a reader sees a whole blob or none.
File I/O runs in worker threads, so a slow disk or network mount does not
stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from eagle.core.digest import Digest
from eagle.core.errors import InvalidInput, StorageError
from eagle.storage.base import (
    CHUNK,
    BlobReader,
    BlobStat,
    BlobStorage,
    NotFound,
    VerifyingStream,
    check_prefix,
    check_range,
)
from eagle.storage.config import StorageConfig

log = logging.getLogger(__name__)

# Temp files older than this are leftovers of a crashed writer. Seeders sharing a
# mount must not delete each other's live writes, hence an age, not "all of them".
STALE_TMP_SECONDS = 3600.0


def describe_os_error(exc: OSError, where: Path) -> str:
    """An OSError as an operator would want to read it."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return f"storage full: no space left under {where} ({exc.strerror})"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"storage not writable: {where} ({exc.strerror})"
    return f"storage I/O error under {where}: {exc}"


class FsReader(BlobReader):
    def __init__(self, digest: Digest, size: int, start: int, length: int, f: BinaryIO) -> None:
        super().__init__(digest, size, start, length)
        self._file = f

    async def __aiter__(self) -> AsyncIterator[bytes]:
        remaining = self.length
        await asyncio.to_thread(self._file.seek, self.start)
        while remaining > 0:
            chunk = await asyncio.to_thread(self._file.read, min(CHUNK, remaining))
            if not chunk:
                raise StorageError(f"{self.digest}: file shrank while being read")
            remaining -= len(chunk)
            yield chunk


class FsStorage(BlobStorage):
    """Blobs as files under ``root``."""

    name = "fs"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "sha256"
        self.tmp_dir = root / ".tmp"

    @classmethod
    def from_config(cls, location: str, config: StorageConfig) -> FsStorage:
        """``location`` is the directory (``fs:/path`` without the ``fs:``)."""
        if not location:
            raise StorageError("fs storage needs a directory: fs:/path")
        return cls(Path(location).expanduser())

    def __repr__(self) -> str:
        return f"FsStorage({str(self.root)!r})"

    def path(self, digest: Digest) -> Path:
        return self.blobs_dir / digest.hex[:2] / digest.hex

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)
        log.info("storage ready backend=fs root=%s", self.root)

    def _prepare(self) -> None:
        try:
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            probe = self.tmp_dir / f"probe.{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(describe_os_error(exc, self.root)) from exc
        cutoff = time.time() - STALE_TMP_SECONDS
        for entry in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    log.info("removed stale temp file path=%s", entry)

    async def stat(self, digest: Digest) -> BlobStat:
        try:
            st = await asyncio.to_thread(os.stat, self.path(digest))
        except FileNotFoundError:
            raise NotFound(f"{digest} is not in storage") from None
        except OSError as exc:
            raise StorageError(describe_os_error(exc, self.root)) from exc
        return BlobStat(digest, st.st_size)

    @contextlib.asynccontextmanager
    async def open(
        self, digest: Digest, start: int = 0, length: int | None = None
    ) -> AsyncIterator[BlobReader]:
        try:
            f = await asyncio.to_thread(self.path(digest).open, "rb")
        except FileNotFoundError:
            raise NotFound(f"{digest} is not in storage") from None
        except OSError as exc:
            raise StorageError(describe_os_error(exc, self.root)) from exc
        try:
            size = os.fstat(f.fileno()).st_size
            count = check_range(digest, size, start, length)
            yield FsReader(digest, size, start, count, f)
        finally:
            await asyncio.to_thread(f.close)

    async def write(
        self, digest: Digest, chunks: AsyncIterable[bytes], size: int | None = None
    ) -> BlobStat:
        stream = VerifyingStream(digest, chunks, size)
        tmp = self.tmp_dir / f"{digest.hex}.{uuid.uuid4().hex}"
        try:
            try:
                out = await asyncio.to_thread(tmp.open, "xb")
            except OSError as exc:
                raise StorageError(describe_os_error(exc, self.root)) from exc
            try:
                async for chunk in stream:
                    await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(_flush_and_sync, out)
            except OSError as exc:
                raise StorageError(describe_os_error(exc, self.root)) from exc
            finally:
                await asyncio.to_thread(out.close)
            stream.verify()
            final = self.path(digest)
            try:
                await asyncio.to_thread(_publish, tmp, final)
            except OSError as exc:
                raise StorageError(describe_os_error(exc, self.root)) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        log.debug("stored backend=fs digest=%s bytes=%d", digest, stream.written)
        return BlobStat(digest, stream.written)

    def adopts_from(self, directory: Path) -> bool:
        try:
            return directory.stat().st_dev == self.tmp_dir.stat().st_dev
        except OSError:
            return False

    async def adopt(self, digest: Digest, path: Path) -> BlobStat | None:
        tmp = self.tmp_dir / f"{digest.hex}.{uuid.uuid4().hex}"
        try:
            size = await asyncio.to_thread(_link_durably, path, tmp)
        except OSError as exc:
            if exc.errno in _CANNOT_LINK:
                return None
            raise StorageError(describe_os_error(exc, self.root)) from exc
        try:
            await asyncio.to_thread(_publish, tmp, self.path(digest))
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise StorageError(describe_os_error(exc, self.root)) from exc
            raise
        log.debug("stored backend=fs digest=%s bytes=%d adopted=%s", digest, size, path)
        return BlobStat(digest, size)

    async def delete(self, digest: Digest) -> None:
        try:
            await asyncio.to_thread(self.path(digest).unlink)
        except FileNotFoundError:
            raise NotFound(f"{digest} is not in storage") from None
        except OSError as exc:
            raise StorageError(describe_os_error(exc, self.root)) from exc

    async def list(self, prefix: str = "") -> AsyncIterator[Digest]:
        check_prefix(prefix)
        try:
            shards = await asyncio.to_thread(_shards, self.blobs_dir, prefix)
            for shard in shards:
                names = await asyncio.to_thread(_names, shard)
                for name in names:
                    if not name.startswith(prefix):
                        continue
                    try:
                        yield Digest(name)
                    except InvalidInput:
                        continue
        except OSError as exc:
            raise StorageError(describe_os_error(exc, self.root)) from exc


def _flush_and_sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


# Another file system, or one (or a mount) without hard links: copy the bytes instead.
_CANNOT_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})


def _link_durably(path: Path, tmp: Path) -> int:
    """Hard-link ``path`` as ``tmp`` once its bytes are on disk; its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    os.link(path, tmp)
    return size


def _publish(tmp: Path, final: Path) -> None:
    final.parent.mkdir(exist_ok=True)
    os.replace(tmp, final)
    # The rename is durable only once the directory entry is on disk too.
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _shards(blobs_dir: Path, prefix: str) -> list[Path]:
    if len(prefix) >= 2:
        shard = blobs_dir / prefix[:2]
        return [shard] if shard.is_dir() else []
    return sorted(p for p in blobs_dir.iterdir() if p.is_dir() and p.name.startswith(prefix))


def _names(shard: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(shard) if entry.is_file()]
    except FileNotFoundError:
        return []

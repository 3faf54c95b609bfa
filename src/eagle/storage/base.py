"""The Seeder Storage Interface (SSI): where a seeder keeps blobs durably.

A backend stores blobs by digest. Its rules, which the conformance suite in
``tests/storage`` checks for every backend:

* **Verified and atomic writes.** :meth:`BlobStorage.write` streams bytes in,
  hashes them, and makes the blob visible only once every byte is stored and the
  sha256 matches. A write that fails, is cancelled, or hashes wrong leaves nothing
  visible: not to :meth:`~BlobStorage.stat`, :meth:`~BlobStorage.open` nor
  :meth:`~BlobStorage.list`.
* **One error for absence.** Every method asked about a blob that is not there
  raises :class:`NotFound`; no backend leaks its own "no such key" error.
* **Streaming.** Reads and writes move bounded chunks; no method holds a whole
  blob in memory (a backend may buffer up to one upload part).
* **Concurrency.** Every method is safe to call concurrently, from several
  tasks and from several seeders sharing one store. Two writers of the same blob
  both succeed and the blob stays whole (the bytes are the same by definition).
* **Errors are Eagle errors.** Failures are :class:`StorageError` (or a subclass),
  converted from the backend library's exceptions where they enter.

    StorageError (eagle.core.errors)
    ├── NotFound             no such blob                           (404)
    ├── RangeNotSatisfiable  a read range outside the blob          (416)
    └── StorageUnavailable   the store cannot be reached right now  (503)
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from eagle.core.digest import Digest
from eagle.core.errors import DigestMismatch, StorageError

CHUNK = 1 << 20


class NotFound(StorageError):
    """The blob is not in the store. Every backend raises exactly this for absence."""

    status = 404
    code = "BLOB_UNKNOWN"


class RangeNotSatisfiable(StorageError):
    """A read range that starts past the end of the blob."""

    status = 416
    code = "RANGE_INVALID"


class StorageUnavailable(StorageError):
    """The store could not be reached (endpoint down, timeouts): worth retrying later."""

    status = 503
    code = "UNAVAILABLE"


@dataclass(frozen=True)
class BlobStat:
    """What the store knows about a stored blob."""

    digest: Digest
    size: int


class BlobReader(abc.ABC):
    """An open read of one blob range: iterate it for the bytes, in bounded chunks."""

    def __init__(self, digest: Digest, size: int, start: int, length: int) -> None:
        self.digest = digest
        self.size = size
        """The whole blob's size."""
        self.start = start
        self.length = length
        """How many bytes this reader yields."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]:
        """The range's bytes in order, in chunks of at most about 1 MiB."""


class BlobStorage(abc.ABC):
    """A durable store of blobs by digest. See the module docstring for the rules.

    Backends register a name in :mod:`eagle.storage.registry` and are built from
    a location string (``fs:/path``, ``s3://bucket/prefix``) and the storage config.
    """

    name: str = "?"

    async def start(self) -> None:
        """Connect and check the store is usable; raise :class:`StorageError` naming why not.

        A store that is merely unreachable right now may log and return instead of
        raising, so a seeder can still serve what it holds locally.
        """
        return None

    async def close(self) -> None:
        """Release connections and threads; the object is unusable afterwards."""
        return None

    @abc.abstractmethod
    async def stat(self, digest: Digest) -> BlobStat:
        """The stored blob's size; :class:`NotFound` when it is not (completely) stored."""

    @abc.abstractmethod
    def open(
        self, digest: Digest, start: int = 0, length: int | None = None
    ) -> AbstractAsyncContextManager[BlobReader]:
        """Read ``length`` bytes (``None``: to the end) from offset ``start``.

        Entering the context raises :class:`NotFound` for a missing blob and
        :class:`RangeNotSatisfiable` when ``start`` is past the end; a range that
        runs past the end is cut at the end. ``start == size`` reads nothing.
        """

    @abc.abstractmethod
    async def write(
        self, digest: Digest, chunks: AsyncIterable[bytes], size: int | None = None
    ) -> BlobStat:
        """Store the bytes of ``chunks`` as ``digest``, atomically, after verifying them.

        Raises :class:`~eagle.core.errors.DigestMismatch` when the bytes hash to
        another digest and :class:`StorageError` when ``size`` is given and the
        stream had another length; errors of ``chunks`` itself propagate. In every
        failure case (cancellation included) nothing new becomes visible. Writing
        a blob that is already stored succeeds and leaves it whole.
        """

    def adopts_from(self, directory: Path) -> bool:
        """Whether :meth:`adopt` can take files in ``directory`` without copying their bytes."""
        return False

    async def adopt(self, digest: Digest, path: Path) -> BlobStat | None:
        """Store the local file ``path`` as ``digest`` by taking the file, not its bytes.

        For callers that have just verified the file's sha256 themselves (the seeder's
        local copy): ``fs`` on the same file system hard-links it, so the blob is on
        disk once and is neither copied nor hashed again. The same atomicity and
        durability rules as :meth:`write` apply. Returns None when this backend (or
        this file) cannot be adopted; the caller then uses :meth:`write`. The file
        must never be modified afterwards (it may be unlinked).
        """
        return None

    @abc.abstractmethod
    async def delete(self, digest: Digest) -> None:
        """Remove the blob; :class:`NotFound` when it is not there."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[Digest]:
        """Every stored blob whose hex digest starts with ``prefix``, in no particular order.

        In-progress and failed writes are never listed.
        """


class VerifyingStream:
    """Wraps a chunk stream: hashes and counts it, and checks both at the end.

    Backends use it so every one verifies the same way: the sha256 of exactly the
    bytes it stored, and the promised size when one was given.
    """

    def __init__(self, digest: Digest, chunks: AsyncIterable[bytes], size: int | None) -> None:
        self.digest = digest
        self.size = size
        self.written = 0
        self._chunks = chunks
        self._sha = hashlib.sha256()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            if not chunk:
                continue
            self._sha.update(chunk)
            self.written += len(chunk)
            if self.size is not None and self.written > self.size:
                raise StorageError(f"{self.digest}: stream is longer than {self.size} bytes")
            yield chunk

    def verify(self) -> None:
        """Raise unless the whole stream was the promised length and hashed to the digest."""
        if self.size is not None and self.written != self.size:
            raise StorageError(f"{self.digest}: got {self.written} of {self.size} bytes")
        try:
            self.digest.verify(self._sha)
        except DigestMismatch as exc:
            raise DigestMismatch(f"not stored: {exc}") from None


def check_range(digest: Digest, size: int, start: int, length: int | None) -> int:
    """The number of bytes a read of ``(start, length)`` yields from a blob of ``size``."""
    if start < 0 or (length is not None and length < 0):
        raise RangeNotSatisfiable(f"{digest}: negative range start={start} length={length}")
    if start > size:
        raise RangeNotSatisfiable(f"{digest}: range starts at {start}, blob has {size} bytes")
    available = size - start
    return available if length is None else min(length, available)


def check_prefix(prefix: str) -> str:
    """A hex prefix to list by; anything else cannot match a digest."""
    if any(c not in "0123456789abcdef" for c in prefix) or len(prefix) > 64:
        raise StorageError(f"list prefix must be lowercase hex, got {prefix[:80]!r}")
    return prefix

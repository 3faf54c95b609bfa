"""The ``s3`` storage backend: blobs as objects in an S3(-compatible) bucket, via aiobotocore.

Keys: ``<prefix>/sha256/<hex>``. Nothing else is written under the prefix.

Atomic visibility comes from S3 itself: a multipart upload is invisible until
``CompleteMultipartUpload``, and we complete it only after the stream hashed to
the digest; otherwise we abort it. A blob smaller than one part is buffered
(bounded by ``part_size``), verified, and sent with one ``PutObject``. Memory is
therefore at most two parts: the one uploading and the one filling.

An upload left incomplete by a crash stays invisible; :meth:`S3Storage.start`
aborts ours that are older than a day, and a bucket lifecycle rule
(AbortIncompleteMultipartUpload) is the belt to those braces.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import io
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterator, MutableSequence, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from eagle.core.digest import Digest
from eagle.core.errors import ConfigError, InvalidInput, StorageError
from eagle.storage.base import (
    CHUNK,
    BlobReader,
    BlobStat,
    BlobStorage,
    NotFound,
    RangeNotSatisfiable,
    StorageUnavailable,
    VerifyingStream,
    check_prefix,
    check_range,
)
from eagle.storage.config import S3Options, StorageConfig

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_TRANSIENT = {"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError", "503", "500"}
STALE_UPLOAD = dt.timedelta(days=1)


class PartBody(io.RawIOBase):
    """A file over a list of chunks, so botocore streams an upload part without joining it.

    Joining (or ``BytesIO``) costs a copy of every part; botocore needs a seekable
    file only to learn the length and to rewind for retries.
    """

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._starts: list[int] = []
        total = 0
        for chunk in chunks:
            self._starts.append(total)
            total += len(chunk)
        self.size = total
        self._pos = 0

    def as_io(self) -> IO[bytes]:
        """This object as the type botocore's stubs ask for (a RawIOBase is one at run time)."""
        return cast(IO[bytes], self)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = 0
        while n < len(view) and self._pos < self.size:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            offset = self._pos - self._starts[i]
            piece = self._chunks[i][offset : offset + len(view) - n]
            view[n : n + len(piece)] = piece
            n += len(piece)
            self._pos += len(piece)
        return n


class S3Reader(BlobReader):
    def __init__(self, digest: Digest, size: int, start: int, length: int, body: Any) -> None:
        super().__init__(digest, size, start, length)
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.length == 0:
            return
        got = 0
        try:
            async for chunk in self._body.iter_chunks(CHUNK):
                got += len(chunk)
                yield chunk
        except (BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
            raise StorageUnavailable(f"s3 read of {self.digest} broke: {exc!r}") from exc
        if got != self.length:
            raise StorageUnavailable(f"s3 read of {self.digest}: got {got} of {self.length} bytes")


class S3Storage(BlobStorage):
    """Blobs in ``bucket`` under ``prefix``."""

    name = "s3"

    def __init__(self, bucket: str, prefix: str, options: S3Options) -> None:
        if not _BUCKET.fullmatch(bucket):
            raise ConfigError(f"config key 'storage': invalid S3 bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.options = options
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: S3Client | None = None

    @classmethod
    def from_config(cls, location: str, config: StorageConfig) -> S3Storage:
        """``location`` is ``bucket[/prefix]`` (``s3://`` already removed)."""
        bucket, _, prefix = location.partition("/")
        return cls(bucket, prefix, config.s3)

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def where(self) -> str:
        endpoint = self.options.endpoint or "aws"
        return f"s3://{self.bucket}/{self.prefix} at {endpoint}"

    def key(self, digest: Digest) -> str:
        return f"{self.prefix}sha256/{digest.hex}"

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise StorageError("s3 storage used before start()")
        return self._client

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        o = self.options
        config = AioConfig(
            s3={"addressing_style": o.addressing_style},
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            retries={"max_attempts": o.max_attempts, "mode": "standard"},
            max_pool_connections=32,
            # We verify sha256 ourselves; the newer default trailing checksums break
            # several S3-compatible servers and cost CPU for nothing here.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        stack = contextlib.AsyncExitStack()
        kwargs: dict[str, Any] = {"config": config}
        if o.endpoint:
            kwargs["endpoint_url"] = o.endpoint
        if o.region:
            kwargs["region_name"] = o.region
        if o.access_key_id and o.secret_access_key:
            kwargs["aws_access_key_id"] = o.access_key_id
            kwargs["aws_secret_access_key"] = o.secret_access_key
            if o.session_token:
                kwargs["aws_session_token"] = o.session_token
        if o.ca_bundle is not None:
            kwargs["verify"] = str(o.ca_bundle)
        try:
            self._client = await stack.enter_async_context(
                get_session().create_client("s3", **kwargs)
            )
        except (BotoCoreError, ValueError) as exc:
            await stack.aclose()
            raise ConfigError(f"s3 storage {self.where}: {exc}") from exc
        self._stack = stack
        try:
            with self._converted("head-bucket"):
                await self.client.head_bucket(Bucket=self.bucket)
        except NotFound:
            await self.close()
            raise StorageError(f"s3 bucket {self.bucket!r} does not exist ({self.where})") from None
        except StorageUnavailable as exc:
            # Keep going: what the seeder holds locally can still be served.
            log.warning("s3 storage unreachable at start where=%s error=%s", self.where, exc)
            return
        except StorageError:
            await self.close()
            raise
        await self._abort_stale_uploads()
        log.info("storage ready backend=s3 where=%s", self.where)

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._client = None

    async def _abort_stale_uploads(self) -> None:
        cutoff = dt.datetime.now(dt.UTC) - STALE_UPLOAD
        try:
            with self._converted("list-multipart-uploads"):
                paginator = self.client.get_paginator("list_multipart_uploads")
                async for page in paginator.paginate(
                    Bucket=self.bucket, Prefix=f"{self.prefix}sha256/"
                ):
                    for upload in page.get("Uploads", []):
                        if upload["Initiated"] < cutoff:
                            await self.client.abort_multipart_upload(
                                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                            )
                            log.info("aborted stale upload key=%s", upload["Key"])
        except StorageError as exc:
            log.warning("could not clean stale uploads where=%s error=%s", self.where, exc)

    # -- the interface --------------------------------------------------------------------

    async def stat(self, digest: Digest) -> BlobStat:
        with self._converted("head", digest):
            head = await self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        return BlobStat(digest, int(head["ContentLength"]))

    @contextlib.asynccontextmanager
    async def open(
        self, digest: Digest, start: int = 0, length: int | None = None
    ) -> AsyncIterator[BlobReader]:
        if start != 0 or length is not None:
            # A ranged GET cannot say "empty range at the end" or "past the end" apart
            # from a missing blob reliably across servers: ask for the size first.
            size = (await self.stat(digest)).size
            count = check_range(digest, size, start, length)
            if count == 0:
                yield S3Reader(digest, size, start, 0, None)
                return
            ranged = f"bytes={start}-{start + count - 1}"
        else:
            ranged = ""
        with self._converted("get", digest):
            if ranged:
                resp = await self.client.get_object(
                    Bucket=self.bucket, Key=self.key(digest), Range=ranged
                )
            else:
                resp = await self.client.get_object(Bucket=self.bucket, Key=self.key(digest))
        body = resp["Body"]
        try:
            if ranged:
                total = int(str(resp.get("ContentRange", "")).rpartition("/")[2] or size)
            else:
                total = count = int(resp["ContentLength"])
            if int(resp["ContentLength"]) != count:
                raise StorageError(f"s3 sent {resp['ContentLength']} bytes, asked for {count}")
            yield S3Reader(digest, total, start, count, body)
        finally:
            body.close()

    async def write(
        self, digest: Digest, chunks: AsyncIterable[bytes], size: int | None = None
    ) -> BlobStat:
        stream = VerifyingStream(digest, chunks, size)
        key = self.key(digest)
        part: list[bytes] = []
        filled = 0
        upload_id: str | None = None
        etags: list[str] = []
        # One part uploads while the next fills: throughput of a pipe, memory of two parts.
        inflight: asyncio.Task[None] | None = None
        try:
            async for chunk in stream:
                part.append(chunk)
                filled += len(chunk)
                if filled < self.options.part_size:
                    continue
                if upload_id is None:
                    upload_id = await self._create_upload(key)
                if inflight is not None:
                    await inflight
                etags.append("")
                inflight = asyncio.create_task(
                    self._upload_part(key, upload_id, len(etags), PartBody(part), etags)
                )
                part, filled = [], 0
            if inflight is not None:
                await inflight
            stream.verify()
            if upload_id is None:
                with self._converted("put", digest):
                    await self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=PartBody(part).as_io()
                    )
            else:
                if part:
                    etags.append("")
                    await self._upload_part(key, upload_id, len(etags), PartBody(part), etags)
                await self._complete(key, upload_id, etags, digest)
        except BaseException:
            if inflight is not None and not inflight.done():
                inflight.cancel()
                with contextlib.suppress(BaseException):
                    await inflight
            if upload_id is not None:
                # Shielded: a cancelled write must still abort, or the parts linger (unseen).
                await asyncio.shield(self._abort(key, upload_id))
            raise
        log.debug(
            "stored backend=s3 digest=%s bytes=%d parts=%d", digest, stream.written, len(etags)
        )
        return BlobStat(digest, stream.written)

    async def delete(self, digest: Digest) -> None:
        await self.stat(digest)  # S3 deletes are silent about missing keys
        with self._converted("delete", digest):
            await self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    async def list(self, prefix: str = "") -> AsyncIterator[Digest]:
        check_prefix(prefix)
        base = f"{self.prefix}sha256/"
        with self._converted("list"):
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for obj in page.get("Contents", []):
                    try:
                        yield Digest(obj["Key"].removeprefix(base))
                    except InvalidInput:
                        continue

    # -- helpers --------------------------------------------------------------------------

    async def _create_upload(self, key: str) -> str:
        with self._converted("create-multipart-upload"):
            created = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        return created["UploadId"]

    async def _complete(
        self, key: str, upload_id: str, etags: Sequence[str], digest: Digest
    ) -> None:
        parts = [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, start=1)]
        with self._converted("complete-multipart-upload", digest):
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )

    async def _upload_part(
        self, key: str, upload_id: str, number: int, body: PartBody, etags: MutableSequence[str]
    ) -> None:
        with self._converted("upload-part"):
            part = await self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body.as_io(),
            )
        etags[number - 1] = part["ETag"]

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            with self._converted("abort-multipart-upload"):
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
        except StorageError as exc:
            log.warning("could not abort upload key=%s error=%s", key, exc)

    @contextlib.contextmanager
    def _converted(self, what: str, digest: Digest | None = None) -> Iterator[None]:
        """botocore and aiohttp errors → Eagle storage errors, naming the operation."""
        subject = f" of {digest}" if digest is not None else ""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            message = f"s3 {what}{subject} failed: {code} {error.get('Message', '')}".strip()
            if code in _NOT_FOUND or (status == 404 and code != "NoSuchBucket"):
                raise NotFound(f"{digest or what} is not in storage") from None
            if code == "NoSuchBucket":
                raise StorageError(f"s3 bucket {self.bucket!r} does not exist") from exc
            if code == "InvalidRange":
                raise RangeNotSatisfiable(message) from exc
            if code in _TRANSIENT or status >= 500:
                raise StorageUnavailable(message) from exc
            raise StorageError(message) from exc
        except NoCredentialsError as exc:
            raise StorageError(f"s3 {what}: no credentials configured ({self.where})") from exc
        except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StorageUnavailable(
                f"s3 {what}{subject}: {self.where} unreachable: {exc}"
            ) from exc

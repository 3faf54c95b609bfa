"""Preheating: bring every blob of an image into the cache before anyone pulls it.

An image reference is resolved at the origin (an index or manifest list is narrowed
to one platform, or to all), then its config and layers are fetched through the
normal path (p2p first) into the cache. A job runs on its own: the HTTP client
that started it may go away without stopping it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import platform as host
import time
from dataclasses import dataclass, field
from typing import Any

from eagle.agent.fetch import BlobFetcher, BlobRequest
from eagle.core.digest import Digest, check_repository
from eagle.core.errors import EagleError, InvalidInput, OriginError, OriginStatus
from eagle.registry.api import MAX_MANIFEST_BYTES, check_reference
from eagle.registry.client import Origin, OriginClient
from eagle.registry.manifests import ACCEPT, IMAGE_TYPES, INDEX_TYPES, blobs_of
from eagle.utils.tasks import TaskSet

log = logging.getLogger(__name__)

CONCURRENT_BLOBS = 4
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class ImageRef:
    """``[REGISTRY/]REPO[:TAG|@DIGEST]``; no registry means the agent's default origin."""

    registry: str | None
    repo: str
    reference: str

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Docker's rules: a first component with ``.`` or ``:`` (or ``localhost``) is a host."""
        text = text.strip()
        name, at, digest = text.partition("@")
        reference = digest if at else "latest"
        slash = name.rfind("/")
        colon = name.rfind(":")
        if not at and colon > slash:
            name, reference = name[:colon], name[colon + 1 :]
        elif at and colon > slash:
            name = name[:colon]  # NAME:TAG@DIGEST: the digest wins
        first, sep, rest = name.partition("/")
        registry = None
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, name = first, rest
        if not name:
            raise InvalidInput(f"not an image reference: {text[:200]!r}")
        return cls(registry, check_repository(name), check_reference(reference))

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        prefix = f"{self.registry}/" if self.registry else ""
        return f"{prefix}{self.repo}{sep}{self.reference}"


@dataclass(frozen=True)
class Platform:
    """``os/arch[/variant]``, as in an image index."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidInput(f"platform must be os/arch[/variant], got {text[:100]!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def of_host(cls) -> Platform:
        """This machine's platform, in Go's names (what ``docker pull`` would choose)."""
        machine = host.machine().lower()
        return cls(host.system().lower(), _MACHINES.get(machine, machine))

    def matches(self, described: dict[str, Any]) -> bool:
        if (described.get("os"), described.get("architecture")) != (self.os, self.architecture):
            return False
        return self.variant is None or described.get("variant") == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def describe(platform: dict[str, Any] | None) -> str:
    """An index entry's platform as ``os/arch[/variant]``."""
    if not platform:
        return "unknown"
    parts = (platform.get("os"), platform.get("architecture"), platform.get("variant"))
    return "/".join(str(p) for p in parts if p)


def select_manifests(
    index: dict[str, Any], wanted: Platform | None, image: str
) -> list[dict[str, Any]]:
    """The index entries to preheat: those of ``wanted``, or every image (``None``)."""
    entries = [
        m
        for m in index.get("manifests", [])
        if isinstance(m, dict) and m.get("mediaType", IMAGE_TYPES[0]) in IMAGE_TYPES
    ]
    if wanted is None:
        chosen = entries
    else:
        chosen = [m for m in entries if wanted.matches(m.get("platform") or {})]
        # One entry per platform is normal; take the first, like a runtime does.
        chosen = chosen[:1]
    if not chosen:
        have = ", ".join(sorted({describe(m.get("platform")) for m in entries})) or "none"
        raise InvalidInput(f"{image} has no manifest for {wanted}; it has: {have}")
    return chosen


@dataclass
class PreheatJob:
    """One preheat: its plan, its progress and its outcome, with an event log for watchers."""

    image: ImageRef
    platform: Platform | None
    blobs: dict[Digest, int] = field(default_factory=dict)
    done: set[Digest] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)
    error: EagleError | None = None
    started: float = field(default_factory=time.monotonic)
    resolved: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def total(self) -> int:
        return sum(self.blobs.values())


class Preheater:
    """Runs preheat jobs against the agent's origins and blob fetcher."""

    def __init__(self, fetcher: BlobFetcher, origins: OriginClient) -> None:
        self.fetcher = fetcher
        self.origins = origins
        self._tasks = TaskSet("preheat")

    async def close(self) -> None:
        await self._tasks.close()

    def start(self, image: ImageRef, platform: Platform | None) -> PreheatJob:
        """Start a job (``platform=None``: every platform of an index)."""
        job = PreheatJob(image, platform)
        self._tasks.spawn(self._run(job), name=f"job:{image}")
        return job

    def progress(self, job: PreheatJob) -> dict[str, Any]:
        """Bytes of the job's blobs on this host now."""
        done = sum(min(size, self.fetcher.progress(d)) for d, size in job.blobs.items())
        return {
            "event": "progress",
            "bytes": done,
            "total": job.total,
            "blobs_done": len(job.done),
            "blobs": len(job.blobs),
        }

    async def _run(self, job: PreheatJob) -> None:
        try:
            origin = self.origins.origins.resolve(job.image.registry)
            manifests = await self._resolve(job, origin)
            job.events.append(
                {
                    "event": "resolved",
                    "image": str(job.image),
                    "manifests": manifests,
                    "blobs": len(job.blobs),
                    "total": job.total,
                }
            )
            capacity = self.fetcher.cache.capacity
            if capacity and job.total > capacity:
                raise InvalidInput(
                    f"{job.image} needs {job.total} bytes but the cache holds {capacity}"
                    " (cache-size): preheating it would evict its own layers"
                )
            job.resolved.set()
            log.info(
                "preheat started image=%s platform=%s blobs=%d bytes=%d",
                job.image,
                job.platform or "all",
                len(job.blobs),
                job.total,
            )
            limit = asyncio.Semaphore(CONCURRENT_BLOBS)
            await asyncio.gather(*(self._blob(job, origin, d, limit) for d in job.blobs))
            seconds = time.monotonic() - job.started
            job.events.append({"event": "done", "bytes": job.total, "seconds": round(seconds, 3)})
            log.info("preheat done image=%s bytes=%d seconds=%.2f", job.image, job.total, seconds)
        except EagleError as exc:
            job.error = exc
            job.events.append({"event": "error", "message": str(exc)})
            log.warning("preheat failed image=%s error=%s", job.image, exc)
        finally:
            job.resolved.set()
            job.finished.set()

    async def _blob(
        self, job: PreheatJob, origin: Origin, digest: Digest, limit: asyncio.Semaphore
    ) -> None:
        async with limit:
            started = time.monotonic()
            blob = await self.fetcher.get_file(BlobRequest(origin, job.image.repo, digest, {}))
            job.done.add(digest)
            job.events.append(
                {
                    "event": "blob",
                    "digest": str(digest),
                    "bytes": blob.size,
                    "source": blob.source,
                    "seconds": round(time.monotonic() - started, 3),
                }
            )

    async def _resolve(self, job: PreheatJob, origin: Origin) -> list[dict[str, str]]:
        """Fill ``job.blobs``; return the manifests chosen (digest and platform)."""
        image = job.image
        media_type, doc, digest = await self._manifest(origin, image.repo, image.reference)
        if media_type in INDEX_TYPES:
            wanted = job.platform
            entries = select_manifests(doc, wanted, str(image))
            chosen = []
            for entry in entries:
                child = str(Digest.parse(str(entry.get("digest", ""))))
                child_type, child_doc, _ = await self._manifest(origin, image.repo, child)
                if child_type not in IMAGE_TYPES:
                    raise OriginError(f"{image}: index entry {child} is a {child_type}")
                job.blobs.update(blobs_of(child_doc))
                chosen.append({"digest": child, "platform": describe(entry.get("platform"))})
            return chosen
        if media_type in IMAGE_TYPES:
            job.blobs.update(blobs_of(doc))
            return [{"digest": digest, "platform": "single"}]
        raise OriginError(f"{image}: unsupported manifest type {media_type!r}")

    async def _manifest(
        self, origin: Origin, repo: str, reference: str
    ) -> tuple[str, dict[str, Any], str]:
        path = f"/v2/{repo}/manifests/{reference}"
        async with self.origins.request(origin, "GET", path, {"Accept": ACCEPT}) as resp:
            body = await resp.content.read(MAX_MANIFEST_BYTES + 1)
            if resp.status != 200:
                raise OriginStatus(
                    f"origin {origin.host} answered {resp.status} for {repo}:{reference}",
                    resp.status,
                )
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if len(body) > MAX_MANIFEST_BYTES:
            raise OriginError(f"manifest {repo}:{reference} exceeds {MAX_MANIFEST_BYTES} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and reference != digest:
            raise OriginError(f"manifest {repo}@{reference} hashes to {digest}")
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise OriginError(f"manifest {repo}:{reference} is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise OriginError(f"manifest {repo}:{reference} is not a JSON object")
        return str(doc.get("mediaType") or media_type), doc, digest

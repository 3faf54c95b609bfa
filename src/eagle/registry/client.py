"""Talking to origin registries: which ones we may use, and streaming their blobs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from eagle.core.digest import Digest
from eagle.core.errors import ConfigError, NotAllowed, OriginError, OriginStatus

log = logging.getLogger(__name__)

CHUNK = 1 << 16
# Headers a client's request may carry to the origin. Anything else (Host,
# Connection, proxy headers) belongs to the hop between the client and us.
FORWARD_REQUEST_HEADERS = ("Accept", "Authorization", "User-Agent", "If-None-Match", "Range")


@dataclass(frozen=True)
class Origin:
    """An origin registry Eagle may fetch from: ``scheme://host[:port]``."""

    url: str

    @classmethod
    def parse(cls, text: str) -> Origin:
        parts = urlsplit(text.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(f"origin must look like https://host[:port], got {text!r}")
        return cls(f"{parts.scheme}://{parts.netloc.lower()}")

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def blob_url(self, repo: str, digest: Digest) -> str:
        return f"{self.url}/v2/{repo}/blobs/{digest}"


class OriginSet:
    """The configured origins; the only registries Eagle will contact (no open proxy)."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ConfigError("config key 'origin': at least one origin registry is required")
        self.origins = [Origin.parse(u) for u in urls]

    @property
    def default(self) -> Origin:
        return self.origins[0]

    def resolve(self, name: str | None) -> Origin:
        """Find an origin by URL or by host (containerd's ``?ns=`` names a host)."""
        if not name:
            return self.default
        for origin in self.origins:
            if name in (origin.url, origin.host):
                return origin
        with contextlib.suppress(ConfigError):
            wanted = Origin.parse(name)
            for origin in self.origins:
                if origin == wanted:
                    return origin
        raise NotAllowed(f"origin {name[:100]!r} is not configured")


def forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: headers[k] for k in FORWARD_REQUEST_HEADERS if k in headers}


class OriginClient:
    """HTTP access to origins, with one connection pool for the component."""

    def __init__(
        self, origins: OriginSet, connect_timeout: float = 5.0, read_timeout: float = 60.0
    ) -> None:
        self.origins = origins
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @contextlib.asynccontextmanager
    async def request(
        self, origin: Origin, method: str, path_qs: str, headers: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request to the origin; transport failures become :class:`OriginError`."""
        url = origin.url + path_qs
        try:
            async with self.http.request(
                method, url, headers=dict(headers), allow_redirects=True
            ) as resp:
                yield resp
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OriginError(f"origin {origin.host} failed: {exc!r}") from exc

    @contextlib.asynccontextmanager
    async def open_blob(
        self, origin: Origin, repo: str, digest: Digest, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A 200 response streaming the blob; any other status raises :class:`OriginStatus`."""
        path = f"/v2/{repo}/blobs/{digest}"
        async with self.request(origin, "GET", path, headers or {}) as resp:
            if resp.status != 200:
                challenge = resp.headers.get("WWW-Authenticate")
                raise OriginStatus(
                    f"origin {origin.host} answered {resp.status} for {repo}@{digest}",
                    resp.status,
                    {"WWW-Authenticate": challenge} if challenge else None,
                )
            yield resp


async def iter_body(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The response body in chunks; a broken stream becomes :class:`OriginError`."""
    try:
        async for chunk in resp.content.iter_chunked(CHUNK):
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OriginError(f"origin stream broke: {exc!r}") from exc

"""Talking to origin registries: which ones we may use, and streaming their blobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from eagle.core.digest import Digest
from eagle.core.errors import ConfigError, NotAllowed, OriginError, OriginStatus
from eagle.registry.auth import OriginAuth, scope_for_path
from eagle.utils.config import HttpURL
from eagle.utils.http import body_chunks

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# Headers a client's request may carry to the origin. Anything else (Host,
# Connection, proxy headers) belongs to the hop between the client and us.
FORWARD_REQUEST_HEADERS = ("Accept", "Authorization", "User-Agent", "If-None-Match", "Range")
# Answers worth another try: the origin (or its object store) is overloaded or restarting.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0


class OriginConfig(BaseModel):
    """One origin registry: where it is and how to reach it.

    In YAML, ``origin:`` takes a list of URLs or of mappings with these keys; on the
    command line ``--origin URL`` gives just the URL.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpURL
    ca_bundle: Path | None = Field(None, description="PEM file of CAs to trust for this origin")
    username: str | None = Field(None, description="basic auth, or the Bearer token flow's user")
    password: str | None = None
    insecure_skip_verify: bool = Field(False, description="do not verify TLS (tests only)")

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, value: object) -> object:
        return {"url": value} if isinstance(value, str) else value


OriginList = Annotated[list[OriginConfig], Field(min_length=1)]
"""The ``origin`` config key: URLs or :class:`OriginConfig` mappings, at least one."""


@dataclass(frozen=True)
class Origin:
    """An origin registry Eagle may fetch from: ``scheme://host[:port]`` plus how to reach it."""

    url: str
    config: OriginConfig | None = field(default=None, compare=False, hash=False)

    @classmethod
    def parse(cls, text: str, config: OriginConfig | None = None) -> Origin:
        parts = urlsplit(text.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(f"origin must look like https://host[:port], got {text!r}")
        return cls(f"{parts.scheme}://{parts.netloc.lower()}", config)

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def blob_url(self, repo: str, digest: Digest) -> str:
        return f"{self.url}/v2/{repo}/blobs/{digest}"

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What aiohttp should verify this origin's TLS with (``True``: system defaults)."""
        if self.config is None:
            return True
        if self.config.insecure_skip_verify:
            return False
        if self.config.ca_bundle is not None:
            try:
                # The bundle adds to the system's CAs: a private registry often redirects
                # blob GETs to an object store with a public certificate.
                context = ssl.create_default_context()
                context.load_verify_locations(cafile=str(self.config.ca_bundle))
                return context
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"origin {self.host}: bad ca-bundle: {exc}") from exc
        return True


class OriginSet:
    """The configured origins; the only registries Eagle will contact (no open proxy)."""

    def __init__(self, origins: Sequence[str | OriginConfig]) -> None:
        if not origins:
            raise ConfigError("config key 'origin': at least one origin registry is required")
        configs = [OriginConfig(url=o) if isinstance(o, str) else o for o in origins]
        self.origins = [Origin.parse(c.url, c) for c in configs]

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
    """The end-to-end headers a client's request passes on to the origin.

    Repeated headers are joined with commas (RFC 9110 5.3): docker sends one ``Accept``
    line per manifest type, and keeping only the first makes registries refuse OCI images.
    """
    getall = getattr(headers, "getall", None)
    out = {}
    for key in FORWARD_REQUEST_HEADERS:
        if key in headers:
            out[key] = ", ".join(getall(key)) if getall is not None else headers[key]
    return out


class OriginClient:
    """HTTP access to origins, with one connection pool for the component.

    ``retries``: how often an idempotent request is repeated after a transport error or
    a 429/5xx answer, waiting ``backoff * 2**n`` seconds (or the origin's Retry-After, up to
    :data:`MAX_RETRY_AFTER`). ``auth``: answers 401 challenges with the credentials
    configured per origin, for requests made with ``credentials=True`` (the seeder's
    own); requests carrying a client's ``Authorization`` pass it through untouched.
    """

    def __init__(
        self,
        origins: OriginSet,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        *,
        retries: int = 0,
        backoff: float = 0.5,
        auth: OriginAuth | None = None,
    ) -> None:
        self.origins = origins
        self.retries = retries
        self.backoff = backoff
        self.auth = auth
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._http: aiohttp.ClientSession | None = None
        self._ssl: dict[str, ssl.SSLContext | bool] = {}

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            # No cookie jar: cookies an origin sets in answer to one client's request must
            # not ride along on another client's.
            self._http = aiohttp.ClientSession(
                timeout=self._timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._http

    def _ssl_for(self, origin: Origin) -> ssl.SSLContext | bool:
        # Loading a CA bundle costs milliseconds: once per origin, not per request.
        if origin.url not in self._ssl:
            self._ssl[origin.url] = origin.ssl_context()
        return self._ssl[origin.url]

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @contextlib.asynccontextmanager
    async def request(
        self,
        origin: Origin,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        *,
        allow_redirects: bool = True,
        credentials: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request to the origin; transport failures become :class:`OriginError`.

        Redirects to another host are followed without the ``Authorization`` header
        (aiohttp drops it): credentials only ever reach the origin. Transient failures
        are retried (see the class), and with ``credentials`` a 401 is answered.
        """
        resp = await self._send(origin, method, path_qs, headers, allow_redirects, credentials)
        try:
            yield resp
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OriginError(f"origin {origin.host} failed: {exc!r}") from exc
        finally:
            resp.release()

    async def _send(
        self,
        origin: Origin,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        allow_redirects: bool,
        credentials: bool,
    ) -> aiohttp.ClientResponse:
        url = origin.url + path_qs
        sending = dict(headers)
        auth = self.auth if credentials and "Authorization" not in sending else None
        scope = scope_for_path(urlsplit(path_qs).path)
        if auth is not None and (cached := auth.cached(origin, scope)) is not None:
            sending["Authorization"] = cached
        idempotent = method in ("GET", "HEAD")
        attempt = 0
        answered_challenge = False
        while True:
            try:
                resp = await self.http.request(
                    method,
                    url,
                    headers=sending,
                    allow_redirects=allow_redirects,
                    ssl=self._ssl_for(origin),
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                if idempotent and attempt < self.retries:
                    attempt += 1
                    await self._wait(origin, attempt, None, repr(exc))
                    continue
                raise OriginError(f"origin {origin.host} failed: {exc!r}") from exc
            if (
                resp.status == 401
                and auth is not None
                and not answered_challenge
                and resp.url.host == urlsplit(url).hostname
            ):
                answered_challenge = True
                if "Authorization" in sending:
                    auth.forget(origin, scope)  # a cached credential went stale
                challenge = resp.headers.get("WWW-Authenticate")
                value = await auth.answer(
                    origin, challenge, scope, self.http, self._ssl_for(origin)
                )
                if value is not None:
                    resp.release()
                    sending["Authorization"] = value
                    continue
            if resp.status in RETRY_STATUSES and idempotent and attempt < self.retries:
                attempt += 1
                retry_after = resp.headers.get("Retry-After")
                resp.release()
                await self._wait(origin, attempt, retry_after, f"status {resp.status}")
                continue
            return resp

    async def _wait(self, origin: Origin, attempt: int, retry_after: str | None, why: str) -> None:
        delay = self.backoff * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
        if retry_after is not None and retry_after.strip().isdigit():
            delay = min(float(retry_after), MAX_RETRY_AFTER)
        log.info(
            "origin retry origin=%s attempt=%d of=%d in=%.2fs reason=%s",
            origin.host,
            attempt,
            self.retries,
            delay,
            why,
        )
        await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def open_blob(
        self,
        origin: Origin,
        repo: str,
        digest: Digest,
        headers: Mapping[str, str] | None = None,
        *,
        credentials: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A 200 response streaming the blob; any other status raises :class:`OriginStatus`.

        ``credentials``: authenticate with what is configured for the origin (seeders).
        """
        path = f"/v2/{repo}/blobs/{digest}"
        async with self.request(
            origin, "GET", path, headers or {}, credentials=credentials
        ) as resp:
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
    async for chunk in body_chunks(resp, CHUNK, lambda msg: OriginError(f"origin {msg}")):
        yield chunk

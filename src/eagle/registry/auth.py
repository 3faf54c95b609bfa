"""Authenticating to origin registries with the credentials configured for each host.

Registries answer an unauthenticated request with ``401`` and a challenge:

* ``WWW-Authenticate: Basic realm="..."`` -- send ``Authorization: Basic`` with the
  configured user and password (htpasswd-protected Docker Distribution);
* ``WWW-Authenticate: Bearer realm="https://auth…/token",service="…",scope="…"`` --
  the Docker token flow (Docker Hub, Harbor, GitLab, ...): GET the realm with
  ``service`` and ``scope`` (and basic credentials, if configured; anonymously
  otherwise), take ``token`` (or ``access_token``) from the JSON answer, and retry
  with ``Authorization: Bearer <token>``.

Tokens are cached per origin and scope until shortly before they expire, and an
origin known to want Basic gets it up front, so a pull costs one 401 per origin,
not one per blob. Passwords go to a token realm only over https or on the origin's
own host name: never in clear text to a third host.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import aiohttp

from eagle.core.errors import OriginError, OriginStatus

if TYPE_CHECKING:
    from eagle.registry.client import Origin

log = logging.getLogger(__name__)

DEFAULT_TOKEN_SECONDS = 60.0
# Refresh a little early: a token that expires in flight costs a 401 and a retry.
EXPIRY_MARGIN_SECONDS = 10.0
MAX_TOKEN_RESPONSE = 1 << 20
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str  # lower case: "basic" or "bearer"
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        """``Bearer realm="x",service="y"`` → Challenge; None for an empty or odd header."""
        scheme, _, rest = header.strip().partition(" ")
        if not scheme:
            return None
        params = {
            m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
            for m in _PARAM.finditer(rest)
        }
        params = {k: v.replace('\\"', '"') for k, v in params.items()}
        return cls(scheme.lower(), params)


def scope_for_path(path: str) -> str | None:
    """The pull scope a ``/v2/<name>/(blobs|manifests|tags)/...`` request needs."""
    match = re.match(r"^/v2/(.+)/(?:blobs|manifests|tags)/", path)
    return f"repository:{match.group(1)}:pull" if match else None


class OriginAuth:
    """Credentials per origin host and the tokens they earned; one instance per component."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._basic_origins: set[str] = set()

    def cached(self, origin: Origin, scope: str | None) -> str | None:
        """An ``Authorization`` value to send up front, if we hold a valid one."""
        if origin.url in self._basic_origins:
            return _basic(origin)
        token = self._tokens.get((origin.url, scope or ""))
        if token is not None and token[1] > time.monotonic():
            return token[0]
        return None

    def forget(self, origin: Origin, scope: str | None) -> None:
        """Drop a cached credential the origin just refused."""
        self._tokens.pop((origin.url, scope or ""), None)
        self._basic_origins.discard(origin.url)

    async def answer(
        self,
        origin: Origin,
        header: str | None,
        scope: str | None,
        http: aiohttp.ClientSession,
        ssl_context: ssl.SSLContext | bool,
    ) -> str | None:
        """The ``Authorization`` value that answers this 401 challenge, or None if we have none.

        Raises :class:`OriginStatus` (401) when a token server refuses us and
        :class:`OriginError` when it cannot be reached or answers nonsense.
        """
        challenge = Challenge.parse(header or "")
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            value = _basic(origin)
            if value is not None:
                self._basic_origins.add(origin.url)
            return value
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            log.warning(
                "unsupported auth challenge origin=%s scheme=%s", origin.host, challenge.scheme
            )
            return None
        scope = challenge.params.get("scope") or scope
        token, lifetime = await self._fetch_token(origin, challenge, scope, http, ssl_context)
        value = f"Bearer {token}"
        self._tokens[(origin.url, scope or "")] = (
            value,
            time.monotonic() + max(0.0, lifetime - EXPIRY_MARGIN_SECONDS),
        )
        return value

    async def _fetch_token(
        self,
        origin: Origin,
        challenge: Challenge,
        scope: str | None,
        http: aiohttp.ClientSession,
        ssl_context: ssl.SSLContext | bool,
    ) -> tuple[str, float]:
        realm = challenge.params["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise OriginError(f"origin {origin.host}: token realm {realm[:200]!r} is not a URL")
        query = {"service": challenge.params.get("service", "")}
        if scope:
            query["scope"] = scope
        url = f"{realm}{'&' if parts.query else '?'}{urlencode(query)}"
        headers = {}
        basic = _basic(origin)
        same_host = parts.hostname == urlsplit(origin.url).hostname
        if basic is not None and (parts.scheme == "https" or same_host):
            headers["Authorization"] = basic
        elif basic is not None:
            log.warning(
                "not sending credentials to a plain-http token realm origin=%s realm=%s",
                origin.host,
                realm,
            )
        try:
            async with http.get(url, headers=headers, ssl=ssl_context) as resp:
                body = await resp.content.read(MAX_TOKEN_RESPONSE)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OriginError(
                f"origin {origin.host}: token server {realm} failed: {exc!r}"
            ) from exc
        if status != 200:
            raise OriginStatus(
                f"origin {origin.host}: token server {realm} answered {status}"
                + (" (check the configured username and password)" if basic else ""),
                401 if status in (401, 403) else 502,
            )
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or DEFAULT_TOKEN_SECONDS)
        except (ValueError, AttributeError, TypeError) as exc:
            raise OriginError(f"origin {origin.host}: token server sent no JSON token") from exc
        if not isinstance(token, str) or not token:
            raise OriginError(f"origin {origin.host}: token server sent no token")
        log.info(
            "origin token obtained origin=%s scope=%s seconds=%.0f", origin.host, scope, lifetime
        )
        return token, lifetime


def _basic(origin: Origin) -> str | None:
    config = origin.config
    if config is None or config.username is None:
        return None
    raw = f"{config.username}:{config.password or ''}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")

"""No widening of access: serve a blob only to a client the origin would serve it to.

A blob in the agent's cache (or in the swarm) may have been brought in by another
client with other credentials. Before serving it, the agent asks the origin a
``HEAD /v2/<repo>/blobs/<digest>`` with this client's own ``Authorization``
header. Positive answers are remembered briefly; refusals never are, so a client
that has just logged in can retry at once.

The cache key holds the digest as well as the repository: a registry answers a
blob request only when the blob belongs to the named repository, so a client
allowed to read repository A must not get a private blob of repository B by
asking for it under A's name.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from eagle.core.digest import Digest
from eagle.core.errors import OriginError, OriginStatus
from eagle.registry.client import Origin, OriginClient

log = logging.getLogger(__name__)

# Statuses with which an origin says "yes, you may have it": the blob itself, or a
# redirect to where it is stored (whose URL the registry only hands to allowed clients).
_ALLOWED = frozenset({200, 301, 302, 303, 307, 308})
_PASSED_ON = ("WWW-Authenticate", "Retry-After")


def credential_fingerprint(headers: Mapping[str, str]) -> str:
    """A hash of the client's ``Authorization`` header ("" when it sent none).

    Only the hash is kept, so the cache never holds a usable credential.
    """
    auth = headers.get("Authorization")
    if not auth:
        return ""
    return hashlib.sha256(auth.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class _Key:
    origin: str
    repo: str
    digest: Digest
    credential: str


class AccessCheck:
    """Asks the origin whether a client may read a blob; remembers yeses for ``ttl`` seconds."""

    def __init__(
        self,
        origins: OriginClient,
        ttl: float,
        registry: CollectorRegistry,
        max_entries: int = 100_000,
    ) -> None:
        self.origins = origins
        self.ttl = ttl
        self.max_entries = max_entries
        self._allowed: OrderedDict[_Key, float] = OrderedDict()
        self.checks = Counter(
            "eagle_agent_access_checks",
            "Blob access checks against the origin, by result",
            ["result"],
            registry=registry,
        )

    async def check(
        self, origin: Origin, repo: str, digest: Digest, headers: Mapping[str, str]
    ) -> None:
        """Return if the origin would serve the blob to a client sending ``headers``.

        Otherwise raise :class:`OriginStatus` carrying the origin's status and its
        ``WWW-Authenticate`` challenge (so the client can log in and retry), or
        :class:`OriginError` when the origin cannot be asked.
        """
        key = _Key(origin.url, repo, digest, credential_fingerprint(headers))
        now = time.monotonic()
        until = self._allowed.get(key)
        if until is not None and until > now:
            self.checks.labels("cached").inc()
            return
        self._allowed.pop(key, None)
        auth = {"Authorization": headers["Authorization"]} if "Authorization" in headers else {}
        path = f"/v2/{repo}/blobs/{digest}"
        try:
            async with self.origins.request(
                origin, "HEAD", path, auth, allow_redirects=False
            ) as resp:
                status = resp.status
                passed = {k: resp.headers[k] for k in _PASSED_ON if k in resp.headers}
        except OriginError:
            self.checks.labels("error").inc()
            raise
        if status in _ALLOWED:
            self.checks.labels("allowed").inc()
            self._remember(key, now + self.ttl)
            return
        if status in (401, 403, 404, 429):
            self.checks.labels("denied").inc()
            log.info(
                "access denied by origin origin=%s repo=%s digest=%s status=%d credentials=%s",
                origin.host,
                repo,
                digest,
                status,
                "yes" if auth else "no",
            )
            raise OriginStatus(
                f"origin {origin.host} answered {status} for {repo}@{digest}", status, passed
            )
        self.checks.labels("error").inc()
        raise OriginError(
            f"origin {origin.host} answered {status} when asked whether this client may read"
            f" {repo}@{digest}"
        )

    def _remember(self, key: _Key, until: float) -> None:
        self._allowed[key] = until
        self._allowed.move_to_end(key)
        while len(self._allowed) > self.max_entries:
            self._allowed.popitem(last=False)

"""HTTP(S) forward proxy mode: what to intercept, what to tunnel, and where each request goes.

Runtimes started with ``HTTP_PROXY``/``HTTPS_PROXY`` pointing at the agent send

* ``CONNECT host:port`` for HTTPS registries. Hosts matching a proxy rule are
  intercepted: the agent answers the TLS handshake itself with a certificate for
  that host signed by the Eagle CA (:mod:`eagle.ca`) and reads the requests
  inside. Every other host is tunnelled, byte for byte (:mod:`eagle.agent.connect`).
* absolute-form requests (``GET http://host/path``) for plain-HTTP registries.

Of the requests the agent reads, blob GETs and HEADs for configured origins go
through the normal mirror path (access check, cache, swarm, origin); everything
else (manifests, tokens, pushes, hosts no origin names) is relayed unchanged
(:mod:`eagle.agent.relay`). A host matching a rule but not configured as an
origin still works, only without p2p, and says so in the log.

Rules are regular expressions matched in full against ``host`` and against
``host:port``; with none, exactly the configured origins are intercepted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from eagle.agent.relay import Relay, text_response
from eagle.agent.routing import ORIGIN_KEY
from eagle.ca import CaFiles, CertificateAuthority, LeafContexts
from eagle.core.errors import InvalidInput, NotAllowed
from eagle.registry.client import Origin, OriginSet
from eagle.registry.errors import Handler
from eagle.utils.net import HostPort
from eagle.utils.tasks import TaskSet

if TYPE_CHECKING:
    from eagle.agent.connect import ProxyListener

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
_BLOB_PATH = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")
_HOSTNAME = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ProxyTarget:
    """The host a proxy client wants to reach, and over what."""

    scheme: str  # "https" for CONNECT, "http" for absolute-form requests
    host: str  # lower case; an IPv6 address without brackets
    port: int

    @property
    def authority(self) -> str:
        """``host:port``, with brackets around an IPv6 address."""
        return str(HostPort(self.host, self.port))

    @property
    def url(self) -> str:
        """``scheme://host:port``."""
        return f"{self.scheme}://{self.authority}"


def parse_authority(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) → ``(host, port)``; malformed → :class:`InvalidInput`."""
    shown = text[:100]
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None
        if not sep or (rest and port_text is None):
            raise InvalidInput(f"malformed proxy target {shown!r}")
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError(host)
        except ValueError:
            raise InvalidInput(f"malformed IPv6 address in proxy target {shown!r}") from None
    else:
        host, sep, port_text_or_none = text.rpartition(":")
        if not sep:
            host, port_text = text, None
        else:
            port_text = port_text_or_none
        if not _HOSTNAME.fullmatch(host) and not _is_ipv4(host):
            raise InvalidInput(f"malformed host in proxy target {shown!r}")
    if port_text is None:
        if default_port is None:
            raise InvalidInput(f"proxy target {shown!r} must be host:port")
        return host.lower(), default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise InvalidInput(f"malformed port in proxy target {shown!r}")
    return host.lower(), int(port_text)


def _is_ipv4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def parse_connect(head: bytes) -> ProxyTarget:
    """The target of a ``CONNECT host:port HTTP/1.x`` request head."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != "CONNECT" or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise InvalidInput(f"malformed CONNECT request line {line[:100]!r}")
    host, port = parse_authority(parts[1])
    return ProxyTarget("https", host, port)


def parse_absolute(raw_path: str) -> tuple[ProxyTarget, str]:
    """An absolute-form request target → ``(target, path?query)``; only ``http://``."""
    parts = urlsplit(raw_path)
    scheme = parts.scheme.lower()
    if scheme == "https":
        raise InvalidInput("send https:// requests through CONNECT, not as absolute-form")
    if scheme != "http":
        raise InvalidInput(f"this proxy serves http and https only, not {scheme[:20]!r}")
    if "@" in parts.netloc:
        raise InvalidInput("credentials in the proxy request URL are refused")
    host, port = parse_authority(parts.netloc, DEFAULT_PORTS[scheme])
    path_qs = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ProxyTarget(scheme, host, port), path_qs


def origin_for(origins: OriginSet, target: ProxyTarget) -> Origin | None:
    """The configured origin at exactly this scheme, host and port, if any."""
    for origin in origins.origins:
        parts = urlsplit(origin.url)
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        if (parts.scheme, (parts.hostname or "").lower(), port) == (
            target.scheme,
            target.host,
            target.port,
        ):
            return origin
    return None


class ProxyRules:
    """Which hosts are intercepted: rule matches, or (no rules) the configured origins."""

    def __init__(self, patterns: Sequence[str], origins: OriginSet) -> None:
        self.patterns = [re.compile(p) for p in patterns]
        self.origins = origins

    def intercepts(self, target: ProxyTarget) -> bool:
        """True when the proxy should read (not tunnel) this client's traffic."""
        if not self.patterns:
            return origin_for(self.origins, target) is not None
        names = (target.host, target.authority)
        return any(p.fullmatch(name) for p in self.patterns for name in names)


def refuse_local(address: str) -> None:
    """Raise :class:`NotAllowed` for addresses a proxy must not open to its clients."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast:
        raise NotAllowed(f"the proxy does not connect to {address}")


class ForwardProxy:
    """The agent's proxy mode: decisions, TLS interception state, and the request middleware."""

    def __init__(
        self,
        *,
        enabled: bool,
        rules: Sequence[str],
        origins: OriginSet,
        ca: CaFiles,
        connect_timeout: float,
        read_timeout: float,
        registry: CollectorRegistry,
    ) -> None:
        self.enabled = enabled
        self.rules = ProxyRules(rules, origins)
        self.origins = origins
        self.ca = ca
        self.connect_timeout = connect_timeout
        self.relay = Relay(connect_timeout, read_timeout)
        self.tasks = TaskSet("proxy")
        self._leaves: LeafContexts | None = None
        # Plain references, pruned as connections close: uvloop's transports take no weakrefs.
        self._intercepted: dict[asyncio.BaseTransport, ProxyTarget] = {}
        self._ssl: dict[str, ssl.SSLContext | bool] = {}
        self._warned: set[str] = set()
        self.connections = Counter(
            "eagle_agent_proxy_connections",
            "CONNECT requests, by what the proxy did: intercept, tunnel or reject",
            ["action"],
            registry=registry,
        )
        self.requests = Counter(
            "eagle_agent_proxy_requests",
            "Proxied HTTP requests, by route: p2p (the mirror path) or relay",
            ["route"],
            registry=registry,
        )

    async def start(self) -> None:
        """Load the Eagle CA when proxy mode is on (a missing CA stops the agent here)."""
        if not self.enabled:
            return
        self._leaves = LeafContexts(CertificateAuthority.load(self.ca))
        log.info(
            "proxy mode on rules=%s ca=%s",
            [p.pattern for p in self.rules.patterns] or "configured origins",
            self.ca.cert,
        )

    async def close(self) -> None:
        await self.tasks.close()
        await self.relay.close()

    def listener(self, app: web.Application, listen: HostPort) -> ProxyListener:
        """The agent's listening socket: CONNECT handled here, the rest served by ``app``."""
        from eagle.agent.connect import ProxyListener

        return ProxyListener(app, listen, self)

    # -- CONNECT ---------------------------------------------------------------------------

    def leaf_context(self, host: str) -> ssl.SSLContext:
        """TLS server context for an intercepted host."""
        if self._leaves is None:
            raise RuntimeError("proxy not started")
        return self._leaves.context(host)

    def remember(self, transport: asyncio.BaseTransport, target: ProxyTarget) -> None:
        """Tie a decrypted connection to the host its CONNECT named."""
        for old in [t for t in self._intercepted if t.is_closing()]:
            del self._intercepted[old]
        self._intercepted[transport] = target

    async def tunnel_address(self, target: ProxyTarget) -> str:
        """Resolve a tunnel target; loopback and link-local destinations are refused.

        An agent reachable from other machines must not open this host's own
        services to them.
        """
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise OSError(f"{target.host} has no address")
        for address in addresses:
            refuse_local(address)
        return addresses[0]

    # -- HTTP requests ---------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Route proxied requests (absolute-form, or read from an intercepted TLS connection)."""
        transport = request.transport
        intercepted = self._intercepted.get(transport) if transport is not None else None
        raw = request.raw_path
        if intercepted is None and raw.startswith("/"):
            return await handler(request)  # a plain mirror request
        if intercepted is not None:
            target, path_qs, intercept = intercepted, raw, True
            if not raw.startswith("/"):
                path_qs = _path_of(raw)
        else:
            if not self.enabled:
                return text_response(
                    400,
                    "eagle: this agent is not an HTTP proxy (start it with --proxy)",
                    close=True,
                )
            try:
                target, path_qs = parse_absolute(raw)
            except InvalidInput as exc:
                self.requests.labels("rejected").inc()
                log.info("proxy request rejected target=%r error=%s", raw[:100], exc)
                return text_response(400, f"eagle proxy: {exc}", close=True)
            intercept = self.rules.intercepts(target)
        origin = origin_for(self.origins, target) if intercept else None
        if (
            origin is not None
            and request.method in ("GET", "HEAD")
            and _BLOB_PATH.match(request.path)
        ):
            request[ORIGIN_KEY] = origin
            self.requests.labels("p2p").inc()
            return await handler(request)
        if intercept and origin is None and target.authority not in self._warned:
            self._warned.add(target.authority)
            log.warning(
                "proxy rule matches host=%s but it is not a configured origin: relaying its"
                " requests without p2p (add it with --origin %s)",
                target.authority,
                target.url,
            )
        if origin is None:
            try:
                await self.tunnel_address(target)
            except NotAllowed as exc:
                self.requests.labels("rejected").inc()
                return text_response(403, f"eagle proxy: {exc}", close=True)
            except OSError as exc:
                return text_response(502, f"eagle proxy: cannot resolve {target.host}: {exc}")
        self.requests.labels("relay").inc()
        return await self.relay.forward(request, target.url + path_qs, self._ssl_for(origin))

    def _ssl_for(self, origin: Origin | None) -> ssl.SSLContext | bool:
        if origin is None:
            return True
        if origin.url not in self._ssl:
            self._ssl[origin.url] = origin.ssl_context()
        return self._ssl[origin.url]


def _path_of(raw: str) -> str:
    parts = urlsplit(raw)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

"""Passing a proxied HTTP request on to its target unchanged, both bodies streamed.

In proxy mode everything the agent does not serve itself (manifests, token
endpoints, pushes, hosts no rule intercepts) goes through here: same method,
path, headers and body, to the host the client named, and the answer back as it
came. Only hop-by-hop headers (RFC 9110 section 7.6.1) and the client's proxy
credentials stay behind; redirects are handed to the client, never followed, so
credentials go nowhere the client did not send them itself.
"""

from __future__ import annotations

import logging
import ssl

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiMapping

log = logging.getLogger(__name__)

CHUNK = 1 << 16
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # Set by the client library for the next hop, or answered by our own server.
        "host",
        "expect",
    }
)


def end_to_end(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """The headers without hop-by-hop ones, nor those the ``Connection`` header names."""
    items = list(headers.items())
    named = {
        token.strip().lower()
        for key, value in items
        if key.lower() == "connection"
        for token in value.split(",")
    }
    return CIMultiDict(
        (k, v) for k, v in items if k.lower() not in HOP_BY_HOP and k.lower() not in named
    )


def text_response(status: int, message: str, *, close: bool = False) -> web.Response:
    """A short plain-text answer for proxy clients (they are not registry API clients)."""
    response = web.Response(status=status, text=message + "\n")
    if close:
        # Input we refuse may leave the stream in an unknown state: end the connection.
        response.force_close()
    return response


class Relay:
    """Forwards requests with one connection pool and no cookie jar (clients never share state)."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=self._timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                # Never route our own upstream requests through a proxy from the environment:
                # it could be this very agent.
                trust_env=False,
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def forward(
        self, request: web.Request, url: str, ssl_context: ssl.SSLContext | bool = True
    ) -> web.StreamResponse:
        """Send ``request`` to ``url`` and stream the answer back to the client."""
        headers = end_to_end(request.headers)
        body = request.content if request.body_exists else None
        try:
            async with self.http.request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                ssl=ssl_context,
                # Send what the client sent, not what aiohttp would add on its own.
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                response.headers.extend(end_to_end(upstream.headers))
                await response.prepare(request)
                try:
                    async for chunk in upstream.content.iter_chunked(CHUNK):
                        await response.write(chunk)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # Too late for an error status: cut the connection so the client sees
                    # a truncated body, not a complete-looking one.
                    log.warning("relay broke mid-body url=%s error=%r", _safe(url), exc)
                    if request.transport is not None:
                        request.transport.close()
                    return response
                await response.write_eof()
                return response
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            log.warning("relay TLS failed url=%s error=%s", _safe(url), exc)
            return text_response(
                502,
                f"eagle proxy: cannot verify {_safe(url)}: {exc}; give this origin a ca-bundle",
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("relay failed url=%s error=%r", _safe(url), exc)
            return text_response(502, f"eagle proxy: cannot reach {_safe(url)}: {exc!r}")


def _safe(url: str) -> str:
    """The URL without its query (which may carry tokens), for logs and messages."""
    return url.partition("?")[0][:300]

"""A client for an agent's ``/v1`` operator API (used by ``eagle preheat`` and ``set-rate``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp

from eagle.core.errors import EagleError


class AgentApiError(EagleError):
    """An agent refused a request or could not be reached; the message says which and why."""


class AgentAdminClient:
    """Talks to one agent, ``http://host:port``; use as an async context manager."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Preheats take as long as the image takes: only connecting and each read are bounded.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout * 6)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentAdminClient:
        self._http = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("use AgentAdminClient as an async context manager")
        return self._http

    async def get_rate(self) -> dict[str, int]:
        """The agent's limits now: ``download_rate`` and ``upload_rate`` in bytes/s."""
        return _rates(await self._json("GET", "/v1/config/rate"))

    async def set_rate(
        self, download: int | str | None = None, upload: int | str | None = None
    ) -> dict[str, int]:
        """Change either limit (bytes/s or sizes like ``50M``); return both as now in force."""
        body = {
            k: v for k, v in (("download_rate", download), ("upload_rate", upload)) if v is not None
        }
        return _rates(await self._json("PUT", "/v1/config/rate", body))

    async def preheat(
        self, image: str, platform: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Start a preheat and yield its events until the last (``done`` or ``error``)."""
        body: dict[str, Any] = {"image": image}
        if platform:
            body["platform"] = platform
        try:
            async with self.http.post(f"{self.url}/v1/preheat", json=body) as resp:
                if resp.status != 200:
                    raise AgentApiError(f"{self.url}: {await _error_text(resp)}")
                async for line in resp.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentApiError(f"{self.url}: cannot reach the agent: {exc!r}") from exc
        except ValueError as exc:
            raise AgentApiError(f"{self.url}: garbled preheat event: {exc}") from exc

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with self.http.request(method, self.url + path, json=body) as resp:
                if resp.status != 200:
                    raise AgentApiError(f"{self.url}: {await _error_text(resp)}")
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentApiError(f"{self.url}: cannot reach the agent: {exc!r}") from exc


def _rates(body: Any) -> dict[str, int]:
    try:
        return {k: int(body[k]) for k in ("download_rate", "upload_rate")}
    except (KeyError, TypeError, ValueError) as exc:
        raise AgentApiError(f"unexpected answer about rates: {str(body)[:200]}") from exc


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    """The message of an agent's JSON error, or the start of whatever it sent."""
    raw = await resp.read()
    try:
        errors = json.loads(raw)["errors"]
        return f"{resp.status} {errors[0]['code']}: {errors[0]['message']}"
    except (ValueError, KeyError, IndexError, TypeError):
        return f"{resp.status}: {raw[:300].decode(errors='replace')}"

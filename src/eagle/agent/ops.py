"""Operator commands against running agents: ``eagle preheat`` and ``eagle agent set-rate``.

Each works on many agents at once and reports per agent; the exit status is
non-zero when any agent failed, and the message names the agent and the cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from eagle.agent.admin_client import AgentAdminClient, AgentApiError
from eagle.utils.net import parse_size


def _error(console: Console, message: str) -> None:
    # Messages quote image references and platforms: never read them as rich markup.
    console.print(message, style="red", markup=False, highlight=False)


def _human(rate: int) -> str:
    if not rate:
        return "unlimited"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if rate >= size:
            return f"{rate / size:.4g}{unit}/s"
    return f"{rate}B/s"


def preheat(
    image: str,
    agents: Sequence[str],
    platform: str | None,
    token: str | None,
    console: Console,
) -> int:
    """Preheat ``image`` on every agent at once, with a progress bar each; 0 if all succeeded."""
    return asyncio.run(_preheat_all(image, agents, platform, token, console))


async def _preheat_all(
    image: str, agents: Sequence[str], platform: str | None, token: str | None, console: Console
) -> int:
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        results = await asyncio.gather(
            *(_preheat_one(image, url, platform, token, progress) for url in agents)
        )
    failures = [r for r in results if r is not None]
    for message in failures:
        _error(console, f"eagle: preheat failed: {message}")
    if not failures:
        console.print(f"preheated {image} on {len(agents)} agent(s)", markup=False, highlight=False)
    return 1 if failures else 0


async def _preheat_one(
    image: str, url: str, platform: str | None, token: str | None, progress: Progress
) -> str | None:
    """Returns None on success, else what went wrong."""
    task: TaskID = progress.add_task(url, total=None)
    sources: dict[str, int] = {}
    try:
        async with AgentAdminClient(url, token) as client:
            async for event in client.preheat(image, platform):
                kind = event.get("event")
                if kind == "resolved":
                    progress.update(task, total=event["total"])
                elif kind == "progress":
                    progress.update(task, completed=event["bytes"], total=event["total"])
                elif kind == "blob":
                    sources[event["source"]] = sources.get(event["source"], 0) + event["bytes"]
                elif kind == "error":
                    return f"{url}: {event['message']}"
                elif kind == "done":
                    progress.update(task, completed=event["bytes"], total=event["bytes"])
                    progress.update(task, description=f"{url} {_sources(sources)}")
                    return None
        return f"{url}: the agent ended the preheat without a result"
    except AgentApiError as exc:
        return str(exc)


def _sources(sources: dict[str, int]) -> str:
    parts = [f"{k}={v / (1 << 20):.1f}MiB" for k, v in sorted(sources.items())]
    return "(" + (", ".join(parts) or "nothing to fetch") + ")"


def set_rate(
    agents: Sequence[str],
    download: str | None,
    upload: str | None,
    token: str | None,
    console: Console,
) -> int:
    """Set rate limits on every agent; print what is in force; 0 if all succeeded."""
    rates: dict[str, Any] = {}
    for name, value in (("download", download), ("upload", upload)):
        if value is not None:
            try:
                rates[name] = parse_size(value)
            except ValueError as exc:
                _error(console, f"eagle: --{name}: {exc}")
                return 2
    return asyncio.run(_set_rate_all(agents, rates, token, console))


async def _set_rate_all(
    agents: Sequence[str], rates: dict[str, Any], token: str | None, console: Console
) -> int:
    async def one(url: str) -> str:
        async with AgentAdminClient(url, token) as client:
            if rates:
                now = await client.set_rate(rates.get("download"), rates.get("upload"))
            else:
                now = await client.get_rate()
        return (
            f"{url}: download {_human(now['download_rate'])}, upload {_human(now['upload_rate'])}"
        )

    results = await asyncio.gather(*(one(url) for url in agents), return_exceptions=True)
    failed = 0
    for url, result in zip(agents, results, strict=True):
        if isinstance(result, AgentApiError):
            _error(console, f"eagle: {result}")
            failed += 1
        elif isinstance(result, BaseException):
            _error(console, f"eagle: {url}: {result!r}")
            failed += 1
        else:
            console.print(result, markup=False, highlight=False)
    return 1 if failed else 0

"""Collapse concurrent calls for one key into one execution."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from eagle.utils.tasks import TaskSet

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Runs ``work(key)`` once for all concurrent callers of :meth:`do` with the same key.

    The work runs as a task owned by this object, so a caller that goes away (a
    client disconnecting mid-pull) does not cancel the download the others wait for.
    """

    def __init__(self, tasks: TaskSet) -> None:
        self._tasks = tasks
        self._inflight: dict[K, asyncio.Task[V]] = {}

    def running(self, key: K) -> bool:
        return key in self._inflight

    async def do(self, key: K, work: Callable[[K], Awaitable[V]]) -> V:
        task = self._inflight.get(key)
        if task is None:
            task = self._tasks.spawn(self._run(key, work), name=f"flight:{key}")
            self._inflight[key] = task
        return await asyncio.shield(task)

    async def _run(self, key: K, work: Callable[[K], Awaitable[V]]) -> V:
        try:
            return await work(key)
        finally:
            self._inflight.pop(key, None)

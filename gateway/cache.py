"""An in-process cache filled on miss, with single-flight loading and push invalidation.

Entries (including negative ones: None) live until their TTL or until `invalidate()`. Loads run in
a thread pool (they touch the database); concurrent misses for one name share one load, so a
burst of requests with the same unknown key costs one query. An invalidation that arrives while
a load is in flight wins: that load's result serves the waiting requests but is not kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")


class LoadingCache(Generic[T]):
    def __init__(
        self,
        *,
        load: Callable[[Hashable], T | None],
        executor: Executor,
        ttl: Callable[[T | None], float],
        max_entries: int = 100_000,
    ):
        self._load = load
        self._executor = executor
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, T | None]] = {}
        self._inflight: dict[Hashable, asyncio.Future] = {}
        self._generation: dict[Hashable, int] = {}
        self._epoch = 0  # bumped by clear(): every in-flight load is stale

    async def get(self, name: Hashable) -> T | None:
        entry = self._entries.get(name)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        inflight = self._inflight.get(name)
        if inflight is not None:
            return await asyncio.shield(inflight)
        future = asyncio.get_running_loop().create_future()
        self._inflight[name] = future
        generation, epoch = self._generation.get(name, 0), self._epoch
        try:
            value = await asyncio.get_running_loop().run_in_executor(self._executor, self._load, name)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            self._inflight.pop(name, None)
        if self._generation.get(name, 0) == generation and self._epoch == epoch:
            if len(self._entries) >= self._max_entries:
                self._make_room()
            self._entries[name] = (time.monotonic() + self._ttl(value), value)
        future.set_result(value)
        return value

    def _make_room(self) -> None:
        """Drop expired and negative entries first, so that a flood of unknown names (anyone can
        make up key prefixes) does not push out the keys in use; if live entries still fill half
        the cache, drop the older half of them."""
        now = time.monotonic()
        self._entries = {n: e for n, e in self._entries.items() if e[1] is not None and e[0] > now}
        if len(self._entries) >= self._max_entries // 2:
            for name in list(self._entries)[: len(self._entries) // 2]:
                del self._entries[name]

    def invalidate(self, name: Hashable) -> None:
        self._entries.pop(name, None)
        self._generation[name] = self._generation.get(name, 0) + 1
        if len(self._generation) > self._max_entries:
            self._generation.clear()
            self._epoch += 1

    def clear(self) -> None:
        self._entries.clear()
        self._generation.clear()
        self._epoch += 1

    def __len__(self) -> int:
        return len(self._entries)

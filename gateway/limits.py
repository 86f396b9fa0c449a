"""Per-key limits: requests and tokens per minute (sliding window), tokens per day and month.

The sliding window is the two-bucket estimate (the current minute's count plus the previous
minute's weighted by how much of it still overlaps the last 60 s): O(1) memory per key, exact
at a steady rate, never more than the limit in any minute-aligned window. Requests are counted
when admitted; tokens when the response's `usage` is known (gateway.metering adds them), so a
key may overshoot its token limit by one request's worth, then waits.

The counters live in Redis, shared by every gateway process, but the decision is taken in the
process without waiting for Redis (a round trip to a Redis that has been idle for 20 ms cost
~0.7 ms at p50 here, most of what the gateway added to a call): each process counts what it
admits and, every 50 ms, adds that to Redis and reads the totals back (RedisLimiter). A key
whose totals are older than a second (the first call in a while) waits for one read. One process
is exact; several may together admit what the others admitted since their last read (at most
50 ms of a busy key's traffic) beyond the limit. The embedded default (no Redis, one gateway
process) keeps the counters in memory only (LocalLimiter).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway.errors import GatewayError
from gateway.selectors import KeyRecord

logger = logging.getLogger(__name__)

WINDOW_MS = 60_000


@dataclass(frozen=True, slots=True)
class Verdict:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


_period_names: tuple[int, str, str] = (-1, "", "")


def _periods(minute: int) -> tuple[str, str]:
    """The UTC day and month of a minute, formatted once per minute (strftime per call shows up
    in profiles)."""
    global _period_names
    if _period_names[0] != minute:
        day = datetime.fromtimestamp(minute * 60, UTC)
        _period_names = (minute, f"{day:%Y%m%d}", f"{day:%Y%m}")
    return _period_names[1], _period_names[2]


def counter_keys(prefix: str, key_id: int, now_ms: int) -> list[str]:
    minute = now_ms // WINDOW_MS
    day, month = _periods(minute)
    base = f"{prefix}rl:{key_id}:"
    return [
        f"{base}r:{minute}",
        f"{base}r:{minute - 1}",
        f"{base}t:{minute}",
        f"{base}t:{minute - 1}",
        f"{base}d:{day}",
        f"{base}m:{month}",
    ]


def _seconds_to_next_period(now_ms: int, monthly: bool) -> int:
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    if monthly:
        first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (first + timedelta(days=32)).replace(day=1)
    else:
        end = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return max(1, math.ceil((end - now).total_seconds()))


def verdict(key: KeyRecord, result: list[int], now_ms: int) -> Verdict:
    """Turn the script's answer into headers, or raise the 429."""
    refused_by, retry_ms, requests, tokens, day, month = (int(x) for x in result)
    reset_window = max(1, math.ceil((WINDOW_MS - now_ms % WINDOW_MS) / 1000))
    headers: list[tuple[bytes, bytes]] = []

    def add(kind: str, limit: int, used: int, reset: int) -> None:
        remaining = str(max(0, limit - used)).encode()
        headers.append((f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()))
        headers.append((f"x-ratelimit-remaining-{kind}".encode(), remaining))
        headers.append((f"x-ratelimit-reset-{kind}".encode(), str(reset).encode()))

    retry = max(1, math.ceil(retry_ms / 1000)) if refused_by in (1, 2) else reset_window
    if key.rpm_limit:
        add("requests", key.rpm_limit, requests, retry if refused_by == 1 else reset_window)
    if key.tpm_limit:
        add("tokens", key.tpm_limit, tokens, retry if refused_by == 2 else reset_window)
    # The plain X-RateLimit-* headers describe the limit that binds: requests, else tokens.
    main = [(n.replace(b"-requests", b"").replace(b"-tokens", b""), v) for n, v in headers[:3]]
    headers = main + headers
    if refused_by == 0:
        return Verdict(headers)
    if refused_by == 1:
        message = f"Rate limit reached: {key.rpm_limit} requests per minute for this key."
    elif refused_by == 2:
        message = f"Rate limit reached: {key.tpm_limit} tokens per minute for this key."
    else:
        monthly = refused_by == 4
        retry = _seconds_to_next_period(now_ms, monthly)
        budget = key.monthly_token_budget if monthly else key.daily_token_budget
        used = month if monthly else day
        message = (
            f"Token budget exhausted: {used} of {budget} tokens used this "
            f"{'month' if monthly else 'day'} (UTC)."
        )
        headers = [
            (b"x-ratelimit-limit", str(budget).encode()),
            (b"x-ratelimit-remaining", b"0"),
            (b"x-ratelimit-reset", str(retry).encode()),
            *headers[3:],
        ]
    raise GatewayError(429, "rate_limit_error", message, [(b"retry-after", str(retry).encode()), *headers])


def decide(key: KeyRecord, counts: Iterable[int], now_ms: int) -> list[int]:
    """The verdict on one call from the key's counters (requests this minute, the previous
    minute, tokens this minute, the previous minute, today, this month): [refused_by (0 none,
    1 rpm, 2 tpm, 3 day, 4 month), retry_ms, requests in the window (this call included),
    tokens in the window, day, month]. The caller counts the request if it is admitted."""
    rc, rp, tc, tp, day, month = counts
    elapsed = now_ms % WINDOW_MS
    f = elapsed / WINDOW_MS
    requests, tokens = rp * (1 - f) + rc, tp * (1 - f) + tc

    def wait(limit: float, cur: float, prev: float) -> int:
        if cur >= limit:
            return (WINDOW_MS - elapsed) + math.ceil(WINDOW_MS * max(0.0, 1 - limit / cur))
        if prev <= 0:
            return 1000
        return max(1, math.ceil(WINDOW_MS * (1 - (limit - cur) / prev)) - elapsed)

    rpm, tpm = key.rpm_limit or 0, key.tpm_limit or 0
    if rpm and requests + 1 > rpm:
        return [1, wait(rpm - 1 + 1e-9, rc + 1e-9, rp), int(requests), int(tokens), day, month]
    if tpm and tokens >= tpm:
        return [2, wait(tpm, tc, tp), int(requests), int(tokens), day, month]
    if key.daily_token_budget and day >= key.daily_token_budget:
        return [3, 0, int(requests), int(tokens), day, month]
    if key.monthly_token_budget and month >= key.monthly_token_budget:
        return [4, 0, int(requests), int(tokens), day, month]
    if rpm:
        requests += 1
    return [0, 0, math.ceil(requests), int(tokens), day, month]


# How long Redis keeps each counter: (requests, requests, tokens, tokens) a little over two
# minutes, the day's tokens two days, the month's 32 days (milliseconds, counter_keys order).
_TTLS_MS = (130_000, 130_000, 130_000, 130_000, 2 * 86_400_000, 32 * 86_400_000)


@dataclass(slots=True)
class _KeyCounts:
    """What one process knows of a key: Redis's totals as last read, plus what it has counted
    since and not yet added there, plus what it sent in a sync whose answer was lost (it may or
    may not be in Redis: counted here until the next read, never sent twice)."""

    minute: int = -1  # the minute of the last read
    totals: tuple[int, ...] = (0, 0, 0, 0, 0, 0)  # counter_keys order, as Redis had them
    read_at: float = -math.inf  # time.monotonic() of that read
    requests: dict[int, int] = field(default_factory=dict)  # minute -> admitted, not yet sent
    tokens: dict[int, int] = field(default_factory=dict)  # minute -> tokens, not yet sent
    unsure_requests: dict[int, int] = field(default_factory=dict)  # sent, answer lost
    unsure_tokens: dict[int, int] = field(default_factory=dict)
    used_at: float = 0.0
    dirty: bool = False  # used since the last read

    def counts(self, minute: int) -> tuple[int, int, int, int, int, int]:
        read = self.minute
        totals = self.totals

        def known(now: int, prev: int, of: int) -> int:
            return totals[now] if of == read else totals[prev] if of == read - 1 else 0

        def local(pending: dict[int, int], unsure: dict[int, int], of: int) -> int:
            return pending.get(of, 0) + unsure.get(of, 0)

        local_tokens = sum(self.tokens.values()) + sum(self.unsure_tokens.values())
        if read < 0:
            same_day = same_month = False
        elif minute // 1440 == read // 1440:  # UTC days are whole numbers of epoch minutes
            same_day = same_month = True
        else:
            same_day, same_month = False, _periods(minute)[1] == _periods(read)[1]
        return (
            known(0, 1, minute) + local(self.requests, self.unsure_requests, minute),
            known(0, 1, minute - 1) + local(self.requests, self.unsure_requests, minute - 1),
            known(2, 3, minute) + local(self.tokens, self.unsure_tokens, minute),
            known(2, 3, minute - 1) + local(self.tokens, self.unsure_tokens, minute - 1),
            (totals[4] if same_day else 0) + local_tokens,
            (totals[5] if same_month else 0) + local_tokens,
        )

    def sent(self, requests: dict[int, int], tokens: dict[int, int], *, answered: bool) -> None:
        """A sync carried these amounts: they leave the pending counts; if its answer was lost
        they stay counted here as unsure (Redis may have them: sending them again could count
        them twice, so they are not; the price is an under-count if Redis did not get them)."""
        for pending, unsure, added in (
            (self.requests, self.unsure_requests, requests),
            (self.tokens, self.unsure_tokens, tokens),
        ):
            for of, amount in added.items():
                left = pending.get(of, 0) - amount
                if left > 0:
                    pending[of] = left
                else:
                    pending.pop(of, None)
                if not answered:
                    unsure[of] = unsure.get(of, 0) + amount


class RedisLimiter:
    """Limits decided in this process from Redis's totals, read and added to every
    `sync_seconds` in one pipeline for all keys used since the last time (see the module's
    docstring). Only one sync runs at a time, so a read never overwrites a newer one. A call
    waits for a read at most `wait_seconds`; after a failed or slow sync, calls stop waiting
    for `backoff_seconds` and are decided from what this process knows."""

    def __init__(
        self,
        redis,
        prefix: str,
        *,
        sync_seconds: float = 0.05,
        fresh_seconds: float = 1.0,
        wait_seconds: float = 0.25,
        backoff_seconds: float = 5.0,
    ):
        self._redis = redis
        self._prefix = prefix
        self._sync_seconds = sync_seconds
        self._fresh_seconds = fresh_seconds
        self._wait_seconds = wait_seconds
        self._backoff_seconds = backoff_seconds
        self._keys: dict[int, _KeyCounts] = {}
        self._wanted: set[int] = set()  # keys whose callers wait for the next sync
        self._next: asyncio.Future | None = None  # resolved when the next sync is done
        self._task: asyncio.Task | None = None  # the sync loop, while it runs
        self._down_until = -math.inf  # no waiting for Redis until then
        self._warned_at = -math.inf

    async def check(self, key: KeyRecord) -> Verdict:
        counts = self._keys.get(key.id)
        now = time.monotonic()
        if counts is None or now - counts.read_at > self._fresh_seconds:
            counts = self._keys.setdefault(key.id, _KeyCounts())
            counts.used_at = now
            if now >= self._down_until:
                self._wanted.add(key.id)
                try:
                    # shield: a caller that gives up (a cancelled gRPC call, the timeout) must not
                    # cancel the sync that other calls wait for.
                    await asyncio.wait_for(asyncio.shield(self._sync_soon()), self._wait_seconds)
                except Exception:
                    # Redis is unreachable or slow: decide from what this process knows rather
                    # than not at all, and stop waiting for Redis for a while.
                    self._down_until = time.monotonic() + self._backoff_seconds
                    self._warn("rate limits: Redis unreachable or slow, counting in this process")
        # No await from here on: deciding and counting are one step for concurrent calls.
        now_ms = int(time.time() * 1000)
        minute = now_ms // WINDOW_MS
        result = decide(key, counts.counts(minute), now_ms)
        if result[0] == 0 and key.rpm_limit:
            counts.requests[minute] = counts.requests.get(minute, 0) + 1
        counts.used_at = time.monotonic()
        counts.dirty = True
        return verdict(key, result, now_ms)

    def add_tokens(self, key_id: int, tokens: int, now_ms: int) -> None:
        counts = self._keys.setdefault(key_id, _KeyCounts())
        minute = now_ms // WINDOW_MS
        counts.tokens[minute] = counts.tokens.get(minute, 0) + tokens
        counts.dirty = True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._sync_seconds)
            if any(counts.dirty for counts in self._keys.values()):
                try:
                    await asyncio.shield(self._sync_soon())
                except Exception:
                    self._warn("rate limits: could not sync the counters with Redis; retrying")
            self._forget_idle()

    async def flush(self, timeout: float = 2.0) -> None:
        """Add what this process has counted to Redis now (at shutdown)."""
        if any(counts.dirty for counts in self._keys.values()):
            await asyncio.wait_for(asyncio.shield(self._sync_soon()), timeout)

    def _sync_soon(self) -> asyncio.Future:
        """A future for the end of the next sync (which starts now, or after the running one).
        Await it through asyncio.shield: it is shared."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        future = self._next
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sync_while_wanted())
        return future

    async def _sync_while_wanted(self) -> None:
        try:
            while self._next is not None:
                future, self._next = self._next, None
                ids = self._wanted | {key_id for key_id, counts in self._keys.items() if counts.dirty}
                self._wanted = set()
                try:
                    await self._sync(ids)
                except BaseException as exc:
                    _settle(
                        future, exc if isinstance(exc, Exception) else RuntimeError("limit sync cancelled")
                    )
                    if not isinstance(exc, Exception):
                        raise
                else:
                    self._down_until = -math.inf
                    _settle(future, None)
        finally:
            self._task = None
            if self._next is not None:  # the loop was cancelled: nobody may wait forever
                _settle(self._next, RuntimeError("limit sync cancelled"))
                self._next = None

    async def _sync(self, ids: Iterable[int]) -> None:
        now_ms = int(time.time() * 1000)
        minute = now_ms // WINDOW_MS
        pipe = self._redis.pipeline(transaction=False)
        sent = []
        for key_id in ids:
            counts = self._keys.get(key_id)
            if counts is None:
                continue
            requests, tokens = dict(counts.requests), dict(counts.tokens)
            all_tokens = sum(tokens.values())
            adds = (
                requests.get(minute, 0),
                requests.get(minute - 1, 0),
                tokens.get(minute, 0),
                tokens.get(minute - 1, 0),
                all_tokens,
                all_tokens,
            )
            names = counter_keys(self._prefix, key_id, now_ms)
            commands = 1
            for name, add, ttl in zip(names, adds, _TTLS_MS, strict=True):
                if add:
                    pipe.incrby(name, add)
                    pipe.pexpire(name, ttl)
                    commands += 2
            pipe.mget(names)
            counts.dirty = False
            sent.append((counts, requests, tokens, commands))
        if not sent:
            return
        try:
            results = await pipe.execute()
        except BaseException:
            for counts, requests, tokens, _commands in sent:
                counts.sent(requests, tokens, answered=False)
            raise
        read_at = time.monotonic()
        at = 0
        for counts, requests, tokens, commands in sent:
            at += commands
            counts.totals = tuple(int(value or 0) for value in results[at - 1])
            counts.minute = minute
            counts.read_at = read_at
            # The totals hold what this sync added and whatever earlier lost answers did add
            # (requests of minutes before the previous one were not sent: they no longer count).
            counts.sent(requests, tokens, answered=True)
            counts.unsure_requests.clear()
            counts.unsure_tokens.clear()

    def _forget_idle(self) -> None:
        """Keys unused for a minute and with nothing left to add are read afresh next time."""
        now = time.monotonic()
        if len(self._keys) < 1000:
            return
        for key_id, counts in list(self._keys.items()):
            if now - counts.used_at > 60 and not counts.dirty and not counts.requests and not counts.tokens:
                del self._keys[key_id]

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10:  # once per 10 s, not once per call
            self._warned_at = now
            logger.warning(message, exc_info=True)


def _settle(future: asyncio.Future, outcome: Exception | None) -> None:
    if future.done():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)
        future.exception()  # retrieved: a sync nobody else awaits must not warn a second time


class LocalLimiter:
    """The same counters in this process's memory (embedded default: one gateway, no Redis)."""

    def __init__(self):
        self._counts: dict[str, int] = {}
        self._pruned_minute = -1

    async def check(self, key: KeyRecord) -> Verdict:
        now_ms = int(time.time() * 1000)
        names = counter_keys("", key.id, now_ms)
        result = decide(key, (self._counts.get(n, 0) for n in names), now_ms)
        if result[0] == 0 and key.rpm_limit:
            self._counts[names[0]] = self._counts.get(names[0], 0) + 1
            self.forget_old(now_ms)
        return verdict(key, result, now_ms)

    async def run(self) -> None:
        """Nothing to sync: the counters are only here."""

    async def flush(self) -> None:
        pass

    def add_tokens(self, key_id: int, tokens: int, now_ms: int) -> None:
        names = counter_keys("", key_id, now_ms)
        for name in (names[2], names[4], names[5]):
            self._counts[name] = self._counts.get(name, 0) + tokens
        self.forget_old(now_ms)

    def forget_old(self, now_ms: int) -> None:
        """Drop counters of past minutes, days and months (what Redis's TTLs do), at most once a
        minute and only once there are many: every key used leaves a few behind."""
        minute = now_ms // WINDOW_MS
        if len(self._counts) < 10_000 or minute == self._pruned_minute:
            return
        self._pruned_minute = minute
        day, month = _periods(minute)
        current = {"r": {str(minute), str(minute - 1)}, "t": {str(minute), str(minute - 1)}}
        current.update(d={day}, m={month})
        for name in list(self._counts):
            *_, kind, stamp = name.split(":")
            if stamp not in current[kind]:
                del self._counts[name]

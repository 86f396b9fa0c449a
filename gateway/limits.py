"""Per-key limits: requests and tokens per minute (sliding window), tokens per day and month.

The sliding window is the two-bucket estimate (the current minute's count plus the previous
minute's weighted by how much of it still overlaps the last 60 s): O(1) memory per key, exact
at a steady rate, never more than the limit in any minute-aligned window. Requests are counted
when admitted; tokens when the response's `usage` is known (gateway.metering adds them), so a
key may overshoot its token limit by one request's worth, then waits.

With Redis the check and the request count are one Lua script (one round trip) shared by every
gateway process; the embedded default (no Redis, one gateway process) keeps the same counters in
memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis.exceptions import NoScriptError

from gateway.errors import GatewayError
from gateway.selectors import KeyRecord

WINDOW_MS = 60_000

# KEYS: requests now, requests previous minute, tokens now, tokens previous, day, month
# ARGV: now_ms, rpm, tpm, daily, monthly (0: no limit)
# Returns {refused_by (0 none, 1 rpm, 2 tpm, 3 day, 4 month), retry_ms, requests_est, tokens_est, day, month}
_LUA = """
local now = tonumber(ARGV[1])
local rpm, tpm, daily, monthly = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local elapsed = now % 60000
local f = elapsed / 60000
local rc = tonumber(redis.call('GET', KEYS[1]) or '0')
local rp = tonumber(redis.call('GET', KEYS[2]) or '0')
local tc = tonumber(redis.call('GET', KEYS[3]) or '0')
local tp = tonumber(redis.call('GET', KEYS[4]) or '0')
local day = tonumber(redis.call('GET', KEYS[5]) or '0')
local month = tonumber(redis.call('GET', KEYS[6]) or '0')
local rest = rp * (1 - f) + rc
local test = tp * (1 - f) + tc
local function wait(limit, cur, prev)
  if cur >= limit then
    return (60000 - elapsed) + math.ceil(60000 * math.max(0, 1 - limit / cur))
  end
  if prev <= 0 then return 1000 end
  return math.max(1, math.ceil(60000 * (1 - (limit - cur) / prev)) - elapsed)
end
if rpm > 0 and rest + 1 > rpm then
  return {1, wait(rpm - 1 + 1e-9, rc + 1e-9, rp), math.floor(rest), math.floor(test), day, month}
end
if tpm > 0 and test >= tpm then
  return {2, wait(tpm, tc, tp), math.floor(rest), math.floor(test), day, month}
end
if daily > 0 and day >= daily then return {3, 0, math.floor(rest), math.floor(test), day, month} end
if monthly > 0 and month >= monthly then return {4, 0, math.floor(rest), math.floor(test), day, month} end
if rpm > 0 then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], 130000)
  rest = rest + 1
end
return {0, 0, math.ceil(rest), math.floor(test), day, month}
"""


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


class RedisLimiter:
    """Checks of concurrent requests are sent together: every check queued while the event loop
    was busy goes out in one pipeline (one round trip, one connection) on the next turn."""

    def __init__(self, redis, prefix: str):
        self._redis = redis
        self._prefix = prefix
        self._sha = redis.register_script(_LUA).sha
        self._loaded = False  # SCRIPT LOAD once, not redis-py's SCRIPT EXISTS before every pipeline
        self._queue: list[tuple[KeyRecord, int, asyncio.Future]] = []
        self._flushing = False

    async def check(self, key: KeyRecord) -> Verdict:
        now_ms = int(time.time() * 1000)
        future = asyncio.get_running_loop().create_future()
        self._queue.append((key, now_ms, future))
        if not self._flushing:
            self._flushing = True
            # The task starts on the loop's next turn: every check queued until then joins it.
            asyncio.get_running_loop().create_task(self._flush())
        return verdict(key, await future, now_ms)

    async def _flush(self) -> None:
        batch, self._queue = self._queue, []
        self._flushing = False
        try:
            results = await self._evaluate(batch)
        except BaseException as exc:
            for _key, _now, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_key, _now, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _evaluate(self, batch: list[tuple[KeyRecord, int, asyncio.Future]]) -> list:
        for attempt in (1, 2):
            if not self._loaded:
                await self._redis.script_load(_LUA)
                self._loaded = True
            pipe = self._redis.pipeline(transaction=False)
            for key, now_ms, _future in batch:
                pipe.evalsha(
                    self._sha,
                    6,
                    *counter_keys(self._prefix, key.id, now_ms),
                    now_ms,
                    key.rpm_limit or 0,
                    key.tpm_limit or 0,
                    key.daily_token_budget or 0,
                    key.monthly_token_budget or 0,
                )
            try:
                return await pipe.execute()
            except NoScriptError:
                # Redis lost the script (restart, SCRIPT FLUSH): no call of the batch ran, since
                # they all use it. Load it again and run the batch once more.
                if attempt == 2:
                    raise
                self._loaded = False
        raise AssertionError("unreachable")

    def add_tokens(self, pipeline, key_id: int, tokens: int, now_ms: int) -> None:
        """Queue the token counters' increments on the metering pipeline (no round trip of its own)."""
        keys = counter_keys(self._prefix, key_id, now_ms)
        for name, ttl in ((keys[2], 130), (keys[4], 2 * 86400), (keys[5], 32 * 86400)):
            pipeline.incrby(name, tokens)
            pipeline.expire(name, ttl)


class LocalLimiter:
    """The same counters in this process's memory (embedded default: one gateway, no Redis)."""

    def __init__(self):
        self._counts: dict[str, int] = {}
        self._pruned_minute = -1

    async def check(self, key: KeyRecord) -> Verdict:
        now_ms = int(time.time() * 1000)
        return verdict(key, self._evaluate(key, now_ms), now_ms)

    def _evaluate(self, key: KeyRecord, now_ms: int) -> list[int]:
        names = counter_keys("", key.id, now_ms)
        rc, rp, tc, tp, day, month = (self._counts.get(n, 0) for n in names)
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
            self._counts[names[0]] = rc + 1
            requests += 1
            self.forget_old(now_ms)
        return [0, 0, math.ceil(requests), int(tokens), day, month]

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

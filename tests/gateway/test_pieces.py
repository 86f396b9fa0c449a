"""The gateway's pure pieces: token counting from passing bytes, the limit arithmetic, query
stripping. No processes, no database."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.access import stripped_query
from gateway.errors import GatewayError
from gateway.limits import LocalLimiter
from gateway.selectors import AuthParam, KeyRecord, RouteRecord
from gateway.usage import UsageScanner


def run(coroutine):
    """asyncio.run on a thread of its own: once a browser test has run, Playwright's sync API
    keeps an event loop running on the main thread for the rest of the session."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def feed_in_pieces(scanner: UsageScanner, data: bytes, size: int) -> UsageScanner:
    for i in range(0, len(data), size):
        scanner.feed(data[i : i + size])
    scanner.finish()
    return scanner


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_usage_from_a_json_body_split_anywhere(size):
    body = json.dumps(
        {
            "choices": [{"message": {"content": "x" * 50_000}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3},
        }
    ).encode()
    scanner = feed_in_pieces(UsageScanner(b"application/json"), body, size)
    assert (scanner.prompt_tokens, scanner.completion_tokens, scanner.exact) == (11, 3, True)


@pytest.mark.parametrize("size", [1, 5, 4096])
def test_usage_from_the_final_sse_chunk(size):
    chunks = [{"choices": [{"delta": {"content": f"t{i}"}}], "usage": None} for i in range(4)]
    chunks.append({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
    stream = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    scanner = feed_in_pieces(UsageScanner(b"text/event-stream"), stream, size)
    assert (scanner.prompt_tokens, scanner.completion_tokens, scanner.exact) == (9, 4, True)


def test_without_include_usage_completion_tokens_are_estimated_per_chunk():
    chunks = [{"choices": [{"delta": {"content": f"t{i}"}}]} for i in range(6)]
    stream = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    scanner = feed_in_pieces(UsageScanner(b"text/event-stream"), stream, 3)
    assert (scanner.prompt_tokens, scanner.completion_tokens, scanner.exact) == (0, 6, False)


def key(**limits) -> KeyRecord:
    base = dict(rpm_limit=None, tpm_limit=None, daily_token_budget=None, monthly_token_budget=None)
    return KeyRecord(1, "p", "d", frozenset(), None, False, False, **{**base, **limits})


def test_local_limiter_requests_per_minute():
    limiter = LocalLimiter()
    limited = key(rpm_limit=2)
    headers = [dict(run(limiter.check(limited)).headers) for _ in range(2)]
    assert [h[b"x-ratelimit-remaining"] for h in headers] == [b"1", b"0"]
    with pytest.raises(GatewayError) as refused:
        run(limiter.check(limited))
    assert refused.value.status == 429
    retry = int(dict(refused.value.headers)[b"retry-after"])
    assert 1 <= retry <= 120


def test_local_limiter_tokens_and_budget():
    limiter = LocalLimiter()
    limited = key(tpm_limit=100, daily_token_budget=150)
    run(limiter.check(limited))
    import time

    limiter.add_tokens(1, 120, int(time.time() * 1000))
    with pytest.raises(GatewayError) as refused:
        run(limiter.check(limited))
    assert "100 tokens per minute" in refused.value.message
    limiter.add_tokens(1, 40, int(time.time() * 1000))
    budget_key = key(daily_token_budget=150)
    with pytest.raises(GatewayError) as refused:
        run(limiter.check(budget_key))
    assert "160 of 150 tokens used this day" in refused.value.message


def test_query_parameters_of_the_policy_are_stripped_only():
    route = RouteRecord(
        1, "s", "ns", "Running", "vllm", True, "authorization",
        (AuthParam("query", "team", "blue"),), (), "http://x",
    )  # fmt: skip
    assert stripped_query(route, b"a=1&team=blue&b=2") == b"a=1&b=2"
    assert stripped_query(route, b"te%61m=blue&team2=x") == b"team2=x"


def test_local_limiter_forgets_past_minutes_days_and_months():
    limiter = LocalLimiter()
    then = 1_700_000_000_000  # 2023-11-14 22:13 UTC
    for key_id in range(4_000):  # 3 counters each (minute, day, month): over the pruning size
        limiter.add_tokens(key_id, 5, then)
    assert len(limiter._counts) > 10_000
    a_month_later = then + 31 * 86_400_000
    limiter.add_tokens(1, 7, a_month_later)
    assert len(limiter._counts) == 3  # only the newest minute, day and month of key 1
    # The current counters still count: a tokens-per-minute limit sees the 7 tokens.
    verdict = run(limiter.check(key(tpm_limit=100)))
    assert dict(verdict.headers)[b"x-ratelimit-remaining-tokens"] in (b"93", b"100")


def test_usage_records_wait_for_redis_in_bounded_memory(monkeypatch):
    """With Redis unreachable (a real client against a closed port) the newest records are kept,
    up to MAX_PENDING, and go out in entries of bounded size once it answers."""
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    from gateway import metering
    from tests.gateway.upstream import free_port

    monkeypatch.setattr(metering, "MAX_PENDING", 50)

    async def scenario():
        client = aredis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
        meter = metering.RedisMeter(client, stream="s", maxlen=1000, limiter=None, flush_seconds=1)
        for round_ in range(3):
            for i in range(40):
                meter.record(metering.Record(round_ * 100 + i, None, 1, 200, 5))
            with pytest.raises(RedisConnectionError):
                await meter.flush()
        await client.aclose()
        return meter._pending

    pending = run(scenario())
    assert len(pending) == 50
    assert [r.at_ms for r in pending] == [130 + i for i in range(10)] + [200 + i for i in range(40)]


def test_a_flood_of_unknown_names_does_not_push_live_entries_out_of_the_cache():
    from gateway.cache import LoadingCache

    loads: list[str] = []

    def load(name):
        loads.append(name)
        return None if name.startswith("unknown") else f"record of {name}"

    async def scenario():
        with ThreadPoolExecutor(1) as executor:
            cache = LoadingCache(load=load, executor=executor, ttl=lambda value: 60, max_entries=10)
            for name in ("a", "b", "c"):
                await cache.get(name)
            for i in range(50):  # made-up prefixes, each a miss
                assert await cache.get(f"unknown-{i}") is None
            return [await cache.get(name) for name in ("a", "b", "c")], len(cache)

    values, size = run(scenario())
    assert values == ["record of a", "record of b", "record of c"]
    assert loads.count("a") == loads.count("b") == loads.count("c") == 1  # still cached
    assert size <= 10

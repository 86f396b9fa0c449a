"""RedisLimiter against a real Redis: decided in the process, counted in Redis.

Each limiter stands for one gateway process; two limiters on the same prefix are two gateways.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aredis
from django.conf import settings as django_settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.errors import GatewayError
from gateway.limits import RedisLimiter, counter_keys
from tests.gateway.test_pieces import key, run
from tests.gateway.upstream import free_port

pytestmark = pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


async def admitted(limiter: RedisLimiter, record, calls: int) -> int:
    """How many of `calls` concurrent checks pass."""
    results = await asyncio.gather(*(limiter.check(record) for _ in range(calls)), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not (
            isinstance(result, GatewayError) and result.status == 429
        ):
            raise result
    return sum(not isinstance(result, BaseException) for result in results)


def test_one_process_is_exact_under_concurrent_calls(redis_prefix):
    async def scenario():
        client = aredis.Redis.from_url(django_settings.REDIS_URL)
        limiter = RedisLimiter(client, redis_prefix)
        limited = key(rpm_limit=10)
        first = await admitted(limiter, limited, 25)  # one read of Redis, then decided here
        second = await admitted(limiter, limited, 5)
        await limiter.flush()
        stored = await client.get(counter_keys(redis_prefix, 1, int(time.time() * 1000))[0])
        await client.aclose()
        return first, second, stored

    first, second, stored = run(scenario())
    assert (first, second) == (10, 0)
    assert int(stored) == 10  # what this process admitted reached Redis, once


def test_a_second_process_sees_what_the_first_admitted(redis_prefix):
    async def scenario():
        client = aredis.Redis.from_url(django_settings.REDIS_URL)
        one, two = RedisLimiter(client, redis_prefix), RedisLimiter(client, redis_prefix)
        limited = key(rpm_limit=5)
        by_one = await admitted(one, limited, 3)
        await one.flush()
        by_two = await admitted(two, limited, 5)  # its first check reads the totals
        await two.flush()
        # The first process learns of the second's calls on its next read, within the sync interval.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2
        runner = loop.create_task(one.run())
        try:
            while loop.time() < deadline:
                if await admitted(one, limited, 1) == 0:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the first process never saw the second's calls")
        finally:
            runner.cancel()
        await client.aclose()
        return by_one, by_two

    assert run(scenario()) == (3, 2)


def test_tokens_and_day_budget_are_counted_across_processes(redis_prefix):
    async def scenario():
        client = aredis.Redis.from_url(django_settings.REDIS_URL)
        one, two = RedisLimiter(client, redis_prefix), RedisLimiter(client, redis_prefix)
        budget = key(daily_token_budget=100)
        await one.check(budget)
        one.add_tokens(1, 60, int(time.time() * 1000))  # what the meter does with a response's usage
        await two.check(budget)  # the 60 tokens are not in Redis yet: allowed
        two.add_tokens(1, 50, int(time.time() * 1000))
        await one.flush()
        await two.flush()
        fresh = RedisLimiter(client, redis_prefix)
        with pytest.raises(GatewayError) as refused:
            await fresh.check(budget)
        day = await client.get(counter_keys(redis_prefix, 1, int(time.time() * 1000))[4])
        await client.aclose()
        return refused.value, int(day)

    refused, day = run(scenario())
    assert day == 110
    assert refused.status == 429 and "110 of 100 tokens used this day" in refused.message


def test_without_redis_the_process_still_limits(redis_prefix):
    async def scenario():
        client = aredis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
        limiter = RedisLimiter(client, redis_prefix)
        started = time.monotonic()
        count = await admitted(limiter, key(rpm_limit=4), 10)
        count += await admitted(limiter, key(rpm_limit=4), 3)
        await client.aclose()
        return count, time.monotonic() - started

    count, elapsed = run(scenario())
    assert count == 4
    assert elapsed < 1  # one failed read, not one per call


class RepliesLost:
    """A TCP relay on 127.0.0.1 in front of the real Redis that can swallow its replies: the
    commands reach Redis and run, their answers never come back (a reply lost in the network)."""

    def __init__(self):
        self.dropping = False
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, client_reader, client_writer) -> None:
        url = redis_url_parts()
        redis_reader, redis_writer = await asyncio.open_connection(url.hostname, url.port or 6379)

        async def pipe(reader, writer, replies: bool) -> None:
            while data := await reader.read(65536):
                if not (replies and self.dropping):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(
            pipe(client_reader, redis_writer, False),
            pipe(redis_reader, client_writer, True),
            return_exceptions=True,
        )

    def close(self) -> None:
        self.server.close()


def redis_url_parts():
    from urllib.parse import urlsplit

    return urlsplit(django_settings.REDIS_URL)


def test_a_lost_reply_is_not_sent_again_so_nothing_is_counted_twice(redis_prefix):
    async def scenario():
        relay = RepliesLost()
        port = await relay.start()
        db = int(redis_url_parts().path.strip("/") or 0)
        client = aredis.Redis(
            host="127.0.0.1", port=port, db=db, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        direct = aredis.Redis.from_url(django_settings.REDIS_URL)
        limiter = RedisLimiter(client, redis_prefix)
        limited = key(rpm_limit=1000)
        await admitted(limiter, limited, 10)
        relay.dropping = True  # Redis runs the INCRBY; the answer is lost (a timeout here)
        with pytest.raises(Exception):  # noqa: B017 - redis-py's timeout error
            await limiter.flush()
        relay.dropping = False
        await admitted(limiter, limited, 5)
        await limiter.flush()
        names = counter_keys(redis_prefix, 1, int(time.time() * 1000))[:2]
        stored = sum(int(value or 0) for value in await direct.mget(names))
        relay.close()
        await client.aclose()
        await direct.aclose()
        return stored

    assert run(scenario()) == 15


def test_a_redis_that_never_answers_delays_one_call_per_backoff_not_every_call(redis_prefix):
    async def scenario():
        async def swallow(reader, writer):
            while await reader.read(65536):
                pass

        silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        client = aredis.Redis(host="127.0.0.1", port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
        limiter = RedisLimiter(client, redis_prefix, wait_seconds=0.2, backoff_seconds=5)
        started = time.monotonic()
        count = 0
        for _ in range(20):
            count += await admitted(limiter, key(rpm_limit=5), 1)
        elapsed = time.monotonic() - started
        silent.close()
        return count, elapsed

    count, elapsed = run(scenario())
    assert count == 5  # still limited, from this process's own counts
    assert elapsed < 1.0  # one wait of 0.2 s, then no waiting during the backoff


def test_a_caller_that_gives_up_does_not_cancel_the_read_others_wait_for(redis_prefix):
    async def scenario():
        client = aredis.Redis.from_url(django_settings.REDIS_URL)
        limiter = RedisLimiter(client, redis_prefix)
        limited = key(rpm_limit=3)
        quitter = asyncio.ensure_future(limiter.check(limited))
        stayers = [asyncio.ensure_future(limiter.check(limited)) for _ in range(2)]
        await asyncio.sleep(0)  # every check has joined the same read
        quitter.cancel()
        outcomes = await asyncio.gather(*stayers, return_exceptions=True)
        later = await admitted(limiter, limited, 3)  # the sync loop still works
        await limiter.flush()
        await client.aclose()
        return outcomes, later

    outcomes, later = run(scenario())
    assert [type(outcome).__name__ for outcome in outcomes] == ["Verdict", "Verdict"]
    assert later == 1

"""What passes through: limits, streaming in both directions, revocation everywhere, usage."""

from __future__ import annotations

import http.client
import itertools
import json
import time

import pytest
import redis
import requests
from django.conf import settings as django_settings

from auth.key_actions import inference_key_revoke
from auth.models import InferenceKey, UsageHour
from console.audit import SYSTEM
from gateway import conf
from gateway.limits import counter_keys
from gateway.tasks import rollup_usage
from services import phases
from services.actions import service_transition
from tests.stack import wait_for

CHAT = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_requests_per_minute_limit_gives_429_with_headers(start_gateway, upstream, make_service, make_key):
    gateway = start_gateway()
    chat = make_service("chat", upstream.url)
    _key, plaintext = make_key([chat], rpm_limit=3)
    url = f"{gateway.url}/chat/v1/chat/completions"
    remaining = []
    for _ in range(3):
        response = requests.post(url, json=CHAT, headers=bearer(plaintext))
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit"] == "3"
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    refused = requests.post(url, json=CHAT, headers=bearer(plaintext))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "3 requests per minute" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 120
    assert 1 <= int(refused.headers["x-ratelimit-reset"]) <= 120
    assert len(upstream.seen) == 3


def test_two_gateways_share_a_key_limit(start_gateway, upstream, make_service, make_key):
    """Each gateway decides without waiting for Redis and adds its counts there every 50 ms: a
    call to the second gateway, once the first's counts are in, sees them."""
    first, second = start_gateway(), start_gateway()
    chat = make_service("chat", upstream.url)
    key, plaintext = make_key([chat], rpm_limit=4)
    client = redis.Redis.from_url(django_settings.REDIS_URL)

    def counted() -> int:  # this minute's and the last (the calls may straddle a minute)
        names = counter_keys(django_settings.GATEWAY_REDIS_PREFIX, key.id, int(time.time() * 1000))[:2]
        return sum(int(value or 0) for value in client.mget(names))

    for _ in range(3):
        response = requests.post(
            f"{first.url}/chat/v1/chat/completions", json=CHAT, headers=bearer(plaintext)
        )
        assert response.status_code == 200, response.text
    wait_for(lambda: counted() == 3, timeout=2, interval=0.02, what="the first gateway's counts in Redis")
    url = f"{second.url}/chat/v1/chat/completions"
    allowed = requests.post(url, json=CHAT, headers=bearer(plaintext))
    assert allowed.status_code == 200 and allowed.headers["x-ratelimit-remaining"] == "0", allowed.text
    refused = requests.post(url, json=CHAT, headers=bearer(plaintext))
    assert refused.status_code == 429, refused.text
    assert len(upstream.seen) == 4


def test_daily_token_budget_counts_usage_from_responses(start_gateway, upstream, make_service, make_key):
    gateway = start_gateway()
    chat = make_service("chat", upstream.url)
    _key, plaintext = make_key([chat], daily_token_budget=20)
    url = f"{gateway.url}/chat/v1/chat/completions"
    # 12 tokens each (the mock's usage): the first two pass, then the day's budget is spent.
    for _ in range(2):
        assert requests.post(url, json=CHAT, headers=bearer(plaintext)).status_code == 200

    def refused():
        response = requests.post(url, json=CHAT, headers=bearer(plaintext))
        return [response] if response.status_code == 429 else None  # a 429 Response is falsy

    (response,) = wait_for(refused, timeout=5, interval=0.05, what="the token budget to refuse")
    message = response.json()["error"]["message"]
    assert "of 20 tokens used this day" in message and int(message.split()[3]) >= 24, message
    assert int(response.headers["retry-after"]) <= 86400
    assert len(upstream.seen) <= 3  # the next call may slip in before the usage batch lands


def test_sse_chunks_arrive_with_their_original_timing(start_gateway, upstream, make_service, make_key):
    gateway = start_gateway()
    chat = make_service("chat", upstream.url)
    _key, plaintext = make_key([chat])
    started = time.monotonic()
    arrivals = []
    with requests.post(
        f"{gateway.url}/chat/v1/chat/completions",
        json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        headers={**bearer(plaintext), "x-mock-gap": "0.3", "x-mock-chunks": "5"},
        stream=True,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines(chunk_size=None):
            if line.startswith(b"data: {"):
                arrivals.append((time.monotonic() - started, json.loads(line[6:])))
    content = [t for t, chunk in arrivals if chunk["choices"]]
    assert len(content) == 5
    gaps = [b - a for a, b in itertools.pairwise(content)]
    # Sent 300 ms apart: a buffering proxy would deliver them together (gaps near 0).
    assert all(0.2 <= gap <= 0.45 for gap in gaps), gaps
    assert arrivals[-1][1]["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_100_mb_body_streams_through_in_bounded_memory(
    framing, start_gateway, upstream, make_service, make_key
):
    gateway = start_gateway()
    service = make_service("bulk", upstream.url)
    _key, plaintext = make_key([service])
    size, piece = 100 * 1024 * 1024, b"x" * (1024 * 1024)
    requests.get(f"{gateway.url}/bulk/v1/models", headers=bearer(plaintext))  # warm: imports, pools
    before = peak = gateway.rss_kib()

    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    connection.putrequest("POST", "/bulk/echo/size")
    connection.putheader("Authorization", f"Bearer {plaintext}")
    connection.putheader("Content-Type", "application/octet-stream")
    if framing == "content-length":
        connection.putheader("Content-Length", str(size))
    else:
        connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for i in range(size // len(piece)):
        if i % 5 == 0:
            peak = max(peak, gateway.rss_kib())
        connection.send(piece if framing == "content-length" else b"%x\r\n%s\r\n" % (len(piece), piece))
    if framing == "chunked":
        connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, body
    assert json.loads(body) == {"bytes": size}
    peak = max(peak, gateway.rss_kib())
    # Holding the body would add 100 MiB; streaming adds a few socket buffers.
    assert peak - before < 32 * 1024, f"gateway RSS grew {(peak - before) // 1024} MiB"


def test_revocation_reaches_two_gateways_within_a_second(start_gateway, upstream, make_service, make_key):
    first, second = start_gateway(), start_gateway()
    chat = make_service("chat", upstream.url)
    key, plaintext = make_key([chat])
    for gateway in (first, second):  # both have the key cached now
        assert requests.get(f"{gateway.url}/chat/v1/models", headers=bearer(plaintext)).status_code == 200

    revoked_at = time.monotonic()
    assert inference_key_revoke(key=key, context=SYSTEM)
    for gateway in (first, second):
        while True:
            response = requests.get(f"{gateway.url}/chat/v1/models", headers=bearer(plaintext))
            if response.status_code == 401:
                assert "revoked" in response.json()["error"]["message"]
                break
            assert response.status_code == 200
            assert time.monotonic() - revoked_at < 1.0, (
                f"gateway {gateway.port} still accepts the key after 1 s"
            )
            time.sleep(0.02)


def test_a_service_that_stops_serving_is_refused_within_a_second(
    start_gateway, upstream, make_service, make_key
):
    """The watcher's phase change drops the gateway's cached route at once, not at its 30 s TTL."""
    gateway = start_gateway()
    chat = make_service("chat", upstream.url)
    _key, plaintext = make_key([chat])
    url = f"{gateway.url}/chat/v1/models"
    assert requests.get(url, headers=bearer(plaintext)).status_code == 200  # route cached

    failed_at = time.monotonic()
    assert service_transition(
        service_id=chat.id, to_phase=phases.FAILED, reason="CrashLoopBackOff", message="back-off"
    )
    while (response := requests.get(url, headers=bearer(plaintext))).status_code == 200:
        assert time.monotonic() - failed_at < 1.0, "the gateway still routes to a Failed service after 1 s"
        time.sleep(0.02)
    assert response.status_code == 503, response.text
    assert "Failed" in response.json()["error"]["message"]


def test_usage_is_rolled_up_by_the_celery_task(
    start_gateway, upstream, make_service, make_key, celery_worker
):
    gateway = start_gateway()
    chat = make_service("chat", upstream.url)
    open_service = make_service("open", upstream.url, auth_policy="none")
    key, plaintext = make_key([chat])
    url = f"{gateway.url}/chat/v1/chat/completions"
    for _ in range(3):
        assert requests.post(url, json=CHAT, headers=bearer(plaintext)).status_code == 200
    with requests.post(
        url,
        json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        headers={**bearer(plaintext), "x-mock-gap": "0"},
        stream=True,
    ) as response:
        assert b"[DONE]" in response.content
    assert requests.get(f"{gateway.url}/chat/v1/nosuch", headers=bearer(plaintext)).status_code == 404
    assert requests.get(f"{gateway.url}/open/v1/models").status_code == 200

    client = redis.Redis.from_url(django_settings.REDIS_URL)

    def records() -> int:
        entries = client.xrange(conf.usage_stream())
        return sum(len(json.loads(fields[b"records"])) for _id, fields in entries)

    wait_for(lambda: records() >= 6, timeout=5, interval=0.05, what="usage records")
    rollup_usage.delay()
    row = wait_for(
        lambda: UsageHour.objects.filter(key=key, service=chat, requests=5).first(),
        timeout=20,
        what="the roll-up of the key's usage",
    )
    assert (row.prompt_tokens, row.completion_tokens) == (4 * 7, 4 * 5)
    assert (row.errors_4xx, row.errors_5xx) == (1, 0)
    assert UsageHour.objects.get(key=None, service=open_service).requests == 1
    assert InferenceKey.objects.get(id=key.id).last_used_at is not None
    assert client.xlen(conf.usage_stream()) == 0  # consumed, acknowledged and trimmed

    # Running it again changes nothing: the totals are written, not added.
    rollup_usage.delay()
    time.sleep(0)  # the worker picks it up; poll for its effect below
    wait_for(lambda: not client.llen("celery"), timeout=10, what="the second roll-up to be taken")
    row.refresh_from_db()
    assert row.requests == 5


@pytest.mark.parametrize("unused", [None])
def test_embedded_default_without_redis(unused, start_gateway, upstream, make_service, make_key, settings):
    """No REDIS_URL: invalidation through the polled log, limits in the process, usage written
    by the gateway itself."""
    settings.REDIS_URL = ""  # this process announces through the log too
    gateway = start_gateway(REDIS_URL="", GATEWAY_LOCAL_USAGE_FLUSH_SECONDS="0.3")
    chat = make_service("chat", upstream.url)
    key, plaintext = make_key([chat], rpm_limit=2)
    url = f"{gateway.url}/chat/v1/chat/completions"
    assert [requests.post(url, json=CHAT, headers=bearer(plaintext)).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    row = wait_for(
        lambda: UsageHour.objects.filter(key=key, service=chat, requests=3).first(),
        timeout=10,
        what="the gateway's own usage write",
    )
    assert (row.prompt_tokens, row.errors_4xx) == (14, 1)

    revoked_at = time.monotonic()
    inference_key_revoke(key=key, context=SYSTEM)
    while requests.get(f"{gateway.url}/chat/v1/models", headers=bearer(plaintext)).status_code != 401:
        assert time.monotonic() - revoked_at < 1.5, "the polled log did not revoke the key in time"
        time.sleep(0.05)


def test_late_records_add_to_an_old_hour_instead_of_replacing_it(redis_prefix, make_service, make_key):
    """A backlog that takes several roll-ups (or a gateway that was cut off from Redis) brings
    records for an hour whose total was already written: they are added to it."""
    from gateway.metering import Record

    chat = make_service("chat", None)
    key, _plaintext = make_key([chat])
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    five_hours_ago = int(time.time() * 1000) - 5 * 3_600_000
    hour = five_hours_ago - five_hours_ago % 3_600_000

    def send(count: int) -> None:
        rows = [Record(five_hours_ago + i, key.id, chat.id, 200, 10, 3, 2).row() for i in range(count)]
        client.xadd(conf.usage_stream(), {"records": json.dumps(rows)})

    send(4)
    assert rollup_usage() == 1
    send(3)
    assert rollup_usage() == 1
    row = UsageHour.objects.get(key=key, service=chat)
    assert row.hour.timestamp() * 1000 == hour
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (7, 21, 14)


def test_deactivating_the_owner_in_the_admin_stops_their_keys_within_a_second(
    start_gateway, upstream, make_service, make_key, user, admin_user
):
    """The gateway caches a key with its owner's state for a minute; deactivating the owner in
    the admin announces every key of theirs, so the gateway reloads them at once."""
    from django.test import Client

    gateway = start_gateway()
    chat = make_service("chat", upstream.url)
    _key, plaintext = make_key([chat])
    url = f"{gateway.url}/chat/v1/models"
    assert requests.get(url, headers=bearer(plaintext)).status_code == 200  # cached now

    admin = Client()
    admin.force_login(admin_user)
    deactivated_at = time.monotonic()
    response = admin.post(
        "/admin/auth/user/",
        {"action": "deactivate_users", "_selected_action": [str(user.pk)], "index": "0"},
        follow=True,
    )
    assert "Deactivated 1 user(s)." in response.content.decode()
    while True:
        response = requests.get(url, headers=bearer(plaintext))
        if response.status_code == 401:
            assert "deactivated" in response.json()["error"]["message"]
            break
        assert response.status_code == 200
        assert time.monotonic() - deactivated_at < 1.0, "the gateway still accepts the key after 1 s"
        time.sleep(0.02)

"""Rolling the gateway's usage stream up into UsageHour rows (run by gateway.tasks.rollup_usage).

Two steps, each safe to repeat:
1. Read a batch from the stream (consumer group `rollup`), add it to running totals kept in
   Redis (one hash per hour, key and service) and XACK + XDEL the batch, all in one MULTI: the
   batch is counted exactly once or not at all.
2. Write the totals of every touched hour to PostgreSQL as absolute values (gateway.actions.
   usage_apply(absolute=True)): writing the same totals twice changes nothing, so a crash
   between the database commit and forgetting the "dirty" marks only costs a repeat.
Totals are never deleted by the roll-up: each expires two days after its last record (its
TTL, refreshed on every add), so records that arrive late for an hour (a backlog that takes
several runs, a gateway cut off from Redis for hours) add to its total instead of starting a
new one that would overwrite the row. Only records more than two days late could do that.
A lock in Redis keeps two roll-ups (two beat schedulers, a slow run) from interleaving.
"""

from __future__ import annotations

import json
import logging

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway import actions, conf
from gateway.metering import Record

logger = logging.getLogger(__name__)

GROUP = "rollup"
CONSUMER = "rollup"  # one at a time (the lock), so one name; its pending entries are retried
TOTAL_TTL_SECONDS = 2 * 86400
LOCK_SECONDS = 120


def rollup_usage(*, client: redis.Redis | None = None, batch: int = 200, max_batches: int = 500) -> int:
    """Consume the usage stream into UsageHour. Returns the number of stream entries consumed
    (each holds one gateway flush: up to a few hundred calls)."""
    # No automatic retries: redis-py would re-send a MULTI/EXEC whose reply was lost, adding a
    # batch twice. A failed run leaves its entries pending; the next run takes them first.
    client = client or redis.Redis.from_url(conf.redis_url(), retry=Retry(NoBackoff(), 0))
    prefix = conf.redis_prefix()
    stream = conf.usage_stream()
    lock = client.lock(f"{prefix}rollup:lock", timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        logger.info("usage roll-up already running elsewhere; skipping")
        return 0
    try:
        try:
            client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        consumed = 0
        start_id = "0"  # first our own pending entries (a previous run that died), then new ones
        for _ in range(max_batches):
            reply = client.xreadgroup(GROUP, CONSUMER, {stream: start_id}, count=batch)
            entries = reply[0][1] if reply else []
            if not entries:
                if start_id == "0":
                    start_id = ">"
                    continue
                break
            _accumulate(client, prefix, stream, entries)
            consumed += len(entries)
            lock.extend(LOCK_SECONDS, replace_ttl=True)  # a long backlog keeps the run exclusive
        _write_totals(client, prefix)
        return consumed
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            logger.warning("usage roll-up lock expired before the run finished")


def _accumulate(client: redis.Redis, prefix: str, stream: str, entries: list) -> None:
    totals: dict[str, list[int]] = {}
    last_used: dict[str, int] = {}
    for _id, fields in entries:
        for values in json.loads(fields.get(b"records", b"[]")):
            record = Record(*values)
            name = f"{record.hour_ms}:{record.key_id}:{record.service_id}"
            record.add_to(totals.setdefault(name, [0] * 6))
            if record.key_id:
                key = str(record.key_id)
                last_used[key] = max(record.at_ms, last_used.get(key, 0))
    ids = [entry_id for entry_id, _ in entries]
    pipe = client.pipeline(transaction=True)
    for name, row in totals.items():
        for field, value in zip(actions.USAGE_FIELDS, row, strict=True):
            if value:
                pipe.hincrby(f"{prefix}usage:total:{name}", field, value)
        pipe.expire(f"{prefix}usage:total:{name}", TOTAL_TTL_SECONDS)
        pipe.sadd(f"{prefix}usage:dirty", name)
    if last_used:
        pipe.hset(f"{prefix}usage:last-used", mapping=last_used)
    pipe.xack(stream, GROUP, *ids)
    pipe.xdel(stream, *ids)
    pipe.execute()


def _write_totals(client: redis.Redis, prefix: str) -> None:
    dirty = sorted(name.decode() for name in client.smembers(f"{prefix}usage:dirty"))
    last_used = {int(k): int(v) for k, v in client.hgetall(f"{prefix}usage:last-used").items()}
    if not dirty and not last_used:
        return
    reads = client.pipeline(transaction=False)  # every total in one round trip
    for name in dirty:
        reads.hgetall(f"{prefix}usage:total:{name}")
    rows = []
    for name, raw in zip(dirty, reads.execute() if dirty else [], strict=True):
        hour_ms, key_id, service_id = (int(part) for part in name.split(":"))
        values = [int(raw.get(field.encode(), 0)) for field in actions.USAGE_FIELDS]
        rows.append(actions.UsageRow(hour_ms, key_id or None, service_id, *values))
    actions.usage_apply(rows=rows, absolute=True, last_used_ms=last_used)
    pipe = client.pipeline(transaction=True)
    if dirty:
        pipe.srem(f"{prefix}usage:dirty", *dirty)
    if last_used:
        # Only the roll-up writes this hash, under the lock: nothing newer can have arrived.
        pipe.hdel(f"{prefix}usage:last-used", *[str(key_id) for key_id in last_used])
    pipe.execute()

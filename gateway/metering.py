"""Per-request usage records, kept off the request path.

With Redis: records are queued in memory and sent every 50 ms in one pipeline: one XADD to the
usage stream holding the batch (trimmed to ~GATEWAY_USAGE_STREAM_MAXLEN entries);
`gateway.tasks.rollup_usage` turns the stream into UsageHour rows. Each record's tokens go to the
limiter as it is recorded (gateway.limits adds them to the keys' counters).

Embedded default (no Redis, one gateway process): the gateway sums the records in memory by
hour, key and service and every 5 s adds them to UsageHour itself (gateway.actions) in a worker
thread; a crash loses at most those 5 s of usage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from concurrent.futures import Executor
from dataclasses import dataclass

from gateway import actions

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Record:
    at_ms: int
    key_id: int | None
    service_id: int
    status: int
    latency_ms: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    def row(self) -> list[int]:
        """The record as the usage stream carries it: Record(*row) reads it back."""
        return [
            self.at_ms,
            self.key_id or 0,
            self.service_id,
            self.status,
            self.latency_ms,
            self.prompt_tokens,
            self.completion_tokens,
            int(self.estimated),
        ]

    @property
    def hour_ms(self) -> int:
        return self.at_ms - self.at_ms % 3_600_000

    def add_to(self, totals: list[int]) -> None:
        """Count this call into an hour's totals (in actions.USAGE_FIELDS order)."""
        totals[0] += 1
        totals[1] += 400 <= self.status < 500
        totals[2] += self.status >= 500
        totals[3] += self.prompt_tokens
        totals[4] += self.completion_tokens
        totals[5] += self.latency_ms


# One stream entry per flush holds the batch's records as a JSON list of Record.row()s: one XADD
# per 50 ms instead of one per call (XADD per record was a tenth of the CPU under load).
# While Redis is unreachable the newest records wait in memory, up to this many; older ones are
# dropped (and logged) so that memory stays bounded. A flush sends at most this many per entry.
MAX_PENDING = 100_000
RECORDS_PER_ENTRY = 5_000


class _FlushedPeriodically:
    """Records wait in memory and go out every `_flush_seconds`; a failed flush keeps them for
    the next one (each subclass's `flush` puts them back)."""

    _flush_seconds: float
    _destination: str  # for the warning

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except Exception:
                logger.warning(
                    "could not write usage to %s; keeping it for the next try",
                    self._destination,
                    exc_info=True,
                )

    async def flush(self) -> None:
        raise NotImplementedError


class RedisMeter(_FlushedPeriodically):
    _destination = "Redis"

    def __init__(self, redis, *, stream: str, maxlen: int, limiter, flush_seconds: float):
        self._redis = redis
        self._stream = stream
        self._maxlen = maxlen
        self._limiter = limiter
        self._flush_seconds = flush_seconds
        self._pending: list[Record] = []

    def record(self, record: Record) -> None:
        self._pending.append(record)
        if record.key_id and self._limiter is not None:
            tokens = record.prompt_tokens + record.completion_tokens
            if tokens:
                self._limiter.add_tokens(record.key_id, tokens, record.at_ms)

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        pipe = self._redis.pipeline(transaction=False)
        for start in range(0, len(batch), RECORDS_PER_ENTRY):
            rows = [record.row() for record in batch[start : start + RECORDS_PER_ENTRY]]
            pipe.xadd(
                self._stream,
                {"records": json.dumps(rows, separators=(",", ":"))},
                maxlen=self._maxlen,
                approximate=True,
            )
        try:
            await pipe.execute()
        except Exception:
            kept = batch + self._pending  # Redis is back soon, usually: try again next time
            if len(kept) > MAX_PENDING:
                logger.warning(
                    "Redis unreachable for too long: dropping the %d oldest usage records",
                    len(kept) - MAX_PENDING,
                )
                kept = kept[-MAX_PENDING:]
            self._pending = kept
            raise


class LocalMeter(_FlushedPeriodically):
    _destination = "the database"

    def __init__(self, *, executor: Executor, limiter, flush_seconds: float):
        self._executor = executor
        self._limiter = limiter
        self._flush_seconds = flush_seconds
        self._totals: dict[tuple[int, int | None, int], list[int]] = defaultdict(lambda: [0] * 6)
        self._last_used: dict[int, int] = {}

    def record(self, record: Record) -> None:
        record.add_to(self._totals[(record.hour_ms, record.key_id, record.service_id)])
        if record.key_id:
            self._last_used[record.key_id] = record.at_ms
            tokens = record.prompt_tokens + record.completion_tokens
            if tokens:
                self._limiter.add_tokens(record.key_id, tokens, record.at_ms)

    async def flush(self) -> None:
        if not self._totals and not self._last_used:
            return
        totals, self._totals = self._totals, defaultdict(lambda: [0] * 6)
        last_used, self._last_used = self._last_used, {}
        rows = [
            actions.UsageRow(hour_ms, key_id, service_id, *values)
            for (hour_ms, key_id, service_id), values in totals.items()
        ]
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: actions.usage_apply(rows=rows, absolute=False, last_used_ms=last_used)
            )
        except Exception:
            for row in rows:  # put them back: added, not replaced, so nothing is counted twice
                values = self._totals[(row.hour_ms, row.key_id, row.service_id)]
                for i, value in enumerate(row.values()):
                    values[i] += value
            for key_id, at_ms in last_used.items():
                self._last_used.setdefault(key_id, at_ms)
            raise

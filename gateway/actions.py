"""The gateway's writes: usage roll-ups into UsageHour and keys' last use."""

from __future__ import annotations

from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Q

from auth.models import InferenceKey, UsageHour
from services.models import InferenceService

# A UsageHour's totals, in the order UsageRow and metering.Record.add_to keep them.
USAGE_FIELDS = (
    "requests",
    "errors_4xx",
    "errors_5xx",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms_total",
)
# last_used_at is written at most this often per key: a busy key is not a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class UsageRow:
    hour_ms: int
    key_id: int | None
    service_id: int
    requests: int
    errors_4xx: int
    errors_5xx: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms_total: int

    def values(self) -> tuple[int, ...]:
        return astuple(self)[3:]


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@transaction.atomic
def usage_apply(*, rows: list[UsageRow], absolute: bool, last_used_ms: dict[int, int] | None = None) -> int:
    """Write usage rows: `absolute` sets the totals (the Redis roll-up, which keeps running totals
    per hour, so a re-run writes the same figures), otherwise adds to them (the embedded
    default's increments). Rows of keys or services deleted meanwhile are dropped. Returns rows
    written."""
    key_ids = {row.key_id for row in rows if row.key_id} | set(last_used_ms or ())
    live_keys = set(InferenceKey.objects.filter(id__in=key_ids).values_list("id", flat=True))
    live_services = set(
        InferenceService.objects.filter(id__in={row.service_id for row in rows}).values_list("id", flat=True)
    )
    written = 0
    for row in rows:
        if row.service_id not in live_services or (row.key_id and row.key_id not in live_keys):
            continue
        hour, key_id = _when(row.hour_ms), row.key_id or None
        values = dict(zip(USAGE_FIELDS, row.values(), strict=True))
        match = UsageHour.objects.filter(hour=hour, key_id=key_id, service_id=row.service_id)
        update = values if absolute else {name: F(name) + value for name, value in values.items()}
        if not match.update(**update):
            try:
                with transaction.atomic():  # a savepoint: another writer may have created it first
                    UsageHour.objects.create(hour=hour, key_id=key_id, service_id=row.service_id, **values)
            except IntegrityError:
                match.update(**update)
        written += 1
    for key_id, at_ms in (last_used_ms or {}).items():
        if key_id in live_keys:
            key_touch(key_id=key_id, at=_when(at_ms))
    return written


def key_touch(*, key_id: int, at: datetime) -> None:
    """Record a key's last use, at most once a minute (a conditional update, no read)."""
    InferenceKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=at - LAST_USED_RESOLUTION), id=key_id
    ).update(last_used_at=at)

"""Queue usage over time: one QueueUsageSample per queue and flavor a minute (written by the
periodic queues.tasks.sample_queue_usage), pruned after settings.QUEUE_USAGE_RETENTION_DAYS."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from queues.admission import Amounts
from queues.models import FlavorQuota, Queue, QueueUsageSample
from queues.selectors import usage_by_flavor
from services import phases


def sample_queue_usage(*, at: datetime | None = None) -> int:
    """Record what every queue holds per flavor now (the minute, so a second run in the same
    minute adds nothing: the row exists). Three queries to read, one insert. Returns how many
    samples were offered."""
    at = (at or timezone.now()).replace(second=0, microsecond=0)
    quotas = list(FlavorQuota.objects.select_related("queue").order_by("queue_id", "position", "id"))
    usage = usage_by_flavor({quota.queue_id for quota in quotas})
    queued = dict(
        Queue.objects.annotate(queued=Count("services", filter=Q(services__phase=phases.QUEUED))).values_list(
            "id", "queued"
        )
    )
    samples = []
    for quota in quotas:
        used, services = usage.get((quota.queue_id, quota.flavor_id), (Amounts(), 0))
        samples.append(
            QueueUsageSample(
                queue_id=quota.queue_id,
                flavor_id=quota.flavor_id,
                at=at,
                gpus_used=used.gpu,
                gpus_quota=quota.gpus,
                cpu_milli_used=used.cpu_milli,
                cpu_milli_quota=quota.cpu_milli,
                memory_used=used.memory,
                memory_quota=quota.memory_bytes,
                services_running=services,
                # Queued services hold no flavor yet: the queue's count, on each of its flavors.
                services_queued=queued.get(quota.queue_id, 0),
            )
        )
    QueueUsageSample.objects.bulk_create(samples, ignore_conflicts=True)
    return len(samples)


def prune_usage_samples(*, now: datetime | None = None) -> int:
    """Delete samples older than the retention; returns how many went."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.QUEUE_USAGE_RETENTION_DAYS)
    deleted, _ = QueueUsageSample.objects.filter(at__lt=cutoff).delete()
    return deleted

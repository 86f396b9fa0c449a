from typing import Any

from django.db import transaction

from queues.models import Queue

QUEUE_FIELDS = ("name", "description", "gpu_quota", "cpu_quota", "memory_quota_gib")


def queue_create(**fields: Any) -> Queue:
    queue = Queue(**fields)
    queue.full_clean()
    with transaction.atomic():
        queue.save()
    return queue


def queue_update(*, queue: Queue, **fields: Any) -> Queue:
    for name, value in fields.items():
        setattr(queue, name, value)
    queue.full_clean()
    queue.save()
    return queue

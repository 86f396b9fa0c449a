"""The queue quota check the console applies before saving a service.

Simple accounting over the queue's live services; the Kueue-backed admission check
(issue "Queues and quotas") replaces this with flavors, borrowing and queue positions.
"""

from django.core.exceptions import ValidationError

from console.validators import parse_quantity
from queues.models import Queue
from services import phases

GIB = 2**30


def check_queue_quota(
    *, queue: Queue, gpu_count: int, replicas: int, cpu: str, memory: str, exclude_id: int | None
) -> None:
    """Raise ValidationError on the queue field when the service would exceed the queue's quota."""
    from services.models import InferenceService

    live = InferenceService.objects.filter(queue=queue, phase__in=phases.ACTIVE).exclude(id=exclude_id)
    gpus_used, cpu_used, memory_used = 0, 0.0, 0.0
    # cpu/memory are quantity strings, so the sum is taken here rather than in SQL.
    for row in live.values_list("gpu_count", "replicas", "cpu", "memory"):
        gpus, count, row_cpu, row_memory = row
        gpus_used += gpus * count
        cpu_used += parse_quantity(row_cpu) * count
        memory_used += parse_quantity(row_memory) * count

    problems = []
    gpus_new = gpu_count * replicas
    if gpus_used + gpus_new > queue.gpu_quota:
        problems.append(
            f"Queue {queue.name} has {gpus_used} of {queue.gpu_quota} GPUs in use; "
            f"this service needs {gpus_new} ({replicas} × {gpu_count})."
        )
    cpu_new = parse_quantity(cpu) * replicas
    if cpu_used + cpu_new > float(queue.cpu_quota):
        problems.append(
            f"Queue {queue.name} has {cpu_used:g} of {float(queue.cpu_quota):g} CPU cores in use; "
            f"this service needs {cpu_new:g}."
        )
    memory_new = parse_quantity(memory) * replicas
    if memory_used + memory_new > queue.memory_quota_gib * GIB:
        problems.append(
            f"Queue {queue.name} has {memory_used / GIB:g} of {queue.memory_quota_gib} GiB memory in use; "
            f"this service needs {memory_new / GIB:g} GiB."
        )
    if problems:
        raise ValidationError({"queue": problems})

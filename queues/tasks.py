from celery import shared_task

from deploy.retry import RETRY_TRANSIENT
from queues.models import Queue


@shared_task(**RETRY_TRANSIENT)
def apply_queue(queue_id: int) -> None:
    """Apply the queue's Kueue objects (ClusterQueue, LocalQueue, flavors, priority classes)."""
    from queues.kueue import apply_queue_objects

    queue = Queue.objects.filter(id=queue_id).first()
    if queue is not None:
        apply_queue_objects(queue)


@shared_task(acks_late=True)
def sample_queue_usage() -> None:
    """Every minute (beat): record each queue's usage per flavor, drop samples past retention."""
    from queues.usage import prune_usage_samples
    from queues.usage import sample_queue_usage as sample

    sample()
    prune_usage_samples()

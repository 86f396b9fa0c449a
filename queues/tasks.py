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

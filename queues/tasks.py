from celery import shared_task

from deploy.clusters import TransientClusterError
from queues.models import Queue


@shared_task(
    acks_late=True,
    autoretry_for=(TransientClusterError,),
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=10,
)
def apply_queue(queue_id: int) -> None:
    """Apply the queue's Kueue objects (ClusterQueue, LocalQueue, flavors, priority classes)."""
    from queues.kueue import apply_queue_objects

    queue = Queue.objects.filter(id=queue_id).first()
    if queue is not None:
        apply_queue_objects(queue)

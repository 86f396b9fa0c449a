from celery import shared_task


@shared_task(acks_late=True)
def apply_queue(queue_id: int) -> None:
    """Apply the queue's Kueue objects (ClusterQueue, LocalQueue, flavors) where Kueue runs."""
    # Filled in when deploy.kueue lands; the console's own admission check needs no cluster objects.

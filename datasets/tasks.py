from celery import shared_task

from datasets.models import Dataset
from datasets.prewarm import start_prewarm
from deploy.clusters import TransientClusterError


@shared_task(
    acks_late=True,
    autoretry_for=(TransientClusterError,),
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=10,
)
def prewarm_dataset(dataset_id: int) -> None:
    """Copy the dataset's files into the cluster (NFS, S3) or mark it ready (PVC, node path)."""
    dataset = Dataset.objects.filter(id=dataset_id).first()
    if dataset is not None:
        start_prewarm(dataset)

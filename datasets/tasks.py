from celery import shared_task

from datasets.models import Dataset
from datasets.prewarm import delete_prewarm_objects, start_prewarm
from deploy.retry import RETRY_TRANSIENT


@shared_task(**RETRY_TRANSIENT)
def prewarm_dataset(dataset_id: int) -> None:
    """Copy the dataset's files into the cluster (NFS, S3) or mark it ready (PVC, node path)."""
    dataset = Dataset.objects.filter(id=dataset_id).first()
    if dataset is not None:
        start_prewarm(dataset)


@shared_task(**RETRY_TRANSIENT)
def delete_dataset_objects(dataset_name: str) -> None:
    """Remove a deleted dataset's copy from the cluster: its Job, Secret and PVC."""
    delete_prewarm_objects(dataset_name)

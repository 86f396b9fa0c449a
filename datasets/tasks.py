from celery import shared_task
from django.db import transaction

from datasets.actions import dataset_set_phase
from datasets.models import Dataset


@shared_task(acks_late=True)
def prewarm_dataset(dataset_id: int) -> None:
    """Make the dataset's files available in the cluster, then release services waiting for it.

    For now a recorded no-op: NFS, local and PVC datasets are mounted as they are, and the
    S3 copy into a cluster-local PVC arrives with the "Datasets and prewarm" issue.
    """
    dataset = Dataset.objects.filter(id=dataset_id).first()
    if dataset is None:
        return
    note = (
        "no copy needed: mounted read-only as it is"
        if dataset.kind != Dataset.Kind.S3
        else "S3 copy not implemented yet; the service mounts PVC dataset-" + dataset.name
    )
    changed = dataset_set_phase(
        dataset_id=dataset.id,
        phase=Dataset.Phase.READY,
        message=f"Prewarm skipped ({note}).",
        from_phases={Dataset.Phase.PENDING, Dataset.Phase.PREWARMING, Dataset.Phase.FAILED},
    )
    if changed:
        from deploy.tasks import reconcile_service
        from services import phases

        waiting = dataset.services.filter(phase=phases.PREWARMING).values_list("id", flat=True)
        for service_id in waiting:
            transaction.on_commit(lambda sid=service_id: reconcile_service.delay(sid))

"""Every write to a dataset."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from datasets.models import Dataset, DatasetEvent

DATASET_FIELDS = (
    "name", "description", "kind", "nfs_server", "nfs_path", "s3_endpoint", "s3_bucket", "s3_prefix",
    "s3_region", "local_path", "pvc_name",
)  # fmt: skip


def dataset_create(*, owner: AbstractBaseUser, **fields: Any) -> Dataset:
    unknown = set(fields) - set(DATASET_FIELDS)
    if unknown:
        raise ValidationError({name: "Unknown field." for name in sorted(unknown)})
    dataset = Dataset(owner=owner, **fields)
    dataset.full_clean()
    with transaction.atomic():
        dataset.save()
        DatasetEvent.objects.create(dataset=dataset, message=f"Created by {owner} ({dataset.location}).")
        transaction.on_commit(lambda: _enqueue_prewarm(dataset.id))
    return dataset


def _enqueue_prewarm(dataset_id: int) -> None:
    from datasets.tasks import prewarm_dataset

    prewarm_dataset.delay(dataset_id)


def dataset_set_phase(*, dataset_id: int, phase: str, message: str, from_phases: set[str]) -> bool:
    """Conditional phase change with a history row; False if someone else moved it first."""
    with transaction.atomic():
        changed = Dataset.objects.filter(id=dataset_id, phase__in=from_phases).update(
            phase=phase, phase_message=message
        )
        if changed:
            DatasetEvent.objects.create(dataset_id=dataset_id, message=f"{phase}: {message}")
    return bool(changed)


def dataset_delete(*, dataset: Dataset) -> None:
    if dataset.services.exclude(phase="Deleted").exists():
        raise ValidationError("Delete the services that use this dataset first.")
    dataset.delete()

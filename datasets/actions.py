"""Every write to a dataset. Storage checks (network) run before any transaction opens."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError

from console.audit import AuditContext, audit_record
from datasets.models import Dataset, DatasetEvent
from datasets.selectors import services_using

DATASET_FIELDS = (
    "name", "description", "kind", "nfs_server", "nfs_path", "s3_endpoint", "s3_bucket", "s3_prefix",
    "s3_region", "s3_path_style", "hub_repo", "hub_revision", "hub_endpoint", "local_path", "pvc_name",
    "cache_size", "storage_class",
)  # fmt: skip
# Write-only inputs, stored encrypted and never shown back.
S3_CREDENTIAL_FIELDS = ("s3_access_key", "s3_secret_key")
CREDENTIAL_FIELDS = (*S3_CREDENTIAL_FIELDS, "hub_token")
# Changing any of these changes which files the dataset holds: prewarm again.
SOURCE_FIELDS = {
    "kind", "nfs_server", "nfs_path", "s3_endpoint", "s3_bucket", "s3_prefix", "s3_region", "s3_path_style",
    "hub_repo", "hub_revision", "hub_endpoint", "local_path", "pvc_name",
}  # fmt: skip
# A failed check of the source, by its reason, is reported next to the field to fix.
S3_ERROR_FIELDS = {
    "AccessDenied": "s3_secret_key",
    "InvalidAccessKeyId": "s3_access_key",
    "SignatureDoesNotMatch": "s3_secret_key",
    "NoSuchBucket": "s3_bucket",
    "EmptySource": "s3_prefix",
    "EmptyPrefix": "s3_prefix",
    "Unreachable": "s3_endpoint",
    "SourceUnreachable": "s3_endpoint",
}
HUB_ERROR_FIELDS = {
    "AccessDenied": "hub_token",
    "NoSuchRepo": "hub_repo",
    "EmptyRepo": "hub_repo",
    "NoSuchRevision": "hub_revision",
    "Unreachable": "hub_endpoint",
    "NotTheApi": "hub_endpoint",
}


def _check_unknown(fields: dict[str, Any]) -> None:
    unknown = set(fields) - set(DATASET_FIELDS) - set(CREDENTIAL_FIELDS)
    if unknown:
        raise ValidationError({name: "Unknown field." for name in sorted(unknown)})


def _split_credentials(fields: dict[str, Any]) -> dict[str, str]:
    return {name: fields.pop(name) or "" for name in CREDENTIAL_FIELDS if name in fields}


def _check_storage(dataset: Dataset) -> None:
    """S3: list the prefix with the given credentials; a hub (Hugging Face, ModelScope): check the
    token and the revision and list the repo. So a typo is an error next to the field now, not a
    failed prewarm later. Runs outside any transaction (it is a network call)."""
    if dataset.kind == Dataset.Kind.S3:
        given = set(dataset.credentials()) & set(S3_CREDENTIAL_FIELDS)
        if len(given) == 1:  # boto3 refuses half a key pair; say which half is missing
            missing = (set(S3_CREDENTIAL_FIELDS) - given).pop()
            raise ValidationError({missing: "Give both the access key and the secret key, or neither."})
        fields, default = S3_ERROR_FIELDS, "s3_bucket"
    elif dataset.kind in (Dataset.Kind.HUB, Dataset.Kind.MODELSCOPE):  # the same fields for both hubs
        fields, default = HUB_ERROR_FIELDS, "hub_repo"
    else:
        return
    from datasets.sources import storage_for
    from datasets.storage import StorageError

    storage = storage_for(dataset)
    if storage is None:
        return
    try:
        storage.check()
    except StorageError as exc:
        raise ValidationError({fields.get(exc.reason, default): str(exc)}) from None


def dataset_create(*, owner: AbstractBaseUser, **fields: Any) -> Dataset:
    _check_unknown(fields)
    credentials = _split_credentials(fields)
    dataset = Dataset(owner=owner, **fields)
    dataset.set_credentials(credentials)
    dataset.full_clean()
    _check_storage(dataset)
    with transaction.atomic():
        dataset.save()
        DatasetEvent.objects.create(dataset=dataset, message=f"Created by {owner} ({dataset.location}).")
        transaction.on_commit(lambda: _enqueue_prewarm(dataset.id))
    return dataset


def dataset_update(*, dataset: Dataset, actor: AbstractBaseUser, **fields: Any) -> Dataset:
    """Change a dataset; empty credential fields keep the stored ones. A new source is prewarmed."""
    _check_unknown(fields)
    fields.pop("name", None)  # the name is the PVC's name: fixed once created
    credentials = {k: v for k, v in _split_credentials(fields).items() if v}
    changed = [name for name, value in fields.items() if getattr(dataset, name) != value]
    for name in changed:
        setattr(dataset, name, fields[name])
    if credentials:
        dataset.set_credentials({**dataset.credentials(), **credentials})
        changed.append("credentials")
    if not changed:
        return dataset
    dataset.full_clean()
    reprewarm = bool(SOURCE_FIELDS & set(changed)) or "credentials" in changed
    if reprewarm:  # a new description needs no call to the storage
        _check_storage(dataset)
    with transaction.atomic():
        dataset.save()
        DatasetEvent.objects.create(
            dataset=dataset, message=f"Changed by {actor}: {', '.join(sorted(changed))}."
        )
        if reprewarm:
            transaction.on_commit(lambda: _enqueue_prewarm(dataset.id))
    return dataset


def dataset_prewarm(*, dataset: Dataset, actor: AbstractBaseUser) -> None:
    """Prewarm on demand (copies only what changed since the last run)."""
    with transaction.atomic():
        DatasetEvent.objects.create(dataset=dataset, message=f"Prewarm requested by {actor}.")
        transaction.on_commit(lambda: _enqueue_prewarm(dataset.id))


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


def dataset_delete(*, dataset: Dataset, context: AuditContext) -> None:
    """Refused while a service uses it; the cluster copy (PVC) goes after commit."""
    if services_using(dataset).exists():
        raise ValidationError("Delete the services that use this dataset first.")
    name, copied = dataset.name, dataset.prewarmed
    with transaction.atomic():
        # Before the delete, while the row has its id; a refused delete rolls it back.
        audit_record(
            context=context,
            action="delete",
            obj=dataset,
            object_type="dataset",
            changes={"kind": [dataset.kind, None]},
        )
        try:
            dataset.delete()
        except ProtectedError:
            raise ValidationError(
                "Deleted services that used this dataset keep their history and still refer to it."
            ) from None
        if copied:
            transaction.on_commit(lambda: _enqueue_cleanup(name))


def _enqueue_cleanup(dataset_name: str) -> None:
    from datasets.tasks import delete_dataset_objects

    delete_dataset_objects.delay(dataset_name)

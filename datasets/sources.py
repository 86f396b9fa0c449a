"""Which Storage reads a dataset's files from the console."""

from pathlib import Path

from django.conf import settings

from datasets.models import Dataset
from datasets.storage import LocalStorage, ManifestStorage, S3Storage, Storage


def storage_for(dataset: Dataset) -> Storage | None:
    """S3 is read directly (ranged reads, no download). Node paths and NFS exports are read where
    the console can see them (on the simulated cluster they are folders of this machine);
    otherwise browsing uses the file list the last prewarm reported. None: nothing is known yet.
    Hugging Face and ModelScope repos are read from the hub (file listing, ranged reads), like S3."""
    if dataset.kind == Dataset.Kind.S3:
        credentials = dataset.credentials()
        return S3Storage(
            endpoint_url=dataset.s3_endpoint or None,
            bucket=dataset.s3_bucket,
            prefix=dataset.s3_prefix,
            region=dataset.s3_region or None,
            access_key=credentials.get("s3_access_key") or None,
            secret_key=credentials.get("s3_secret_key") or None,
            path_style=dataset.s3_path_style,
        )
    if dataset.kind == Dataset.Kind.HUB:
        from datasets.hubstorage import HubStorage  # imports huggingface_hub: only when needed

        return HubStorage(
            repo_id=dataset.hub_repo,
            revision=dataset.hub_revision or "main",
            endpoint=dataset.hub_endpoint or None,
            token=dataset.credentials().get("hub_token") or None,
        )
    if dataset.kind == Dataset.Kind.MODELSCOPE:
        from datasets.modelscopestorage import ModelScopeStorage

        return ModelScopeStorage(
            repo_id=dataset.hub_repo,
            revision=dataset.hub_revision,
            endpoint=dataset.hub_endpoint or None,
            token=dataset.credentials().get("hub_token") or None,
        )
    local = _local_folder(dataset)
    if local is not None:
        return LocalStorage(local)
    if dataset.files:
        return ManifestStorage([(path, size) for path, size in dataset.files])
    return None


def _local_folder(dataset: Dataset) -> Path | None:
    if settings.CLUSTER_BACKEND != "simulated":
        return None
    # On the simulated cluster the "NFS server" and the nodes are this machine.
    path = {Dataset.Kind.NFS: dataset.nfs_path, Dataset.Kind.LOCAL: dataset.local_path}.get(dataset.kind)
    if path and Path(path).is_dir():
        return Path(path)
    return None

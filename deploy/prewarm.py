"""Render the prewarm of a dataset: a PVC for the cluster-local copy, a Secret with the source
credentials (S3 keys, or a Hugging Face or ModelScope token), and a CPU-only Job that runs the copier
(`python -m datasets.copier`).

Pure like deploy.render: no settings, no database, no I/O. The Job never requests a GPU and
prefers nodes without one, so prewarming never holds the hardware services wait for.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from deploy.clusters.base import LABEL_MANAGED_BY, MANAGED_BY

LABEL_DATASET = "inference.console/dataset"
LABEL_COMPONENT = "app.kubernetes.io/component"
CACHE_MOUNT = "/cache"
SOURCE_MOUNT = "/source"
REDACTED = "(hidden)"

Obj = dict[str, Any]


@dataclass(frozen=True)
class PrewarmSpec:
    dataset: str
    namespace: str
    job_name: str
    claim_name: str  # the cluster-local copy, mounted read-only by services
    cache_size: str
    image: str  # the console image, which carries the copier
    source: Literal["s3", "nfs", "hf", "modelscope"]
    s3_url: str = ""  # s3://bucket/prefix
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_path_style: bool = False
    hub_repo: str = ""  # owner/name (Hugging Face or ModelScope)
    hub_revision: str = "main"
    hub_endpoint: str = ""  # empty: https://huggingface.co or https://www.modelscope.cn
    nfs_server: str = ""
    nfs_path: str = ""
    storage_class: str = ""
    # Services on several nodes mount the copy read-only at once.
    access_mode: str = "ReadWriteMany"
    cpu: str = "2"
    memory: str = "4Gi"
    workers: int = 16

    @property
    def secret_name(self) -> str:
        return f"{self.claim_name}-credentials"


def render_prewarm(spec: PrewarmSpec, *, credentials: dict[str, str] | None = None) -> list[Obj]:
    """[Secret], PVC, Job in apply order. `credentials`: the dataset's S3 access key and secret,
    or its hub token, if any; only those its source uses go into the Secret."""
    objects: list[Obj] = []
    values = _secret_values(spec, credentials or {})
    if values:
        objects.append(_secret(spec, values))
    objects.append(_claim(spec))
    objects.append(_job(spec, with_credentials=bool(values)))
    return objects


def redact_secrets(objects: list[Obj]) -> list[Obj]:
    """A copy for display: Secret values replaced, so a manifest view never shows credentials."""
    shown = copy.deepcopy(objects)
    for obj in shown:
        if obj.get("kind") == "Secret":
            for field in ("data", "stringData"):
                if field in obj:
                    obj[field] = dict.fromkeys(obj[field], REDACTED)
    return shown


def _labels(spec: PrewarmSpec) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "prewarm", LABEL_DATASET: spec.dataset}


def _metadata(spec: PrewarmSpec, name: str) -> Obj:
    return {"name": name, "namespace": spec.namespace, "labels": _labels(spec)}


def _secret_values(spec: PrewarmSpec, credentials: dict[str, str]) -> dict[str, str]:
    """The environment the copier reads its credentials from."""
    if spec.source == "hf":
        data = {"HF_TOKEN": credentials.get("hub_token", "")}
    elif spec.source == "modelscope":  # the variable the modelscope client reads too
        data = {"MODELSCOPE_API_TOKEN": credentials.get("hub_token", "")}
    elif credentials:
        data = {
            "AWS_ACCESS_KEY_ID": credentials.get("s3_access_key", ""),
            "AWS_SECRET_ACCESS_KEY": credentials.get("s3_secret_key", ""),
        }
    else:
        data = {}
    return {k: v for k, v in data.items() if v}


def _secret(spec: PrewarmSpec, values: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, spec.secret_name),
        "type": "Opaque",
        "stringData": values,
    }


def _claim(spec: PrewarmSpec) -> Obj:
    claim: Obj = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(spec, spec.claim_name),
        "spec": {
            "accessModes": [spec.access_mode],
            "resources": {"requests": {"storage": str(spec.cache_size)}},
        },
    }
    if spec.storage_class:
        claim["spec"]["storageClassName"] = spec.storage_class
    return claim


def _copier_args(spec: PrewarmSpec) -> list[str]:
    source = {"s3": spec.s3_url, "hf": f"hf://{spec.hub_repo}@{spec.hub_revision or 'main'}"}.get(
        spec.source, SOURCE_MOUNT
    )
    if spec.source == "modelscope":
        source = f"modelscope://{spec.hub_repo}@{spec.hub_revision or 'master'}"
    args = [f"--source={source}", f"--dest={CACHE_MOUNT}", f"--workers={spec.workers}"]
    if spec.source in ("hf", "modelscope") and spec.hub_endpoint:
        args.append(f"--endpoint-url={spec.hub_endpoint}")
    if spec.source == "s3":
        if spec.s3_endpoint:
            args.append(f"--endpoint-url={spec.s3_endpoint}")
        if spec.s3_region:
            args.append(f"--region={spec.s3_region}")
        if spec.s3_path_style:
            args.append("--path-style")
    return args


def _job(spec: PrewarmSpec, *, with_credentials: bool) -> Obj:
    mounts: list[Obj] = [{"name": "cache", "mountPath": CACHE_MOUNT}]
    volumes: list[Obj] = [{"name": "cache", "persistentVolumeClaim": {"claimName": spec.claim_name}}]
    if spec.source == "nfs":
        mounts.append({"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True})
        volumes.append(
            {"name": "source", "nfs": {"server": spec.nfs_server, "path": spec.nfs_path, "readOnly": True}}
        )
    amounts = {"cpu": str(spec.cpu), "memory": str(spec.memory)}  # strings: 1.20's apply rejects numbers
    container: Obj = {
        "name": "copier",
        "image": spec.image,
        "command": ["python", "-m", "datasets.copier"],
        "args": _copier_args(spec),
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "volumeMounts": mounts,
    }
    if with_credentials:
        container["envFrom"] = [{"secretRef": {"name": spec.secret_name}}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(spec, spec.job_name),
        "spec": {
            # The copier resumes where it stopped, so a retry costs little.
            "backoffLimit": 3,
            "template": {
                "metadata": {"labels": {**_labels(spec), "job-name": spec.job_name}},
                "spec": {
                    "restartPolicy": "Never",
                    "enableServiceLinks": False,
                    "containers": [container],
                    "volumes": volumes,
                    "affinity": _prefer_nodes_without_gpus(),
                },
            },
        },
    }


def _prefer_nodes_without_gpus() -> Obj:
    term = {"matchExpressions": [{"key": "nvidia.com/gpu.count", "operator": "DoesNotExist"}]}
    return {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": term}]
        }
    }

"""Deployments in the simulated cluster (pure): checking one, its pod template, its conditions.

parse_pod_template refuses what the API server would refuse (with its wording) and keeps what
the scheduler and the simulated kubelet need; deployment_conditions is the Deployment
controller's view of the pods the adapter counted.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from console.validators import parse_quantity
from deploy.clusters.base import PermanentClusterError

Obj = dict[str, Any]

# Kubernetes' alphabet for generated names (no vowels, no look-alikes).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(frozen=True)
class PodTemplate:
    """What the simulated cluster needs from a Deployment's pod template."""

    template_hash: str
    labels: dict[str, str]
    annotations: dict[str, str]
    requests: dict[str, float]
    containers: list[Obj]  # {"name", "image", "memory_limit", "port", "model_dir"}
    scheduling: Obj  # {"nodeSelector", "affinity", "tolerations"}
    restart_policy: str


def template_hash(template: Obj) -> str:
    """A stable 10-character hash of a pod template, in Kubernetes' name alphabet."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(10):
        number, index = divmod(number, len(NAME_ALPHABET))
        chars.append(NAME_ALPHABET[index])
    return "".join(chars)


def invalid(kind: str, name: str, detail: str) -> PermanentClusterError:
    group = "Deployment.apps" if kind == "Deployment" else kind
    return PermanentClusterError(f'{group} "{name}" is invalid: {detail}')


def _model_dir(container: Obj) -> str:
    """Where the server loads its model from, for the fake logs."""
    args = [str(a) for a in container.get("args") or []]
    for i, arg in enumerate(args):
        for flag in ("--model", "--model-repository"):
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
    mounts = [m.get("mountPath") for m in container.get("volumeMounts") or [] if m.get("mountPath")]
    return mounts[0] if mounts else "/models"


def parse_pod_template(deployment: Obj) -> PodTemplate:
    """Check a Deployment as the API server would and extract its pod template."""
    name = deployment["metadata"]["name"]
    spec = deployment.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise invalid(
            "Deployment", name, f"spec.replicas: Invalid value: {replicas!r}: must be an integer >= 0"
        )
    template = spec.get("template") or {}
    metadata = template.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if not selector:
        raise invalid("Deployment", name, "spec.selector: Required value")
    if any(labels.get(k) != str(v) for k, v in selector.items()):
        raise invalid(
            "Deployment",
            name,
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`",
        )
    pod_spec = template.get("spec") or {}
    restart_policy = pod_spec.get("restartPolicy") or "Always"
    if restart_policy != "Always":
        raise invalid(
            "Deployment",
            name,
            f'spec.template.spec.restartPolicy: Unsupported value: "{restart_policy}": '
            'supported values: "Always"',
        )
    containers = pod_spec.get("containers") or []
    if not containers:
        raise invalid("Deployment", name, "spec.template.spec.containers: Required value")
    requests, facts = container_resources("Deployment", name, containers)
    return PodTemplate(
        template_hash=template_hash(template),
        labels=labels,
        annotations={str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()},
        requests=requests,
        containers=facts,
        scheduling=scheduling_of(pod_spec),
        restart_policy=restart_policy,
    )


def scheduling_of(pod_spec: Obj) -> dict[str, Any]:
    """What the scheduler reads from a pod spec."""
    return {
        "nodeSelector": pod_spec.get("nodeSelector") or {},
        "affinity": pod_spec.get("affinity") or {},
        "tolerations": pod_spec.get("tolerations") or [],
    }


def container_resources(kind: str, name: str, containers: list[Obj]) -> tuple[dict[str, float], list[Obj]]:
    """Summed requests as numbers, and the facts kept per container, of a pod template's
    containers; a missing name or image or a bad quantity is the API server's 422."""
    requests: dict[str, float] = {}
    facts = []
    for i, container in enumerate(containers):
        where = f"spec.template.spec.containers[{i}]"
        for key in ("name", "image"):
            if not container.get(key):
                raise invalid(kind, name, f"{where}.{key}: Required value")
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        try:
            # Kubernetes defaults requests to limits when only limits are given (typical for GPUs).
            for resource, quantity in {**limits, **(resources.get("requests") or {})}.items():
                requests[resource] = requests.get(resource, 0.0) + parse_quantity(quantity)
            memory_limit = int(parse_quantity(limits["memory"])) if "memory" in limits else None
        except ValueError as exc:
            raise invalid(kind, name, f"{where}.resources: {exc}") from None
        ports = [p.get("containerPort") for p in container.get("ports") or [] if p.get("containerPort")]
        facts.append(
            {
                "name": str(container["name"]),
                "image": str(container["image"]),
                "memory_limit": memory_limit,
                "port": ports[0] if ports else 8000,
                "model_dir": _model_dir(container),
            }
        )
    return requests, facts


def _scaled(value: int | str, total: int) -> int:
    """An int-or-percent setting (maxUnavailable) as a count; percentages round down."""
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(total * int(value[:-1]) / 100)
    return int(value)


def deployment_conditions(
    spec: Obj, *, rs_name: str, updated: int, available: int, total: int, seconds_since_update: float
) -> dict[str, tuple[str, str, str]]:
    """The Deployment controller's Available and Progressing conditions.

    Progress is measured from the last change of the Deployment (the real controller also
    counts each pod becoming available as progress)."""
    desired = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        max_unavailable = min(
            desired, _scaled((strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%"), desired)
        )
    else:
        max_unavailable = 0
    if available >= desired - max_unavailable:
        conditions = {
            "Available": ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        }
    else:
        conditions = {
            "Available": (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        }
    if updated == desired and available >= desired and total == desired:
        conditions["Progressing"] = (
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs_name}" has successfully progressed.',
        )
    elif seconds_since_update > int(spec.get("progressDeadlineSeconds", 600)):
        conditions["Progressing"] = (
            "False",
            "ProgressDeadlineExceeded",
            f'ReplicaSet "{rs_name}" has timed out progressing.',
        )
    else:
        conditions["Progressing"] = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
    return conditions

"""Render a ServiceSpec into Kubernetes objects: a pure function of the spec and its runtime.

No Django settings, no database, no I/O: the same spec always gives byte-identical
objects, so `revision_hash` tells whether a service needs to be re-applied. Every
object is built from fresh dicts (no shared sub-objects) so callers may mutate one
without touching another, and YAML dumps carry no anchors.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from deploy.clusters.base import LABEL_MANAGED_BY, LABEL_SERVICE, LABEL_SERVICE_UID, MANAGED_BY
from deploy.runtimes import Runtime, get_runtime
from deploy.runtimes.base import Probe
from deploy.spec import ModelVolume, NodeRule, ServiceSpec, Toleration

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_RUNTIME = "inference.console/runtime"
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_PRIORITY_CLASS = "kueue.x-k8s.io/priority-class"
# Hash of the env ConfigMap on the pod template: envFrom is read only at container start,
# so without it an env change would update the ConfigMap and leave the pods on old values.
ANNOTATION_ENV_HASH = "inference.console/env-hash"
# In-cluster URL of the HTTP port, for the gateway and for people reading the Service.
ANNOTATION_URL = "inference.console/url"
# The name clients use for the model (/v1/models, /v2/models/<name>), for tools that read the Deployment.
ANNOTATION_MODEL_NAME = "inference.console/served-model-name"
# NetworkPolicy: model pods accept traffic only from pods in namespaces carrying these labels
# (1.20 has no kubernetes.io/metadata.name label to select a namespace by name). The README
# says how to label the gateway's and the monitoring namespace.
GATEWAY_NAMESPACE_LABEL = ("inference.console/gateway", "true")
MONITORING_NAMESPACE_LABEL = ("inference.console/monitoring", "true")
METRICS_PORT_NAME = "metrics"

COMPONENT = "inference-server"
CONTAINER_NAME = "server"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# The taint GPU node pools usually carry (GKE, AKS, the NVIDIA GPU operator docs).
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
CACHE_MOUNT_PATH = "/root/.cache"
SHM_MOUNT_PATH = "/dev/shm"  # noqa: S108 - the container's shared memory, not a temp file
TERMINATION_GRACE_SECONDS = 60
# Image pulls of multi-GB serving images come on top of the runtime's load time.
IMAGE_PULL_ALLOWANCE_SECONDS = 600

Obj = dict[str, Any]


# --- public API ---------------------------------------------------------------------------


def render_service(spec: ServiceSpec, *, cluster_domain: str = "cluster.local") -> list[Obj]:
    """The objects of one service in apply order: [ConfigMap `<name>-env`], NetworkPolicy,
    Deployment, Service. The NetworkPolicy comes before the pods, so they are never reachable
    from outside the gateway, not even while the first apply is halfway."""
    runtime = get_runtime(spec.runtime)
    _check_spec(spec)
    objects: list[Obj] = []
    if spec.env:
        objects.append(_config_map(spec))
    objects.append(_network_policy(spec, runtime))
    objects.append(_deployment(spec, runtime))
    objects.append(_service(spec, runtime, cluster_domain))
    return objects


def revision_hash(objects: list[Obj]) -> str:
    """Short stable hash of rendered objects (key order does not matter)."""
    return _hash(objects)


def objects_to_yaml(objects: list[Obj]) -> str:
    """Multi-document YAML for read-only display (never parsed back into a spec)."""
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False, allow_unicode=True)


def selector_labels(name: str) -> dict[str, str]:
    """The Deployment's matchLabels and the Service selector. Selectors are immutable,
    so they hold only what never changes for a service."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SERVICE: name}


# --- launching the server ----------------------------------------------------------------


def _args(spec: ServiceSpec, runtime: Runtime) -> list[str]:
    args = [f"{runtime.model_flag}={_model_dir(spec, runtime)}"]
    if runtime.served_name_flag:
        args.append(f"{runtime.served_name_flag}={spec.served_model_name}")
    args += runtime.fixed_args
    args += [f"{flag}={runtime.port(name).port}" for flag, name in runtime.port_flags]
    if runtime.tensor_parallel_flag and spec.gpu_count > 1:
        # One replica spans all its GPUs: tensor parallel size = GPU count.
        args.append(f"{runtime.tensor_parallel_flag}={spec.gpu_count}")
    return args + list(spec.engine_args)


# --- objects ------------------------------------------------------------------------------


def _config_map(spec: ServiceSpec) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, f"{spec.name}-env", _labels(spec)),
        "data": _env_data(spec),
    }


def _deployment(spec: ServiceSpec, runtime: Runtime) -> Obj:
    labels = _labels(spec, with_queue=True)
    metadata = _metadata(spec, spec.name, labels)
    # On the Deployment, not the pod template: renaming the model must not restart pods by itself.
    metadata["annotations"] = {ANNOTATION_MODEL_NAME: spec.served_model_name or spec.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(spec.name)},
            # A GPU service must roll without spare GPUs: take one pod down, then start one.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            # The default 600 s would call a rollout failed while a big model is still loading.
            "progressDeadlineSeconds": runtime.startup_seconds + IMAGE_PULL_ALLOWANCE_SECONDS,
            "template": {
                "metadata": _pod_metadata(spec, labels),
                "spec": _pod_spec(spec, runtime),
            },
        },
    }


def _service(spec: ServiceSpec, runtime: Runtime, cluster_domain: str) -> Obj:
    metadata = _metadata(spec, spec.name, _labels(spec))
    url = f"http://{spec.name}.{spec.namespace}.svc.{cluster_domain}:{runtime.port('http').port}"
    metadata["annotations"] = {ANNOTATION_URL: url}
    ports = []
    for port in runtime.ports:
        # protocol is explicit: 1.20's server-side apply rejects ports without it.
        entry: Obj = {"name": port.name, "port": port.port, "targetPort": port.name, "protocol": "TCP"}
        if port.app_protocol:
            entry["appProtocol"] = port.app_protocol
        ports.append(entry)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"type": "ClusterIP", "selector": selector_labels(spec.name), "ports": ports},
    }


def _network_policy(spec: ServiceSpec, runtime: Runtime) -> Obj:
    """Ingress to the model pods only from the gateway's namespace (every port but metrics) and
    from the monitoring namespace (the metrics port, where the runtime has one). Egress is left
    alone: a policy listing only Ingress does not restrict it."""

    def peers(label: tuple[str, str]) -> list[Obj]:
        return [{"namespaceSelector": {"matchLabels": {label[0]: label[1]}}}]

    def ports(names: list[str]) -> list[Obj]:
        return [{"protocol": "TCP", "port": runtime.port(name).port} for name in names]

    serving = [port.name for port in runtime.ports if port.name != METRICS_PORT_NAME]
    ingress = [{"from": peers(GATEWAY_NAMESPACE_LABEL), "ports": ports(serving)}]
    if any(port.name == METRICS_PORT_NAME for port in runtime.ports):
        ingress.append({"from": peers(MONITORING_NAMESPACE_LABEL), "ports": ports([METRICS_PORT_NAME])})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(spec, spec.name, _labels(spec)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(spec.name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


# --- metadata -----------------------------------------------------------------------------


def _labels(spec: ServiceSpec, *, with_queue: bool = False) -> dict[str, str]:
    labels = {
        LABEL_NAME: spec.name,
        LABEL_COMPONENT: COMPONENT,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SERVICE: spec.name,
        LABEL_RUNTIME: spec.runtime,
    }
    if spec.service_uid:
        labels[LABEL_SERVICE_UID] = spec.service_uid
    if with_queue and spec.queue_name:
        labels[LABEL_QUEUE] = spec.queue_name
    if with_queue and spec.priority_class:
        labels[LABEL_PRIORITY_CLASS] = spec.priority_class
    return labels


def _metadata(spec: ServiceSpec, name: str, labels: dict[str, str]) -> Obj:
    return {"name": name, "namespace": spec.namespace, "labels": dict(labels)}


def _pod_metadata(spec: ServiceSpec, labels: dict[str, str]) -> Obj:
    metadata: Obj = {"labels": dict(labels)}
    annotations = {key: spec.annotations[key] for key in sorted(spec.annotations)}
    if spec.env:
        annotations[ANNOTATION_ENV_HASH] = _hash(_env_data(spec))
    if annotations:
        metadata["annotations"] = annotations
    return metadata


def _env_data(spec: ServiceSpec) -> dict[str, str]:
    return {name: str(value) for name, value in spec.env}


# --- pod ----------------------------------------------------------------------------------


def _pod_spec(spec: ServiceSpec, runtime: Runtime) -> Obj:
    pod: Obj = {
        # Service links inject <SVC>_PORT=tcp://... vars; a Service named `vllm` sets
        # VLLM_PORT, which vLLM reads as its own setting and fails on.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [_container(spec, runtime)],
        "volumes": _volumes(spec),
    }
    affinity = _affinity(spec)
    if affinity:
        pod["affinity"] = affinity
    tolerations = _tolerations(spec)
    if tolerations:
        pod["tolerations"] = tolerations
    return pod


def _container(spec: ServiceSpec, runtime: Runtime) -> Obj:
    container: Obj = {"name": CONTAINER_NAME, "image": spec.image}
    if runtime.command:
        container["command"] = list(runtime.command)
    container["args"] = _args(spec, runtime)
    container["ports"] = [
        {"name": port.name, "containerPort": port.port, "protocol": "TCP"} for port in runtime.ports
    ]
    if spec.env:
        container["envFrom"] = [{"configMapRef": {"name": f"{spec.name}-env"}}]
    if runtime.extra_env:
        container["env"] = [{"name": name, "value": value} for name, value in runtime.extra_env]
    container["resources"] = _resources(spec)
    container["volumeMounts"] = _volume_mounts(spec, runtime)
    container["startupProbe"] = _probe(runtime.startup_probe)
    container["readinessProbe"] = _probe(runtime.readiness_probe)
    if runtime.liveness_probe is not None:
        container["livenessProbe"] = _probe(runtime.liveness_probe)
    return container


def _resources(spec: ServiceSpec) -> Obj:
    # Quantities are strings: 1.20's server-side apply answers 500 to numbers.
    amounts = {"cpu": str(spec.cpu), "memory": str(spec.memory)}
    if spec.gpu_count > 0:
        amounts[GPU_RESOURCE] = str(spec.gpu_count)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _probe(probe: Probe) -> Obj:
    result: Obj = {"httpGet": {"path": probe.path, "port": probe.port_name}}
    if probe.initial_delay_seconds:
        result["initialDelaySeconds"] = probe.initial_delay_seconds
    result["periodSeconds"] = probe.period_seconds
    result["failureThreshold"] = probe.failure_threshold
    return result


# --- volumes ------------------------------------------------------------------------------


def _model_dir(spec: ServiceSpec, runtime: Runtime) -> str:
    relative = spec.model_path.strip("/")
    return f"{runtime.model_mount_path}/{relative}" if relative else runtime.model_mount_path


def _model_volume_source(volume: ModelVolume) -> Obj:
    if volume.kind == "nfs":
        return {"nfs": {"server": volume.nfs_server, "path": volume.nfs_path, "readOnly": True}}
    if volume.kind == "pvc":
        return {"persistentVolumeClaim": {"claimName": volume.claim_name, "readOnly": True}}
    # Directory, not DirectoryOrCreate: a missing path must fail, not mount an empty dir.
    return {"hostPath": {"path": volume.host_path, "type": "Directory"}}


def _volumes(spec: ServiceSpec) -> list[Obj]:
    volumes = [{"name": "model", **_model_volume_source(spec.model_volume)}]
    if spec.shm_size:
        # Docker's 64 MiB /dev/shm is too small for NCCL and PyTorch data loaders.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.shm_size)}})
    volumes.append({"name": "cache", "emptyDir": {}})
    return volumes


def _volume_mounts(spec: ServiceSpec, runtime: Runtime) -> list[Obj]:
    mounts: list[Obj] = [{"name": "model", "mountPath": runtime.model_mount_path, "readOnly": True}]
    if spec.shm_size:
        mounts.append({"name": "dshm", "mountPath": SHM_MOUNT_PATH})
    # Writable scratch for compile caches (torch, triton kernels) with a read-only model.
    mounts.append({"name": "cache", "mountPath": CACHE_MOUNT_PATH})
    return mounts


# --- scheduling ---------------------------------------------------------------------------


def _match_expression(rule: NodeRule) -> Obj:
    expression: Obj = {"key": rule.key, "operator": rule.operator}
    if rule.operator in ("In", "NotIn"):
        expression["values"] = list(rule.values)
    return expression


def _node_expressions(spec: ServiceSpec) -> list[Obj]:
    expressions: list[Obj] = []
    if spec.affinity_mode == "custom":
        expressions.extend(_match_expression(rule) for rule in spec.node_rules)
    if spec.gpu_type:
        gpu = _match_expression(NodeRule(key=GPU_PRODUCT_LABEL, operator="In", values=(spec.gpu_type,)))
        if gpu not in expressions:
            expressions.append(gpu)
    for key, value in spec.flavor_node_labels:  # the admitted flavor's nodes
        expression = _match_expression(NodeRule(key=key, operator="In", values=(value,)))
        if expression not in expressions:
            expressions.append(expression)
    return expressions


def _affinity(spec: ServiceSpec) -> Obj:
    expressions = _node_expressions(spec)
    if not expressions:
        return {}
    # One term: every expression must hold on the same node (terms are ORed, expressions ANDed).
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def _toleration(toleration: Toleration) -> Obj:
    result: Obj = {"key": toleration.key, "operator": toleration.operator}
    if toleration.value:
        result["value"] = toleration.value
    if toleration.effect:
        result["effect"] = toleration.effect
    return result


def _tolerations(spec: ServiceSpec) -> list[Obj]:
    tolerations = [_toleration(t) for t in spec.tolerations] if spec.affinity_mode == "custom" else []
    for toleration in map(_toleration, spec.flavor_tolerations):
        if toleration not in tolerations:
            tolerations.append(toleration)
    if spec.gpu_count > 0 and GPU_TOLERATION not in tolerations:
        tolerations.append(dict(GPU_TOLERATION))
    return tolerations


# --- checks and hashing -------------------------------------------------------------------


def _check_spec(spec: ServiceSpec) -> None:
    """Refuse specs that would render objects the API server rejects, with a clear message.

    The forms and API check far more; this guards the renderer's own assumptions, e.g.
    for JSON handed to `manage.py render_service`.
    """
    problems: list[str] = []
    for field_name in ("replicas", "gpu_count"):
        value = getattr(spec, field_name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{field_name} must be a whole number >= 0, got {value!r}")
    volume = spec.model_volume
    required = {"nfs": ("nfs_server", "nfs_path"), "pvc": ("claim_name",), "hostPath": ("host_path",)}
    if volume.kind not in required:
        problems.append(f"model_volume.kind must be one of {', '.join(required)}, got {volume.kind!r}")
    else:
        problems.extend(
            f"model_volume.{name} is required for a {volume.kind} volume"
            for name in required[volume.kind]
            if not getattr(volume, name)
        )
    if spec.affinity_mode not in ("auto", "custom"):
        problems.append(f"affinity_mode must be auto or custom, got {spec.affinity_mode!r}")
    problems.extend(
        f"node rule {rule.key} {rule.operator} needs at least one value"
        for rule in spec.node_rules
        if rule.operator in ("In", "NotIn") and not rule.values
    )
    if problems:
        raise ValueError("; ".join(problems))


def _hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]

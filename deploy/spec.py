"""The desired state of one inference service, as plain data.

`ServiceSpec` is the contract between the database (services.InferenceService) and
everything that talks to a cluster: the renderer is a pure function of a ServiceSpec,
and `manage.py render_service spec.json` builds one from JSON without a database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RuntimeName = Literal["vllm", "triton"]
AffinityMode = Literal["auto", "custom"]
VolumeKind = Literal["nfs", "pvc", "hostPath"]


@dataclass(frozen=True)
class NodeRule:
    """One node-affinity match expression, e.g. `nvidia.com/gpu.product In [NVIDIA-H100]`."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = "In"
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""

    @classmethod
    def from_json(cls, t: dict) -> Toleration:
        """From the JSON the models store (missing keys take Kubernetes' defaults)."""
        return cls(
            key=t.get("key", ""),
            operator=t.get("operator", "Equal"),
            value=t.get("value", ""),
            effect=t.get("effect", ""),
        )


@dataclass(frozen=True)
class ModelVolume:
    """Where the model files come from inside the cluster (read-only).

    NFS datasets mount the export directly; S3 and Hugging Face datasets are prewarmed
    into a PVC, so the pod only ever sees `pvc`; local datasets are a node path.
    """

    kind: VolumeKind
    nfs_server: str = ""
    nfs_path: str = ""
    claim_name: str = ""
    host_path: str = ""


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # DNS-1123 label, also the Deployment and Service name
    namespace: str
    runtime: RuntimeName
    image: str  # full image reference, e.g. vllm/vllm-openai:v0.11.0
    model_volume: ModelVolume
    model_path: str  # relative path inside the dataset, e.g. THUDM/chatglm2-6b
    served_model_name: str  # the name clients use (/v1/models, /v2/models/<name>)
    replicas: int = 1
    cpu: str = "4"  # Kubernetes quantities, always strings
    memory: str = "16Gi"
    gpu_count: int = 1
    gpu_type: str = ""  # value of the nvidia.com/gpu.product node label; "" = any
    shm_size: str = ""  # size of the /dev/shm memory emptyDir; "" = none
    engine_args: tuple[str, ...] = ()  # already parsed and checked tokens
    env: tuple[tuple[str, str], ...] = ()
    affinity_mode: AffinityMode = "auto"
    node_rules: tuple[NodeRule, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    queue_name: str = ""  # Kueue LocalQueue name; becomes kueue.x-k8s.io/queue-name
    priority_class: str = ""  # Kueue WorkloadPriorityClass; becomes kueue.x-k8s.io/priority-class
    # The admitted flavor's node labels and tolerations, added to the pod as Kueue would add them.
    flavor_node_labels: tuple[tuple[str, str], ...] = ()
    flavor_tolerations: tuple[Toleration, ...] = ()
    auth_policy: Literal["none", "api_key"] = "none"
    service_uid: str = ""  # the console's id for the service, carried in a label
    annotations: dict[str, str] = field(default_factory=dict)  # pod template annotations

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceSpec:
        """Build a spec from JSON-like data; unknown keys are an error (no silent typos)."""
        data = dict(data)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown spec fields: {', '.join(unknown)}")
        volume = data.get("model_volume") or {}
        data["model_volume"] = volume if isinstance(volume, ModelVolume) else ModelVolume(**volume)
        data["engine_args"] = tuple(data.get("engine_args", ()))
        data["env"] = tuple(tuple(pair) for pair in data.get("env", ()))
        data["node_rules"] = tuple(
            rule
            if isinstance(rule, NodeRule)
            else NodeRule(**{**rule, "values": tuple(rule.get("values", ()))})
            for rule in data.get("node_rules", ())
        )
        for name in ("tolerations", "flavor_tolerations"):
            data[name] = tuple(
                t if isinstance(t, Toleration) else Toleration(**t) for t in data.get(name, ())
            )
        data["flavor_node_labels"] = tuple(tuple(pair) for pair in data.get("flavor_node_labels", ()))
        return cls(**data)

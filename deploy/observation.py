"""What a cluster reports about one service, in a shape both adapters produce.

The watcher and the repair task turn an Observation into a phase with
`deploy.status.derive_status`; the UI shows the pods and events as they were seen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ContainerObservation:
    name: str
    ready: bool = False
    state: str = "waiting"  # waiting | running | terminated
    reason: str = ""  # ContainerCreating, ImagePullBackOff, CrashLoopBackOff, Completed...
    message: str = ""
    restart_count: int = 0
    last_terminated_reason: str = ""  # e.g. OOMKilled, Error
    last_exit_code: int | None = None


@dataclass(frozen=True)
class PodObservation:
    name: str
    phase: str = "Pending"  # Pending | Running | Succeeded | Failed | Unknown
    node: str = ""
    ready: bool = False
    # PodScheduled condition: None = not reported yet
    scheduled: bool | None = None
    scheduling_reason: str = ""  # Unschedulable, SchedulingGated
    scheduling_message: str = ""  # "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    containers: tuple[ContainerObservation, ...] = ()
    created_at: datetime | None = None
    terminating: bool = False


@dataclass(frozen=True)
class EventObservation:
    type: str  # Normal | Warning
    reason: str
    message: str
    object_kind: str = ""
    object_name: str = ""
    count: int = 1
    last_seen: datetime | None = None


@dataclass(frozen=True)
class KueueWorkloadObservation:
    """Kueue's verdict on one pod (its pod-integration Workload), read only where Kueue's
    Workload kind is served. See deploy/clusters/kubernetes/workloads.py."""

    name: str  # the Workload
    pod: str  # the pod it stands for
    # Pending | Inadmissible | QuotaReserved | Admitted | Evicted | Deactivated | Finished
    state: str = "Pending"
    reason: str = ""  # Kueue's condition reason, e.g. Pending, Inadmissible, Preempted
    message: str = ""  # Kueue's words, e.g. "couldn't assign flavors to pod set main: ..."
    queue: str = ""  # the LocalQueue (kueue.x-k8s.io/queue-name)
    cluster_queue: str = ""  # status.admission.clusterQueue once quota is reserved
    flavors: tuple[tuple[str, str], ...] = ()  # (resource, flavor) Kueue assigned

    @property
    def holds_pod(self) -> bool:
        """Kueue keeps the pod from starting (gated) in these states."""
        return self.state in {"Pending", "Inadmissible", "QuotaReserved", "Evicted", "Deactivated"}


@dataclass(frozen=True)
class Observation:
    """Everything seen for one service's objects (selected by the console's labels)."""

    found: bool  # does the Deployment exist?
    desired_replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    # Deployment conditions, e.g. {"Progressing": ("False", "ProgressDeadlineExceeded", "...")}
    conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    pods: tuple[PodObservation, ...] = ()
    events: tuple[EventObservation, ...] = ()
    other_objects: int = 0  # Services/ConfigMaps/... still present (used while deleting)
    observed_at: datetime | None = None
    # Kueue's Workloads for the pods (empty where Kueue is not installed).
    workloads: tuple[KueueWorkloadObservation, ...] = ()

    @property
    def anything_left(self) -> bool:
        return self.found or bool(self.pods) or self.other_objects > 0

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form kept on the service row for the detail page."""

        def convert(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [convert(v) for v in value]
            return value

        return convert(asdict(self))


@dataclass(frozen=True)
class JobObservation:
    """What the cluster reports about a Job (a prewarm) and its newest pod."""

    found: bool
    active: int = 0
    succeeded: int = 0
    failed: int = 0  # pods that failed (each retry is a new pod)
    complete: bool = False  # the Job's Complete condition is True
    failure_reason: str = ""  # the Job's Failed condition, e.g. BackoffLimitExceeded
    failure_message: str = ""
    pod: str = ""  # newest pod, whose log carries the copier's progress
    pod_phase: str = ""
    waiting_reason: str = ""  # e.g. ContainerCreating, ImagePullBackOff, Unschedulable
    waiting_message: str = ""

    @property
    def finished(self) -> bool:
        return self.complete or bool(self.failure_reason)

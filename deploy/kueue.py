"""Render the console's queues into Kueue objects (kueue.x-k8s.io/v1beta2): pure functions of specs.

The spec dataclasses below are the contract between the database (queues/) and the cluster:
ResourceFlavor <- FlavorSpec, ClusterQueue + one LocalQueue per namespace <- QueueSpec,
WorkloadPriorityClass <- PriorityClassSpec. No Django settings, no database, no I/O; the same
specs always give equal objects, built from fresh dicts (callers may mutate one safely).

Only v1beta2 is rendered: it is the CRDs' storage version, and without Kueue's conversion
webhook a v1beta1 ClusterQueue silently loses its cohort (v1beta2 renamed `cohort` to
`cohortName`). Quantities are strings ("8", "500m", "512Gi"), as everywhere in the console.

Kueue enforces part of its rules with CEL (needs Kubernetes 1.25+) and part in its validating
webhook (only where Kueue runs). Neither is there on the 1.20 test cluster, and a console must
not rely on a webhook to catch its own mistakes, so `check_*` refuses those cases here with a
clear message; what the CRD's OpenAPI schema checks (name patterns, enums, item counts) is
left to the API server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from kubernetes.utils import parse_quantity

from deploy.clusters.base import LABEL_MANAGED_BY, MANAGED_BY
from deploy.render import GPU_RESOURCE
from deploy.spec import Toleration

API_VERSION = "kueue.x-k8s.io/v1beta2"
# The queue an object belongs to (ClusterQueue and its LocalQueues). Not to be confused with
# deploy.render.LABEL_QUEUE, Kueue's own kueue.x-k8s.io/queue-name label on a service's pods.
LABEL_QUEUE = "inference.console/queue"
# The console's own name label on the namespaces it manages (render_namespaces): ClusterQueues
# select namespaces by it. Not kubernetes.io/metadata.name: the API server sets that one only
# from Kubernetes 1.21 on (the test cluster is 1.20).
NAMESPACE_LABEL = "inference.console/namespace"
# One resource group covering all three: every flavor of a queue lists all of them, in this
# order (a CEL rule wants the same count; Kueue's webhook wants the same names in order).
COVERED_RESOURCES = (GPU_RESOURCE, "cpu", "memory")

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
INT32 = (-(2**31), 2**31 - 1)
# The CRD's quantity pattern without the sign: quotas and limits are never negative.
_QUANTITY = re.compile(
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

Obj = dict[str, Any]
QueueingStrategy = Literal["BestEffortFIFO", "StrictFIFO"]


# --- specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Taint:
    """A taint the flavor's nodes carry: workloads that do not tolerate it are not admitted there."""

    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


@dataclass(frozen=True)
class FlavorSpec:
    """A kind of node (h100, a100-80gb, cpu): the labels that pick its nodes, the taints they
    carry, and the tolerations Kueue adds to pods admitted to this flavor."""

    name: str
    node_labels: dict[str, str] = field(default_factory=dict)  # empty: every node
    taints: tuple[Taint, ...] = ()
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True)
class ResourceQuota:
    """One resource's quota in one flavor, as Kubernetes quantity strings.

    borrowing_limit: how much more the queue may borrow from its cohort (None: no cap).
    lending_limit: how much of its unused nominal quota the cohort may borrow (None: all of it).
    Both need a cohort.
    """

    nominal: str
    borrowing_limit: str | None = None
    lending_limit: str | None = None


@dataclass(frozen=True)
class FlavorQuotaSpec:
    """A queue's quota in one flavor. All three resources are required: a CPU-only flavor says
    gpu=ResourceQuota("0")."""

    flavor: str  # a FlavorSpec name
    gpu: ResourceQuota
    cpu: ResourceQuota
    memory: ResourceQuota

    def quotas(self) -> tuple[tuple[str, ResourceQuota], ...]:
        """(resource name, quota) in COVERED_RESOURCES order."""
        return ((GPU_RESOURCE, self.gpu), ("cpu", self.cpu), ("memory", self.memory))


@dataclass(frozen=True)
class PreemptionSpec:
    """ClusterQueue.spec.preemption; Kueue's defaults are Never throughout."""

    within_cluster_queue: Literal["Never", "LowerPriority", "LowerOrNewerEqualPriority"] = "Never"
    reclaim_within_cohort: Literal["Never", "LowerPriority", "Any"] = "Never"
    borrow_within_cohort: Literal["Never", "LowerPriority"] = "Never"
    # Only with borrow_within_cohort=LowerPriority: preempt only workloads at or below this priority.
    max_priority_threshold: int | None = None


@dataclass(frozen=True)
class QueueSpec:
    """A queue: a ClusterQueue with a quota per flavor, tried in the order given, and a LocalQueue
    of the same name in each namespace allowed to use it."""

    name: str
    flavors: tuple[FlavorQuotaSpec, ...]
    namespaces: tuple[str, ...] = ()  # empty: no namespace may submit to it yet
    cohort: str = ""  # queues in one cohort lend each other unused quota; "" = none
    queueing_strategy: QueueingStrategy = "BestEffortFIFO"
    preemption: PreemptionSpec = PreemptionSpec()


@dataclass(frozen=True)
class PriorityClassSpec:
    """A WorkloadPriorityClass: higher values are admitted first within a queue."""

    name: str
    value: int
    description: str = ""


# --- rendering ----------------------------------------------------------------------------


def render_flavor(flavor: FlavorSpec) -> Obj:
    check_flavor(flavor)
    spec: Obj = {}
    if flavor.node_labels:
        spec["nodeLabels"] = {key: flavor.node_labels[key] for key in sorted(flavor.node_labels)}
    if flavor.taints:
        spec["nodeTaints"] = [_taint(taint) for taint in flavor.taints]
    if flavor.tolerations:
        spec["tolerations"] = [_toleration(toleration) for toleration in flavor.tolerations]
    return {
        "apiVersion": API_VERSION,
        "kind": "ResourceFlavor",
        "metadata": {"name": flavor.name, "labels": _labels()},
        "spec": spec,
    }


def render_cluster_queue(queue: QueueSpec) -> Obj:
    check_queue(queue)
    spec: Obj = {}
    if queue.namespaces:
        # matchExpressions, not matchLabels: one In expression lists any number of namespaces.
        # No namespaces: no selector at all, which Kueue reads as "no namespace" ({} is "all").
        spec["namespaceSelector"] = {
            "matchExpressions": [
                {"key": NAMESPACE_LABEL, "operator": "In", "values": sorted(queue.namespaces)}
            ]
        }
    if queue.cohort:
        spec["cohortName"] = queue.cohort
    spec["queueingStrategy"] = queue.queueing_strategy
    spec["preemption"] = _preemption(queue.preemption)
    spec["resourceGroups"] = [
        {
            "coveredResources": list(COVERED_RESOURCES),
            # Order matters: Kueue tries the flavors in this order.
            "flavors": [_flavor_quotas(quota) for quota in queue.flavors],
        }
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": "ClusterQueue",
        "metadata": {"name": queue.name, "labels": _labels(queue.name)},
        "spec": spec,
    }


def render_local_queues(queue: QueueSpec) -> list[Obj]:
    """One LocalQueue per namespace, named like the queue, so a service's
    kueue.x-k8s.io/queue-name label is the queue's name whatever its namespace."""
    check_queue(queue)
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "LocalQueue",
            "metadata": {"name": queue.name, "namespace": namespace, "labels": _labels(queue.name)},
            "spec": {"clusterQueue": queue.name},
        }
        for namespace in sorted(queue.namespaces)
    ]


def render_queue(queue: QueueSpec) -> list[Obj]:
    """The queue's objects in apply order: the ClusterQueue, then its LocalQueues."""
    return [render_cluster_queue(queue), *render_local_queues(queue)]


def render_namespaces(namespaces: tuple[str, ...] | list[str] | set[str]) -> list[Obj]:
    """The namespaces carrying the console's name label (NAMESPACE_LABEL), for server-side apply
    before the LocalQueues: apply creates a missing namespace and only adds the label to an
    existing one (the console owns that label and nothing else of it)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {NAMESPACE_LABEL: namespace}},
        }
        for namespace in sorted(set(namespaces))
    ]


def render_priority_class(priority_class: PriorityClassSpec) -> Obj:
    check_priority_class(priority_class)
    obj: Obj = {
        "apiVersion": API_VERSION,
        "kind": "WorkloadPriorityClass",
        "metadata": {"name": priority_class.name, "labels": _labels()},
        "value": priority_class.value,
    }
    if priority_class.description:
        obj["description"] = priority_class.description
    return obj


def render_kueue(
    flavors: tuple[FlavorSpec, ...] | list[FlavorSpec],
    queues: tuple[QueueSpec, ...] | list[QueueSpec],
    priority_classes: tuple[PriorityClassSpec, ...] | list[PriorityClassSpec] = (),
) -> list[Obj]:
    """Everything, in apply order: flavors and priority classes before the queues that use them
    (a ClusterQueue naming a missing flavor is accepted but stays inactive)."""
    known = {flavor.name for flavor in flavors}
    problems = [
        f"queue {queue.name}: unknown flavor {quota.flavor}"
        for queue in queues
        for quota in queue.flavors
        if quota.flavor not in known
    ]
    if problems:
        raise ValueError("; ".join(problems))
    objects = [render_flavor(flavor) for flavor in flavors]
    objects += [render_priority_class(priority_class) for priority_class in priority_classes]
    for queue in queues:
        objects += render_queue(queue)
    return objects


# --- pieces -------------------------------------------------------------------------------


def _labels(queue: str = "") -> dict[str, str]:
    labels = {LABEL_MANAGED_BY: MANAGED_BY}
    if queue:
        # Only a queue's own objects: flavors and priority classes are shared by many queues.
        labels[LABEL_QUEUE] = queue
    return labels


def _taint(taint: Taint) -> Obj:
    result: Obj = {"key": taint.key}
    if taint.value:
        result["value"] = taint.value
    result["effect"] = taint.effect
    return result


def _toleration(toleration: Toleration) -> Obj:
    result: Obj = {}
    if toleration.key:
        result["key"] = toleration.key
    result["operator"] = toleration.operator
    if toleration.value:
        result["value"] = toleration.value
    if toleration.effect:
        result["effect"] = toleration.effect
    return result


def _preemption(preemption: PreemptionSpec) -> Obj:
    # Rendered in full even at the defaults, so the applied object says what the queue does.
    borrow: Obj = {"policy": preemption.borrow_within_cohort}
    if preemption.max_priority_threshold is not None:
        borrow["maxPriorityThreshold"] = preemption.max_priority_threshold
    return {
        "withinClusterQueue": preemption.within_cluster_queue,
        "reclaimWithinCohort": preemption.reclaim_within_cohort,
        "borrowWithinCohort": borrow,
    }


def _flavor_quotas(quota: FlavorQuotaSpec) -> Obj:
    resources = []
    for name, amounts in quota.quotas():
        resource: Obj = {"name": name, "nominalQuota": amounts.nominal}
        if amounts.borrowing_limit is not None:
            resource["borrowingLimit"] = amounts.borrowing_limit
        if amounts.lending_limit is not None:
            resource["lendingLimit"] = amounts.lending_limit
        resources.append(resource)
    return {"name": quota.flavor, "resources": resources}


# --- checks: what neither the schema nor a 1.20 API server catches -----------------------


def check_flavor(flavor: FlavorSpec) -> None:
    """The CEL rules of ResourceFlavor's taints and tolerations."""
    problems = [
        f"flavor {flavor.name}: taint {taint.key} has effect {taint.effect!r}; "
        f"use one of {', '.join(TAINT_EFFECTS)}"
        for taint in flavor.taints
        if taint.effect not in TAINT_EFFECTS
    ]
    for toleration in flavor.tolerations:
        what = f"flavor {flavor.name}: toleration {toleration.key or '(any key)'}"
        if toleration.operator not in ("Equal", "Exists"):
            problems.append(f"{what} has operator {toleration.operator!r}; use Equal or Exists")
        if not toleration.key and toleration.operator != "Exists":
            problems.append(f"{what} has no key, so its operator must be Exists")
        if toleration.operator == "Exists" and toleration.value:
            problems.append(f"{what} has operator Exists, so it takes no value")
        if toleration.effect and toleration.effect not in TAINT_EFFECTS:
            problems.append(f"{what} has effect {toleration.effect!r}; use one of {', '.join(TAINT_EFFECTS)}")
    _raise(problems)


def check_queue(queue: QueueSpec) -> None:
    """Kueue's webhook rules and the ClusterQueue CEL rules, on the spec."""
    problems: list[str] = []
    if not queue.flavors:
        problems.append(f"queue {queue.name} needs a quota in at least one flavor")
    problems += [
        f"queue {queue.name}: flavor {name} is listed twice"
        for name in _duplicates(q.flavor for q in queue.flavors)
    ]
    problems += [
        f"queue {queue.name}: namespace {name} is listed twice" for name in _duplicates(queue.namespaces)
    ]
    for quota in queue.flavors:
        for resource, amounts in quota.quotas():
            where = f"queue {queue.name}, flavor {quota.flavor}, {resource}"
            nominal = _quantity(amounts.nominal, f"{where}: nominal quota", problems)
            for limit_name, limit in (
                ("borrowing", amounts.borrowing_limit),
                ("lending", amounts.lending_limit),
            ):
                if limit is None:
                    continue
                value = _quantity(limit, f"{where}: {limit_name} limit", problems)
                if not queue.cohort:
                    problems.append(f"{where}: a {limit_name} limit needs a cohort")
                if limit_name == "lending" and value is not None and nominal is not None and value > nominal:
                    problems.append(
                        f"{where}: lending limit {limit} is more than the nominal quota {amounts.nominal}"
                    )
    preemption = queue.preemption
    if preemption.reclaim_within_cohort == "Never" and preemption.borrow_within_cohort != "Never":
        problems.append(
            f"queue {queue.name}: preempting while borrowing (borrow_within_cohort) needs "
            "reclaim_within_cohort other than Never"
        )
    if preemption.max_priority_threshold is not None:
        if preemption.borrow_within_cohort == "Never":
            problems.append(f"queue {queue.name}: max_priority_threshold needs borrow_within_cohort")
        if not _is_int32(preemption.max_priority_threshold):
            problems.append(f"queue {queue.name}: max_priority_threshold must be a 32-bit integer")
    _raise(problems)


def check_priority_class(priority_class: PriorityClassSpec) -> None:
    value = priority_class.value
    if not _is_int32(value):
        _raise([f"priority class {priority_class.name}: value must be a 32-bit integer, got {value!r}"])


def _quantity(value: Any, what: str, problems: list[str]) -> Decimal | None:
    """The quantity's value, or None after noting why it is not a non-negative quantity string."""
    if not isinstance(value, str) or not _QUANTITY.match(value):
        problems.append(f"{what} must be a non-negative quantity string like 8, 500m or 512Gi, got {value!r}")
        return None
    return Decimal(parse_quantity(value))


def _is_int32(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and INT32[0] <= value <= INT32[1]


def _duplicates(names: Any) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for name in names:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    return repeated


def _raise(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))

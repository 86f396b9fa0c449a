"""The simulated scheduler (pure): which node a pending pod fits on, and if none, why not.

It follows kube-scheduler's default filters in their order (taints, node affinity, then
resources) and words its verdict as kube-scheduler's FitError does, so that the console shows
"0/3 nodes are available: 3 Insufficient nvidia.com/gpu." on both backends. Binding pods to
nodes (in the database, under a lock) is the adapter's part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from console.validators import parse_quantity
from deploy.clusters.base import NodeInfo
from deploy.models import SimulatedPod

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
AFFINITY_REASON = "node(s) didn't match Pod's node affinity/selector"

# Sums of float cores (0.1 + 0.2) must not make a pod that exactly fits look too big.
_EPSILON = 1e-6


@dataclass(frozen=True)
class PodNeeds:
    """What the scheduler looks at in a pod."""

    requests: Mapping[str, float]  # cpu in cores, memory in bytes, others as counts
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: Mapping[str, Any] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' ToleratesTaint: effect, then key (empty key + Exists matches all), then value."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if not key:
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def _matches_expression(labels: Mapping[str, str], expression: Mapping[str, Any]) -> bool:
    key = expression.get("key", "")
    operator = expression.get("operator", "")
    values = [str(v) for v in expression.get("values") or []]
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and key in labels and len(values) == 1:
        try:
            left, right = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return left > right if operator == "Gt" else left < right
    return False


def _matches_term(node: NodeInfo, term: Mapping[str, Any]) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term matches no node, as in Kubernetes
    return all(_matches_expression(node.labels, e) for e in expressions) and all(
        _matches_expression({"metadata.name": node.name}, f) for f in fields
    )


def matches_node_affinity(node: NodeInfo, pod: PodNeeds) -> bool:
    """nodeSelector (all pairs) and required node affinity (terms ORed, expressions ANDed)."""
    if any(node.labels.get(k) != v for k, v in pod.node_selector.items()):
        return False
    required = (pod.affinity.get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = (required or {}).get("nodeSelectorTerms") or []
    return not terms or any(_matches_term(node, term) for term in terms)


def _resource_order(resource: str) -> tuple[int, str]:
    return ({"cpu": 0, "memory": 1, "ephemeral-storage": 2}.get(resource, 3), resource)


def node_misfit(node: NodeInfo, pod: PodNeeds, used: Mapping[str, float]) -> list[str]:
    """Why `pod` cannot run on `node` in the scheduler's words ([] = it fits).

    Filters run in kube-scheduler's default order and the first that fails gives the
    reasons, so one node counts once per reason as in "0/3 nodes are available: ...".
    `used` holds the requests of the pods already bound there (and "pods": their count).
    """
    untolerated = [
        taint
        for taint in node.taints
        if taint.get("effect") in ("NoSchedule", "NoExecute")
        and not any(tolerates(t, taint) for t in pod.tolerations)
    ]
    if any(taint.get("key") == UNSCHEDULABLE_TAINT for taint in untolerated):
        return ["node(s) were unschedulable"]
    if untolerated:
        taint = untolerated[0]
        return [f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"]
    if not matches_node_affinity(node, pod):
        return [AFFINITY_REASON]
    reasons = []
    if used.get("pods", 0) + 1 > parse_quantity(node.allocatable.get("pods", "110")):
        reasons.append("Too many pods")
    for resource in sorted(pod.requests, key=_resource_order):
        wanted = pod.requests[resource]
        if wanted <= 0 or resource == "pods":
            continue
        free = parse_quantity(node.allocatable.get(resource, "0")) - used.get(resource, 0.0)
        if wanted > free + _EPSILON:
            reasons.append(f"Insufficient {resource}")
    return reasons


def scheduler_message(node_count: int, reasons: Iterable[str]) -> str:
    """kube-scheduler's FitError text: each reason counted over the nodes, sorted as strings."""
    if node_count == 0:
        return "no nodes available to schedule pods"
    counts = Counter(reasons)
    parts = sorted(f"{count} {reason}" for reason, count in counts.items())
    return f"0/{node_count} nodes are available: {', '.join(parts)}."


def pick_node(
    nodes: Iterable[NodeInfo], pod: PodNeeds, usage: Mapping[str, Mapping[str, float]]
) -> tuple[str | None, str]:
    """(the first node, in file order, the pod fits on, "") or (None, the scheduler's message)."""
    nodes = list(nodes)
    reasons: list[str] = []
    for node in nodes:
        misfit = node_misfit(node, pod, usage.get(node.name, {}))
        if not misfit:
            return node.name, ""
        reasons.extend(misfit)
    return None, scheduler_message(len(nodes), reasons)


def needs_of(pod: SimulatedPod) -> PodNeeds:
    """What the scheduler looks at in a stored pod."""
    scheduling = pod.scheduling or {}
    return PodNeeds(
        requests=pod.requests or {},
        node_selector=scheduling.get("nodeSelector") or {},
        affinity=scheduling.get("affinity") or {},
        tolerations=tuple(scheduling.get("tolerations") or ()),
    )


def add_usage(used: dict[str, float], requests: Mapping[str, float]) -> None:
    """Count a bound pod and its requests in its node's usage (a defaultdict(float))."""
    used["pods"] += 1
    for resource, amount in (requests or {}).items():
        used[resource] += amount

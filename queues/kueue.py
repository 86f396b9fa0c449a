"""The queues as Kueue objects: models -> deploy.kueue specs -> apply. Where Kueue is not
installed (the simulated cluster, a cluster without its CRDs) nothing is applied and the queue
says so; the console's own admission check (services.admission) governs either way."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from deploy.clusters import ClusterError, PermanentClusterError, get_cluster
from deploy.kueue import (
    LABEL_QUEUE,
    FlavorQuotaSpec,
    FlavorSpec,
    PriorityClassSpec,
    QueueSpec,
    ResourceQuota,
    Taint,
    render_kueue,
    render_namespaces,
)
from deploy.spec import Toleration
from queues.models import PriorityClass, Queue, ResourceFlavor
from queues.selectors import queue_namespaces


def flavor_spec(flavor: ResourceFlavor) -> FlavorSpec:
    return FlavorSpec(
        name=flavor.name,
        node_labels=dict(flavor.node_labels or {}),
        taints=tuple(
            Taint(key=t["key"], value=t.get("value", ""), effect=t.get("effect", "NoSchedule"))
            for t in flavor.node_taints or ()
        ),
        tolerations=tuple(map(Toleration.from_json, flavor.tolerations or ())),
    )


def _limit(value: int | None) -> str | None:
    return None if value is None else str(value)


def queue_spec(queue: Queue) -> QueueSpec:
    return QueueSpec(
        name=queue.name,
        flavors=tuple(
            FlavorQuotaSpec(
                flavor=quota.flavor.name,
                gpu=ResourceQuota(
                    str(quota.gpus),
                    borrowing_limit=_limit(quota.gpu_borrowing_limit),
                    lending_limit=_limit(quota.gpu_lending_limit),
                ),
                cpu=ResourceQuota(str(quota.cpu.normalize())),
                memory=ResourceQuota(f"{quota.memory_gib}Gi"),
            )
            for quota in queue.quotas.select_related("flavor").order_by("position", "id")
        ),
        namespaces=tuple(queue_namespaces(queue)),
        cohort=queue.cohort,
        queueing_strategy=queue.strategy,
    )


def queue_objects(queue: Queue) -> list[dict]:
    """The namespaces of its LocalQueues (labelled for the ClusterQueue's namespaceSelector), the
    flavors it uses, every priority class, the ClusterQueue and a LocalQueue per namespace."""
    flavors = ResourceFlavor.objects.filter(quotas__queue=queue).distinct()
    spec = queue_spec(queue)
    return render_namespaces(spec.namespaces) + render_kueue(
        [flavor_spec(f) for f in flavors],
        [spec],
        [PriorityClassSpec(p.name, p.value, p.description) for p in PriorityClass.objects.all()],
    )


def apply_queue_objects(queue: Queue) -> None:
    """Apply and record the outcome on the queue (outside any transaction: a cluster call)."""
    try:
        objects = queue_objects(queue)
    except ValueError as exc:
        _record(queue, Queue.KueueState.FAILED, f"The Kueue objects are invalid: {exc}")
        return
    namespaces = sorted(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")
    cluster = get_cluster()
    try:
        lines = cluster.apply(objects)
        for gone in sorted(set(queue.kueue_namespaces or ()) - set(namespaces)):
            cluster.delete_labelled(gone, {LABEL_QUEUE: queue.name}, ("LocalQueue",))
            lines.append(f"LocalQueue {gone}/{queue.name}: deleted")
    except PermanentClusterError as exc:
        _record(
            queue,
            Queue.KueueState.NOT_APPLIED,
            f"Kueue objects not applied ({exc}). The console's own admission check applies the quotas.",
        )
        return
    except ClusterError:
        raise  # transient: the task retries
    _record(queue, Queue.KueueState.APPLIED, "; ".join(lines), namespaces=namespaces)


def _record(queue: Queue, state: str, message: str, *, namespaces: list[str] | None = None) -> None:
    changes = {"kueue_state": state, "kueue_message": message[:1000], "kueue_applied_at": timezone.now()}
    if namespaces is not None:
        changes["kueue_namespaces"] = namespaces
    with transaction.atomic():
        Queue.objects.filter(id=queue.id).update(**changes)

"""Kueue's own verdict on a service's pods: the Workload objects of Kueue's pod integration.

Kueue (pod integration, which also covers a Deployment's pods) gates each pod labelled
kueue.x-k8s.io/queue-name and creates a Workload for it in the pod's namespace, owned by the pod
(ownerReferences) and labelled kueue.x-k8s.io/job-uid=<pod uid>. Its status conditions say why the
pod waits: QuotaReserved=False with reason Pending ("couldn't assign flavors to pod set main:
insufficient unused quota for nvidia.com/gpu in flavor h100, 2 more needed") or Inadmissible
("LocalQueue gpu doesn't exist"), QuotaReserved=True before Admitted=True (admission checks),
Evicted=True (reason Preempted, PodsReadyTimeout, InactiveWorkload...) and Finished=True.

read_workloads is the adapter's read (only when the cluster serves the kind; the answer is cached
for a minute so a cluster without Kueue costs no discovery per observation); workload_observation
is the pure mapping, unit-tested on Kueue's own messages in tests/unit/test_kueue_workloads.py.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from kubernetes.dynamic.resource import Resource

from deploy.clusters.base import PermanentClusterError
from deploy.observation import KueueWorkloadObservation

Obj = dict[str, Any]

KUEUE_GROUP = "kueue.x-k8s.io"
# Newest first: the conditions and labels read here are the same in both.
WORKLOAD_VERSIONS = (f"{KUEUE_GROUP}/v1beta2", f"{KUEUE_GROUP}/v1beta1")
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"
# How long "is the Workload kind served?" is believed: discovery on a miss is a full re-read.
DISCOVERY_TTL_SECONDS = 60.0

_served: weakref.WeakKeyDictionary[Any, tuple[float, Resource | None]] = weakref.WeakKeyDictionary()
_served_lock = threading.Lock()


def workload_resource(api: Any) -> Resource | None:
    """The served Workload resource of Kueue, or None where Kueue is not installed."""
    now = time.monotonic()
    with _served_lock:
        cached = _served.get(api)
    if cached is not None and now - cached[0] < DISCOVERY_TTL_SECONDS:
        return cached[1]
    resource = None
    for api_version in WORKLOAD_VERSIONS:
        try:
            resource = api.resource_for(api_version, "Workload")
            break
        except PermanentClusterError:
            continue
    with _served_lock:
        _served[api] = (now, resource)
    return resource


def forget_workload_resource(api: Any) -> None:
    """Re-check discovery on the next read (after Kueue's CRDs were installed or removed)."""
    with _served_lock:
        _served.pop(api, None)


def read_workloads(api: Any, namespace: str, pods: list[Obj]) -> list[Obj]:
    """The Workloads Kueue made for these pods ([] without pods or without Kueue). Raises the
    client's exceptions like the adapter's other reads (the caller wraps them in api_errors)."""
    uids = sorted({(p.get("metadata") or {}).get("uid") for p in pods} - {None, ""})
    if not uids:
        return []
    resource = workload_resource(api)
    if resource is None:
        return []
    return api.list_objects(resource, namespace, label_selector=f"{JOB_UID_LABEL} in ({','.join(uids)})")


def _conditions(workload: Obj) -> dict[str, Obj]:
    return {
        str(c.get("type")): c
        for c in (workload.get("status") or {}).get("conditions") or []
        if isinstance(c, dict)
    }


def _is_true(condition: Obj | None) -> bool:
    return bool(condition) and condition.get("status") == "True"


def _owner_pod_uid(workload: Obj) -> str:
    metadata = workload.get("metadata") or {}
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("kind") == "Pod" and owner.get("apiVersion", "v1") == "v1":
            return str(owner.get("uid") or "")
    return str((metadata.get("labels") or {}).get(JOB_UID_LABEL) or "")


def workload_observation(workload: Obj, pod_names_by_uid: dict[str, str]) -> KueueWorkloadObservation | None:
    """Kueue's verdict on one pod, or None when the Workload is not one of these pods'."""
    pod = pod_names_by_uid.get(_owner_pod_uid(workload))
    if pod is None:
        return None
    metadata, spec = workload.get("metadata") or {}, workload.get("spec") or {}
    status = workload.get("status") or {}
    conditions = _conditions(workload)
    quota, admitted = conditions.get("QuotaReserved"), conditions.get("Admitted")
    evicted, finished = conditions.get("Evicted"), conditions.get("Finished")
    preempted = conditions.get("Preempted")
    if _is_true(finished):
        state, condition = "Finished", finished
    elif spec.get("active") is False:
        state, condition = "Deactivated", evicted if _is_true(evicted) else {}
    elif _is_true(evicted):
        # Preempted carries the more telling message ("... due to prioritization in the ClusterQueue").
        state, condition = "Evicted", evicted
        if _is_true(preempted) and preempted.get("message"):
            condition = {**evicted, "message": preempted["message"]}
    elif _is_true(admitted):
        state, condition = "Admitted", admitted
    elif _is_true(quota):
        state, condition = "QuotaReserved", quota
    else:
        # No condition yet: Kueue has not looked at it (queued behind others or just created).
        condition = quota or {}
        state = "Inadmissible" if condition.get("reason") == "Inadmissible" else "Pending"
    admission = status.get("admission") or {}
    flavors = sorted(
        (str(resource), str(flavor))
        for assignment in admission.get("podSetAssignments") or []
        for resource, flavor in (assignment.get("flavors") or {}).items()
    )
    return KueueWorkloadObservation(
        name=str(metadata.get("name", "")),
        pod=pod,
        state=state,
        reason=str(condition.get("reason") or ""),
        message=str(condition.get("message") or "").strip(),
        queue=str(spec.get("queueName") or (metadata.get("labels") or {}).get(QUEUE_NAME_LABEL) or ""),
        cluster_queue=str(admission.get("clusterQueue") or ""),
        flavors=tuple(flavors),
    )


def workload_observations(workloads: list[Obj], pods: list[Obj]) -> tuple[KueueWorkloadObservation, ...]:
    """One per pod that has a Workload (the newest, if Kueue ever made two), in pod order."""
    names = {
        str((p.get("metadata") or {}).get("uid")): str((p.get("metadata") or {}).get("name", ""))
        for p in pods
    }
    by_pod: dict[str, tuple[str, KueueWorkloadObservation]] = {}
    for workload in workloads:
        seen = workload_observation(workload, names)
        if seen is None:
            continue
        created = str((workload.get("metadata") or {}).get("creationTimestamp") or "")
        if seen.pod not in by_pod or created >= by_pod[seen.pod][0]:
            by_pod[seen.pod] = (created, seen)
    order = list(names.values())
    return tuple(by_pod[pod][1] for pod in sorted(by_pod, key=order.index))

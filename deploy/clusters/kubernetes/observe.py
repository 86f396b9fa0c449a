"""From API dicts to an Observation (pure), unit-tested without a cluster in
tests/unit/test_kubernetes_observe.py.

The dicts are what the dynamic client returns: camelCase, as `kubectl get -o json` shows them,
so these functions see exactly what the server sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from deploy.clusters.base import NodeInfo
from deploy.observation import (
    ContainerObservation,
    EventObservation,
    JobObservation,
    KueueWorkloadObservation,
    Observation,
    PodObservation,
)

Obj = dict[str, Any]  # an API object as the server sends it

MAX_EVENTS = 30


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 from the API ("2026-11-22T05:00:00Z", microseconds in eventTime)."""
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def resource_version_of(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion", ""))


def _condition(obj: Obj, condition_type: str) -> Obj | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == condition_type:
            return condition
    return None


def container_observation(name: str, status: Obj | None) -> ContainerObservation:
    """One entry of status.containerStatuses (None: no status reported yet)."""
    if not status:
        return ContainerObservation(name=name)
    states = status.get("state") or {}
    state, detail = "waiting", {}
    for key in ("terminated", "running", "waiting"):
        if key in states and states[key] is not None:
            state, detail = key, states[key] or {}
            break
    last = (status.get("lastState") or {}).get("terminated") or {}
    return ContainerObservation(
        name=name,
        ready=bool(status.get("ready")),
        state=state,
        reason=str(detail.get("reason") or ""),
        message=str(detail.get("message") or ""),
        restart_count=int(status.get("restartCount") or 0),
        last_terminated_reason=str(last.get("reason") or ""),
        last_exit_code=int(last["exitCode"]) if last.get("exitCode") is not None else None,
    )


def pod_observation(pod: Obj) -> PodObservation:
    metadata, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    scheduled_condition = _condition(pod, "PodScheduled")
    ready_condition = _condition(pod, "Ready")
    containers: list[ContainerObservation] = []
    # Init containers only while they matter: one that finished cleanly says nothing.
    init_statuses = {s.get("name"): s for s in status.get("initContainerStatuses") or []}
    for container in spec.get("initContainers") or []:
        init = container_observation(container["name"], init_statuses.get(container["name"]))
        if not (init.state == "terminated" and init.reason == "Completed"):
            containers.append(init)
    statuses = {s.get("name"): s for s in status.get("containerStatuses") or []}
    for container in spec.get("containers") or []:
        containers.append(container_observation(container["name"], statuses.get(container["name"])))
    return PodObservation(
        name=str(metadata.get("name", "")),
        phase=str(status.get("phase") or "Pending"),
        node=str(spec.get("nodeName") or ""),
        ready=bool(ready_condition and ready_condition.get("status") == "True"),
        scheduled=None if scheduled_condition is None else scheduled_condition.get("status") == "True",
        scheduling_reason=str((scheduled_condition or {}).get("reason") or ""),
        scheduling_message=str((scheduled_condition or {}).get("message") or ""),
        containers=tuple(containers),
        created_at=parse_time(metadata.get("creationTimestamp")),
        terminating=bool(metadata.get("deletionTimestamp")),
    )


def _event_time(event: Obj) -> datetime | None:
    return (
        parse_time(event.get("lastTimestamp"))
        or parse_time(event.get("eventTime"))
        or parse_time((event.get("series") or {}).get("lastObservedTime"))
        or parse_time(event.get("firstTimestamp"))
        or parse_time((event.get("metadata") or {}).get("creationTimestamp"))
    )


def _event_order(event: Obj) -> tuple[datetime, int]:
    # Most event times have whole seconds only; within a second the resourceVersion (an etcd
    # revision on every server we know, else 0) keeps the order they were written in.
    version = resource_version_of(event)
    return (
        _event_time(event) or datetime.min.replace(tzinfo=UTC),
        int(version) if version.isdigit() else 0,
    )


def event_observation(event: Obj) -> EventObservation:
    involved = event.get("involvedObject") or {}
    count = event.get("count") or (event.get("series") or {}).get("count") or 1
    return EventObservation(
        type=str(event.get("type") or "Normal"),
        reason=str(event.get("reason") or ""),
        message=str(event.get("message") or "").strip(),
        object_kind=str(involved.get("kind") or ""),
        object_name=str(involved.get("name") or ""),
        count=int(count),
        last_seen=_event_time(event),
    )


def observation_from(
    deployment: Obj | None,
    pods: list[Obj],
    events: list[Obj],
    *,
    other_objects: int = 0,
    observed_at: datetime | None = None,
    workloads: tuple[KueueWorkloadObservation, ...] = (),
) -> Observation:
    """Build the Observation from the API dicts read for one service (and Kueue's verdicts on
    its pods, see workloads.py)."""
    pod_list = sorted(
        (pod_observation(p) for p in pods),
        key=lambda p: (p.created_at or datetime.min.replace(tzinfo=UTC), p.name),
    )
    unique_events = {(e.get("metadata") or {}).get("uid") or id(e): e for e in events}.values()
    # Oldest first, newest last; keep the newest MAX_EVENTS.
    event_list = [event_observation(e) for e in sorted(unique_events, key=_event_order)][-MAX_EVENTS:]
    common = {
        "pods": tuple(pod_list),
        "events": tuple(event_list),
        "other_objects": other_objects,
        "observed_at": observed_at,
        "workloads": workloads,
    }
    if deployment is None:
        return Observation(found=False, **common)
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    replicas = spec.get("replicas")
    return Observation(
        found=True,
        desired_replicas=int(1 if replicas is None else replicas),  # the API's default is 1
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        conditions={
            str(c.get("type")): (
                str(c.get("status") or ""),
                str(c.get("reason") or ""),
                str(c.get("message") or ""),
            )
            for c in status.get("conditions") or []
        },
        **common,
    )


def _newest(pods: list[Obj]) -> Obj | None:
    """The most recently created pod (a Job's retries are new pods, each newer than the last)."""
    if not pods:
        return None
    return max(
        pods,
        key=lambda p: (
            parse_time((p.get("metadata") or {}).get("creationTimestamp"))
            or datetime.min.replace(tzinfo=UTC),
            str((p.get("metadata") or {}).get("name", "")),
        ),
    )


def job_observation_from(job: Obj | None, pods: list[Obj]) -> JobObservation:
    """Build the JobObservation from a batch/v1 Job (None: absent) and its pods."""
    if job is None:
        return JobObservation(found=False)
    status = job.get("status") or {}
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    failure = failed if failed is not None and failed.get("status") == "True" else {}
    pod_fields: dict[str, str] = {}
    newest = _newest(pods)
    if newest is not None:
        pod = pod_observation(newest)
        waiting_reason = waiting_message = ""
        if pod.scheduled is False:
            # Not on a node yet: the scheduler's verdict is why nothing runs.
            waiting_reason = pod.scheduling_reason or "Unschedulable"
            waiting_message = pod.scheduling_message
        else:
            for container in pod.containers:
                if container.state == "waiting" and container.reason:
                    waiting_reason, waiting_message = container.reason, container.message
                    break
        pod_fields = {
            "pod": pod.name,
            "pod_phase": pod.phase,
            "waiting_reason": waiting_reason,
            "waiting_message": waiting_message,
        }
    return JobObservation(
        found=True,
        active=int(status.get("active") or 0),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
        complete=complete is not None and complete.get("status") == "True",
        # A Failed condition always has a reason on real servers; keep "Failed" if one does not.
        failure_reason=str(failure.get("reason") or "Failed") if failure else "",
        failure_message=str(failure.get("message") or ""),
        **pod_fields,
    )


def node_info(node: Obj) -> NodeInfo:
    metadata, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    ready = _condition(node, "Ready")
    return NodeInfo(
        name=str(metadata.get("name", "")),
        labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
        allocatable={str(k): str(v) for k, v in (status.get("allocatable") or {}).items()},
        taints=tuple(
            {key: str(value) for key, value in taint.items() if key in ("key", "value", "effect") and value}
            for taint in spec.get("taints") or []
        ),
        ready=bool(ready and ready.get("status") == "True"),
    )

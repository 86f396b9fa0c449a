"""Kueue's verdict on a service's pods (deploy/clusters/kubernetes/workloads.py) and how it becomes
the service's reason (deploy/status.py), on Workloads shaped as Kueue's pod integration writes them
and on Kueue's own condition messages."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.clusters.kubernetes.workloads import workload_observation, workload_observations
from deploy.observation import KueueWorkloadObservation, Observation, PodObservation
from deploy.status import KUEUE_WAITING_REASONS, derive_status

POD_UID = "0f6a3c1e-8d0a-4c55-9a3e-5d6f1b2c3d4e"
POD = "chat-7d9f8c6b5-x2kq9"


def workload(*conditions: dict[str, str], active: bool | None = None, admission: dict | None = None) -> dict:
    """A pod-integration Workload as Kueue creates it: owned by the pod, labelled with its uid."""
    obj: dict[str, Any] = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {
            "name": f"pod-{POD}-3b5c1",
            "namespace": "inference",
            "creationTimestamp": "2026-12-02T20:00:00Z",
            "labels": {"kueue.x-k8s.io/job-uid": POD_UID, "kueue.x-k8s.io/queue-name": "gpu-h100"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": POD, "uid": POD_UID, "controller": True}
            ],
        },
        "spec": {"queueName": "gpu-h100", "podSets": [{"name": "main", "count": 1}]},
        "status": {
            "conditions": [
                {"lastTransitionTime": "2026-12-02T20:00:01Z", "observedGeneration": 1, **c}
                for c in conditions
            ]
        },
    }
    if active is not None:
        obj["spec"]["active"] = active
    if admission:
        obj["status"]["admission"] = admission
    return obj


def cond(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


ADMISSION = {
    "clusterQueue": "gpu-h100",
    "podSetAssignments": [{"name": "main", "flavors": {"nvidia.com/gpu": "h100", "cpu": "h100"}, "count": 1}],
}

# (Kueue's conditions, the state read, the service's reason, words the message must carry)
CASES = {
    "no-quota-gpu": (
        [
            cond(
                "QuotaReserved",
                "False",
                "Pending",
                "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu "
                "in flavor h100, 2 more needed",
            )
        ],
        {},
        "Pending",
        "WaitingForQuota",
        "insufficient unused quota for nvidia.com/gpu in flavor h100, 2 more needed",
    ),
    "older-kueue-wording": (
        [
            cond(
                "QuotaReserved",
                "False",
                "Pending",
                "couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu in flavor "
                "h100, 2 more needed",
            )
        ],
        {},
        "Pending",
        "WaitingForQuota",
        "insufficient quota for nvidia.com/gpu in flavor h100, 2 more needed",
    ),
    "over-maximum": (
        [
            cond(
                "QuotaReserved",
                "False",
                "Pending",
                "couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu in flavor "
                "h100, request > maximum capacity (16 > 8)",
            )
        ],
        {},
        "Pending",
        "WaitingForQuota",
        "request > maximum capacity (16 > 8)",
    ),
    "untolerated-taint": (
        [
            cond(
                "QuotaReserved",
                "False",
                "Pending",
                "couldn't assign flavors to pod set main: "
                "untolerated taint {dedicated h100 NoSchedule <nil>} in flavor h100",
            )
        ],
        {},
        "Pending",
        "WaitingForQuota",
        "untolerated taint {dedicated h100 NoSchedule <nil>} in flavor h100",
    ),
    "no-local-queue": (
        [cond("QuotaReserved", "False", "Inadmissible", "LocalQueue gpu-h100 doesn't exist")],
        {},
        "Inadmissible",
        "Inadmissible",
        "LocalQueue gpu-h100 doesn't exist",
    ),
    "inactive-cluster-queue": (
        [cond("QuotaReserved", "False", "Inadmissible", "ClusterQueue gpu-h100 is inactive")],
        {},
        "Inadmissible",
        "Inadmissible",
        "ClusterQueue gpu-h100 is inactive",
    ),
    "not-looked-at-yet": ([], {}, "Pending", "WaitingForQuota", "not considered yet"),
    "quota-reserved-checks-pending": (
        [cond("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue gpu-h100")],
        {"admission": ADMISSION},
        "QuotaReserved",
        "WaitingForAdmissionChecks",
        "Quota reserved in ClusterQueue gpu-h100",
    ),
    "preempted": (
        [
            cond("QuotaReserved", "False", "Pending", "Preempted to accommodate a higher priority workload"),
            cond(
                "Evicted",
                "True",
                "Preempted",
                "Preempted to accommodate a workload (UID: 5a1f, JobUID: 9c2e) due to prioritization in the "
                "ClusterQueue",
            ),
            cond(
                "Preempted",
                "True",
                "InClusterQueue",
                "Preempted to accommodate a workload (UID: 5a1f, JobUID: 9c2e) due to prioritization in the "
                "ClusterQueue",
            ),
        ],
        {},
        "Evicted",
        "Preempted",
        "due to prioritization in the ClusterQueue",
    ),
    "pods-ready-timeout": (
        [cond("Evicted", "True", "PodsReadyTimeout", "Exceeded the PodsReady timeout inference/pod-x")],
        {},
        "Evicted",
        "Evicted",
        "(PodsReadyTimeout)",
    ),
    "deactivated": (
        [cond("Evicted", "True", "Deactivated", "The workload is deactivated")],
        {"active": False},
        "Deactivated",
        "Deactivated",
        "The workload is deactivated",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_kueue_conditions_become_the_services_reason(case: str) -> None:
    conditions, extra, state, reason, words = CASES[case]
    seen = workload_observation(workload(*conditions, **extra), {POD_UID: POD})
    assert seen is not None and (seen.pod, seen.state, seen.queue) == (POD, state, "gpu-h100")
    assert seen.holds_pod

    pending = PodObservation(name=POD, phase="Pending", scheduled=None)
    status = derive_status(Observation(found=True, pods=(pending,), workloads=(seen,)), desired_replicas=1)
    assert (status.phase, status.reason) == ("Queued", reason)
    assert words in status.message and POD in status.message


def test_admitted_workloads_leave_the_status_to_the_pods() -> None:
    admitted = workload(
        cond("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue gpu-h100"),
        cond("Admitted", "True", "Admitted", "The workload is admitted"),
        admission=ADMISSION,
    )
    seen = workload_observation(admitted, {POD_UID: POD})
    assert seen is not None and seen.state == "Admitted" and not seen.holds_pod
    assert seen.cluster_queue == "gpu-h100" and dict(seen.flavors)["nvidia.com/gpu"] == "h100"
    pending = PodObservation(
        name=POD,
        phase="Pending",
        scheduled=False,
        scheduling_reason="Unschedulable",
        scheduling_message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )
    status = derive_status(Observation(found=True, pods=(pending,), workloads=(seen,)), desired_replicas=1)
    assert status.reason == "Unschedulable"  # admitted by Kueue: the scheduler's verdict counts


def test_a_running_pod_is_not_held_whatever_a_stale_workload_says() -> None:
    stale = KueueWorkloadObservation(name="w", pod=POD, state="Pending", message="insufficient quota")
    running = PodObservation(name=POD, phase="Running", scheduled=True, ready=True)
    status = derive_status(
        Observation(found=True, ready_replicas=1, updated_replicas=1, pods=(running,), workloads=(stale,)),
        desired_replicas=1,
    )
    assert status.phase == "Running"


def test_one_replica_held_while_another_runs_is_degraded_with_kueues_words() -> None:
    held = KueueWorkloadObservation(
        name="w", pod="chat-b", state="Pending", reason="Pending", queue="gpu-h100",
        message="couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in "
        "flavor h100, 1 more needed",
    )  # fmt: skip
    pods = (
        PodObservation(name="chat-a", phase="Running", scheduled=True, ready=True),
        PodObservation(name="chat-b", phase="Pending", scheduled=None),
    )
    status = derive_status(
        Observation(found=True, ready_replicas=1, updated_replicas=2, pods=pods, workloads=(held,)),
        desired_replicas=2,
    )
    assert (status.phase, status.reason) == ("Degraded", "WaitingForQuota")
    assert status.message.startswith("1/2 replicas ready. Pod chat-b waits in Kueue queue gpu-h100")


def test_workloads_of_other_pods_are_ignored_and_the_newest_wins() -> None:
    other = workload()
    other["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    other["metadata"]["labels"]["kueue.x-k8s.io/job-uid"] = "someone-else"
    old = workload(cond("QuotaReserved", "False", "Pending", "old words"))
    new = workload(cond("QuotaReserved", "False", "Inadmissible", "ClusterQueue gpu-h100 is inactive"))
    new["metadata"]["creationTimestamp"] = "2026-12-02T20:05:00Z"
    pods = [{"metadata": {"name": POD, "uid": POD_UID}}]
    (seen,) = workload_observations([new, other, old], pods)
    assert (seen.state, seen.message) == ("Inadmissible", "ClusterQueue gpu-h100 is inactive")
    assert workload_observations([other], pods) == ()


def test_waiting_for_kueue_is_not_a_start_timeout() -> None:
    # deploy.sync.fail_if_stuck skips services with these reasons: waiting is not failing.
    reasons = set()
    for case in ("no-quota-gpu", "quota-reserved-checks-pending", "preempted", "pods-ready-timeout"):
        conditions, extra = CASES[case][0], CASES[case][1]
        seen = workload_observation(workload(*conditions, **extra), {POD_UID: POD})
        observation = Observation(found=True, pods=(PodObservation(name=POD),), workloads=(seen,))
        reasons.add(derive_status(observation, desired_replicas=1).reason)
    assert reasons == KUEUE_WAITING_REASONS


def test_the_observation_keeps_kueues_verdict_for_the_page() -> None:
    seen = workload_observation(workload(*CASES["no-quota-gpu"][0]), {POD_UID: POD})
    stored = Observation(found=True, workloads=(seen,)).to_json()
    assert stored["workloads"][0]["state"] == "Pending"
    assert "2 more needed" in stored["workloads"][0]["message"]

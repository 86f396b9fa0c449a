"""The Kubernetes adapter without a cluster: API dicts -> Observation, error mapping, log errors.

The dicts are shaped like what a 1.20 API server returns (camelCase, as `kubectl get -o json`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.clusters.base import PermanentClusterError, TransientClusterError
from deploy.clusters.kubernetes import (
    MAX_EVENTS,
    KubernetesCluster,
    _ServiceTracker,
    node_info,
    observation_from,
    pod_observation,
    translate_error,
)
from deploy.clusters.kubernetes.adapter import secret_data_from_string_data
from deploy.clusters.kubernetes.observe import job_observation_from
from deploy.observation import JobObservation
from deploy.status import derive_status

CREATED = "2026-11-22T05:00:00Z"


def make_pod(name="chat-5d9c7b8f6d-x2k4q", *, phase="Running", conditions=(), statuses=None, **extra):
    pod = {
        "metadata": {"name": name, "namespace": "inference", "creationTimestamp": CREATED, **extra},
        "spec": {
            "nodeName": "gpu-node-1",
            "containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.0"}],
        },
        "status": {"phase": phase, "conditions": list(conditions)},
    }
    if statuses is not None:
        pod["status"]["containerStatuses"] = statuses
    return pod


def condition(kind, status="True", reason="", message=""):
    return {"type": kind, "status": status, "reason": reason, "message": message}


def deployment(replicas=1, ready=0, **status):
    return {
        "metadata": {"name": "chat", "namespace": "inference", "generation": 1},
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready, **status} if ready else dict(status),
    }


def api_error(status, message="", body=None, reason=""):
    exc = ApiException(status=status, reason=reason)
    exc.body = (
        body if body is not None else json.dumps({"kind": "Status", "message": message, "code": status})
    )
    return exc


# --- pods ---------------------------------------------------------------------------------


def test_unschedulable_pod():
    pod = make_pod(
        phase="Pending",
        conditions=[
            condition(
                "PodScheduled",
                "False",
                "Unschedulable",
                "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            )
        ],
    )
    pod["spec"].pop("nodeName")

    seen = pod_observation(pod)

    assert (seen.phase, seen.node, seen.scheduled) == ("Pending", "", False)
    assert seen.scheduling_reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in seen.scheduling_message
    # No container status yet: the container is listed as waiting, without a reason.
    assert [(c.name, c.state, c.reason) for c in seen.containers] == [("server", "waiting", "")]
    assert seen.created_at == datetime(2026, 11, 22, 5, 0, tzinfo=UTC)


def test_pod_without_scheduling_condition_is_not_reported_yet():
    assert pod_observation(make_pod(phase="Pending")).scheduled is None


def test_running_ready_pod():
    pod = make_pod(
        conditions=[condition("PodScheduled"), condition("Ready")],
        statuses=[
            {
                "name": "server",
                "ready": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": CREATED}},
                "lastState": {},
            }
        ],
    )

    seen = pod_observation(pod)

    assert (seen.ready, seen.scheduled, seen.terminating) == (True, True, False)
    (container,) = seen.containers
    assert (container.state, container.ready, container.last_exit_code) == ("running", True, None)


def test_crash_looping_container_keeps_its_last_termination():
    pod = make_pod(
        conditions=[condition("PodScheduled"), condition("Ready", "False", "ContainersNotReady")],
        statuses=[
            {
                "name": "server",
                "ready": False,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
            }
        ],
    )

    (container,) = pod_observation(pod).containers

    assert (container.state, container.reason, container.restart_count) == ("waiting", "CrashLoopBackOff", 4)
    assert (container.last_terminated_reason, container.last_exit_code) == ("OOMKilled", 137)
    assert container.message == "back-off 40s restarting"


def test_terminated_container_and_terminating_pod():
    pod = make_pod(
        phase="Failed",
        statuses=[{"name": "server", "state": {"terminated": {"reason": "Error", "exitCode": 2}}}],
        deletionTimestamp="2026-11-22T05:01:00Z",
    )

    seen = pod_observation(pod)

    assert seen.terminating and seen.phase == "Failed"
    assert (seen.containers[0].state, seen.containers[0].reason) == ("terminated", "Error")


def test_init_containers_show_only_while_they_matter():
    pod = make_pod(phase="Pending")
    pod["spec"]["initContainers"] = [{"name": "fetch"}, {"name": "prep"}]
    pod["status"]["initContainerStatuses"] = [
        {"name": "fetch", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}},
        {"name": "prep", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 2},
    ]
    pod["status"]["containerStatuses"] = [
        {"name": "server", "state": {"waiting": {"reason": "PodInitializing"}}}
    ]

    containers = pod_observation(pod).containers

    assert [(c.name, c.reason) for c in containers] == [
        ("prep", "CrashLoopBackOff"),
        ("server", "PodInitializing"),
    ]


# --- the whole observation ------------------------------------------------------------------


def test_missing_deployment_with_leftovers():
    observation = observation_from(None, [make_pod()], [], other_objects=2)

    assert observation.found is False
    assert observation.anything_left
    assert observation.other_objects == 2


def test_deployment_counts_and_conditions():
    dep = deployment(
        replicas=2,
        ready=1,
        updatedReplicas=2,
        availableReplicas=1,
        conditions=[
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        ],
    )

    observation = observation_from(dep, [], [])

    assert (observation.desired_replicas, observation.ready_replicas) == (2, 1)
    assert (observation.updated_replicas, observation.available_replicas) == (2, 1)
    assert observation.conditions["Available"][:2] == ("False", "MinimumReplicasUnavailable")


def test_fresh_deployment_without_status_has_zero_counts_and_default_replicas():
    observation = observation_from({"metadata": {"name": "chat"}, "spec": {}}, [], [])

    assert observation.found and observation.desired_replicas == 1
    assert observation.ready_replicas == observation.updated_replicas == 0


def event(uid, reason, when, *, kind="Pod", name="chat-5d9c7b8f6d-x2k4q", rv="1", **extra):
    return {
        "metadata": {"uid": uid, "resourceVersion": rv, "creationTimestamp": when},
        "involvedObject": {"kind": kind, "name": name, "namespace": "inference"},
        "type": "Warning" if reason == "FailedScheduling" else "Normal",
        "reason": reason,
        "message": f"{reason} happened\n",
        **extra,
    }


def test_events_are_ordered_newest_last_deduplicated_and_capped():
    events = [
        event("c", "Started", "2026-11-22T05:00:03Z", lastTimestamp="2026-11-22T05:00:03Z", rv="30"),
        event("a", "Scheduled", "2026-11-22T05:00:01Z", eventTime="2026-11-22T05:00:01.250000Z", rv="10"),
        event("b", "Pulled", "2026-11-22T05:00:03Z", lastTimestamp="2026-11-22T05:00:03Z", rv="20"),
        event("a", "Scheduled", "2026-11-22T05:00:01Z", eventTime="2026-11-22T05:00:01.250000Z", rv="10"),
        event(
            "d",
            "BackOff",
            "2026-11-22T05:00:04Z",
            series={"count": 7, "lastObservedTime": "2026-11-22T05:09:00Z"},
        ),
    ]

    seen = observation_from(None, [], events).events

    # Same second: resourceVersion keeps the written order (Pulled before Started).
    assert [e.reason for e in seen] == ["Scheduled", "Pulled", "Started", "BackOff"]
    assert seen[0].last_seen == datetime(2026, 11, 22, 5, 0, 1, 250000, tzinfo=UTC)
    assert (seen[-1].count, seen[-1].last_seen.minute) == (7, 9)
    assert seen[1].message == "Pulled happened"
    assert (seen[1].object_kind, seen[1].type) == ("Pod", "Normal")

    many = [event(str(i), f"R{i}", f"2026-11-22T05:{i // 60:02d}:{i % 60:02d}Z") for i in range(100)]
    kept = observation_from(None, [], many).events
    assert len(kept) == MAX_EVENTS and kept[-1].reason == "R99"


def test_observation_feeds_derive_status():
    pods = [
        make_pod(
            phase="Pending",
            conditions=[condition("PodScheduled", "False", "Unschedulable", "0/3 nodes are available.")],
        )
    ]
    status = derive_status(observation_from(deployment(), pods, []), desired_replicas=1)
    assert (status.phase, status.reason) == ("Failed", "Unschedulable")


def test_node_info():
    node = {
        "metadata": {"name": "gpu-node-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100"}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule", "timeAdded": None}]},
        "status": {
            "allocatable": {"cpu": "64", "nvidia.com/gpu": "8", "memory": "512Gi"},
            "conditions": [condition("MemoryPressure", "False"), condition("Ready", "True")],
        },
    }

    info = node_info(node)

    assert info.allocatable["nvidia.com/gpu"] == "8"
    assert info.taints == ({"key": "nvidia.com/gpu", "effect": "NoSchedule"},)
    assert info.ready is True
    assert node_info({"metadata": {"name": "n"}}).ready is False


# --- events -> services (watch) ----------------------------------------------------------


def test_tracker_maps_events_back_to_services():
    tracker = _ServiceTracker()
    labels = {"inference.console/service": "chat"}
    assert tracker.deployment_seen(
        "ADDED", {"metadata": {"namespace": "inference", "name": "chat", "labels": labels}}
    ) == ("inference", "chat")
    tracker.pod_seen("ADDED", {"metadata": {"namespace": "inference", "name": "odd-name", "labels": labels}})

    assert tracker.service_for("inference", "Deployment", "chat") == "chat"
    assert tracker.service_for("inference", "ReplicaSet", "chat-5d9c7b8f6d") == "chat"
    assert tracker.service_for("inference", "Pod", "odd-name") == "chat"
    # A pod whose own ADDED has not arrived yet: found through its ReplicaSet's name.
    assert tracker.service_for("inference", "Pod", "chat-5d9c7b8f6d-x2k4q") == "chat"
    assert tracker.service_for("other", "Pod", "chat-5d9c7b8f6d-x2k4q") is None
    assert tracker.service_for("inference", "Node", "gpu-node-1") is None
    # Objects without the console's labels are not ours.
    assert tracker.pod_seen("ADDED", {"metadata": {"namespace": "inference", "name": "x"}}) is None

    tracker.pod_seen(
        "DELETED", {"metadata": {"namespace": "inference", "name": "odd-name", "labels": labels}}
    )
    assert tracker.service_for("inference", "Pod", "odd-name") is None
    tracker.deployment_seen("SYNCED", {})
    assert tracker.service_for("inference", "Deployment", "chat") is None


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [409, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_transient(status):
    error = translate_error(api_error(status, "etcdserver: request timed out"), "cannot apply Deployment a/b")
    assert isinstance(error, TransientClusterError)
    assert str(error) == "cannot apply Deployment a/b: etcdserver: request timed out"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 422])
def test_client_errors_are_permanent_with_the_servers_message(status):
    error = translate_error(
        api_error(status, 'Deployment.apps "Bad" is invalid'), "cannot apply Deployment a/Bad"
    )
    assert isinstance(error, PermanentClusterError)
    assert str(error) == 'cannot apply Deployment a/Bad: Deployment.apps "Bad" is invalid'


def test_typed_patch_500_is_permanent():
    message = "failed to create typed patch object: .spec.replicas: expected numeric (int or float)"
    assert isinstance(translate_error(api_error(500, message), "x"), PermanentClusterError)


def test_terminating_namespace_is_transient():
    body = json.dumps(
        {
            "message": "unable to create new content in namespace t-1 because it is being terminated",
            "details": {"causes": [{"reason": "NamespaceTerminating"}]},
            "code": 403,
        }
    )
    assert isinstance(translate_error(api_error(403, body=body), "x"), TransientClusterError)


def test_connection_errors_are_transient():
    refused = urllib3.exceptions.MaxRetryError(None, "/apis", reason=ConnectionRefusedError("refused"))
    error = translate_error(refused, "cannot observe service a/b")
    assert isinstance(error, TransientClusterError)
    assert "cannot reach the Kubernetes API server" in str(error)
    assert isinstance(translate_error(TimeoutError("timed out"), "x"), TransientClusterError)
    assert isinstance(
        translate_error(api_error(0, body="", reason="SSLError: EOF"), "x"), TransientClusterError
    )


def test_non_json_body_is_shown_as_is():
    error = translate_error(api_error(404, body="404 page not found\n"), "cannot read")
    assert str(error) == "cannot read: 404 page not found"


# --- pod logs (no kubelet in the cluster tier, so only here) -------------------------------


def test_pod_logs_error_is_readable(monkeypatch):
    def refuse(self, **kwargs):
        raise api_error(400, 'previous terminated container "server" in pod "chat-1" not found')

    monkeypatch.setattr(client.CoreV1Api, "read_namespaced_pod_log", refuse)
    cluster = KubernetesCluster(client.ApiClient(client.Configuration()), field_manager="test")

    with pytest.raises(PermanentClusterError) as info:
        cluster.pod_logs("inference", "chat-1", previous=True)

    assert str(info.value) == (
        'cannot read the previous log of pod inference/chat-1: previous terminated container "server" in pod '
        '"chat-1" not found'
    )


def test_pod_logs_returns_the_text(monkeypatch):
    calls = []

    def read(self, **kwargs):
        calls.append(kwargs)
        return "INFO started\n"

    monkeypatch.setattr(client.CoreV1Api, "read_namespaced_pod_log", read)
    cluster = KubernetesCluster(client.ApiClient(client.Configuration()), field_manager="test")

    assert cluster.pod_logs("inference", "chat-1", tail_lines=50) == "INFO started\n"
    assert calls[0]["previous"] is False and calls[0]["tail_lines"] == 50


def test_from_settings_with_a_missing_kubeconfig_is_permanent(settings, tmp_path):
    settings.KUBECONFIG = str(tmp_path / "missing.kubeconfig")

    with pytest.raises(PermanentClusterError, match="cannot load the Kubernetes configuration"):
        KubernetesCluster.from_settings()


def test_from_settings_reads_the_kubeconfig_and_context(settings, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "a", "cluster": {"server": "https://127.0.0.1:1"}},
                    {"name": "b", "cluster": {"server": "https://127.0.0.1:2"}},
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "a", "context": {"cluster": "a", "user": "u"}},
                    {"name": "b", "context": {"cluster": "b", "user": "u"}},
                ],
                "current-context": "a",
            }
        )
    )
    settings.KUBECONFIG, settings.KUBE_CONTEXT = str(kubeconfig), "b"

    cluster = KubernetesCluster.from_settings()

    assert cluster.host == "https://127.0.0.1:2"
    assert cluster.simulated is False


# --- Jobs (prewarm) and Secrets -----------------------------------------------------------------


def _job(conditions: list[dict] | None = None, **status) -> dict:
    return {"metadata": {"name": "prewarm-m-1"}, "status": {**status, "conditions": conditions or []}}


def _job_pod(
    name: str, created: str, *, phase: str = "Pending", waiting: str = "", scheduled: bool = True
) -> dict:
    pod = {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"containers": [{"name": "copier"}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "PodScheduled", "status": "True" if scheduled else "False"}],
        },
    }
    if not scheduled:
        pod["status"]["conditions"][0].update(reason="Unschedulable", message="0/3 nodes are available")
    if waiting:
        pod["status"]["containerStatuses"] = [
            {"name": "copier", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": waiting}}}
        ]
    return pod


def test_a_missing_job_is_not_found():
    assert job_observation_from(None, []) == JobObservation(found=False)


def test_a_job_reports_its_newest_pod_and_why_it_waits():
    pods = [
        _job_pod("old", "2026-11-22T05:00:00Z", phase="Failed"),
        _job_pod("new", "2026-11-22T05:01:00Z", waiting="ImagePullBackOff"),
    ]
    job = job_observation_from(_job(active=1, failed=1), pods)
    assert (job.found, job.active, job.failed, job.finished) == (True, 1, 1, False)
    assert (job.pod, job.pod_phase, job.waiting_reason) == ("new", "Pending", "ImagePullBackOff")


def test_an_unscheduled_job_pod_waits_with_the_schedulers_words():
    job = job_observation_from(_job(active=1), [_job_pod("p", CREATED, scheduled=False)])
    assert (job.waiting_reason, job.waiting_message) == ("Unschedulable", "0/3 nodes are available")


def test_job_conditions_say_complete_or_failed_with_the_reason():
    complete = job_observation_from(_job([{"type": "Complete", "status": "True"}], succeeded=1), [])
    assert complete.complete and complete.finished and not complete.failure_reason
    failed = job_observation_from(
        _job(
            [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
            failed=4,
        ),
        [],
    )
    assert (failed.failure_reason, failed.failed, failed.complete) == ("BackoffLimitExceeded", 4, False)


def test_secret_string_data_is_applied_as_base64_data():
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "data": {"A": "b2xk"},
        "stringData": {"A": "new", "B": "é"},
    }
    converted = secret_data_from_string_data(secret)
    assert converted["data"] == {"A": "bmV3", "B": "w6k="} and "stringData" not in converted
    assert secret["stringData"] == {"A": "new", "B": "é"}  # the input is left alone
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment"}
    assert secret_data_from_string_data(deployment) is deployment

"""KubernetesCluster against a real kube-apiserver v1.20.2 with fake GPU nodes (8 and 4 GPUs)
and a kubelet simulator (deploy/testenv). No database: the adapter needs only settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from deploy.clusters.base import LABEL_SERVICE, PermanentClusterError
from deploy.clusters.kubernetes import KubernetesCluster
from deploy.observation import Observation
from deploy.render import render_service
from deploy.spec import ModelVolume, ServiceSpec
from deploy.status import DerivedStatus, derive_status
from tests import stack

pytestmark = pytest.mark.cluster

NAME = "chat"
# How long the simulator and the controllers may take for what these tests wait for
# (typically 1-3 s: the simulator syncs pods every second).
DEADLINE_SECONDS = 45


def make_spec(namespace: str, **overrides: Any) -> ServiceSpec:
    values: dict[str, Any] = {
        "name": NAME,
        "namespace": namespace,
        "runtime": "vllm",
        "image": "vllm/vllm-openai:v0.11.0",
        # NFS, not a PVC: the scheduler waits for a PVC to exist and be bound (the harness has
        # no provisioner), while an NFS volume is only data here (no kubelet mounts it).
        "model_volume": ModelVolume(kind="nfs", nfs_server="192.0.2.10", nfs_path="/export/models"),
        "model_path": "org/model",
        "served_model_name": "model",
        "cpu": "2",
        "memory": "8Gi",
        "gpu_count": 1,
    }
    values.update(overrides)
    return ServiceSpec(**values)


def wait_until(read, done, *, what: str):
    return stack.wait_until(read, done, timeout=DEADLINE_SECONDS, what=what)


def status_of(
    cluster: KubernetesCluster, spec: ServiceSpec
) -> Callable[[], tuple[DerivedStatus, Observation]]:
    def read() -> tuple[DerivedStatus, Observation]:
        observation = cluster.observe(spec.namespace, spec.name)
        return derive_status(observation, desired_replicas=spec.replicas), observation

    return read


def test_apply_creates_the_deployment_and_the_service(cluster, kube_api_client, namespace):
    spec = make_spec(namespace, env=(("LOG_LEVEL", "debug"),))

    lines = cluster.apply(render_service(spec))

    assert lines == [
        f"ConfigMap {namespace}/chat-env: created",
        f"NetworkPolicy {namespace}/chat: created",
        f"Deployment {namespace}/chat: created",
        f"Service {namespace}/chat: created",
    ]
    deployment = client.AppsV1Api(kube_api_client).read_namespaced_deployment(NAME, namespace)
    container = deployment.spec.template.spec.containers[0]
    assert deployment.metadata.labels[LABEL_SERVICE] == NAME
    assert container.image == spec.image
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert any(f.manager == "inference-console" for f in deployment.metadata.managed_fields)
    service = client.CoreV1Api(kube_api_client).read_namespaced_service(NAME, namespace)
    assert service.spec.selector[LABEL_SERVICE] == NAME
    assert {p.name: p.port for p in service.spec.ports}["http"] == 8000
    config_map = client.CoreV1Api(kube_api_client).read_namespaced_config_map("chat-env", namespace)
    assert config_map.data == {"LOG_LEVEL": "debug"}


def test_second_identical_apply_changes_nothing(cluster, kube_api_client, namespace):
    # No replicas: no pods whose readiness would keep rewriting the Deployment's status.
    spec = make_spec(namespace, replicas=0)
    objects = render_service(spec)
    cluster.apply(objects)
    apps, core = client.AppsV1Api(kube_api_client), client.CoreV1Api(kube_api_client)

    def settled() -> Any:
        return apps.read_namespaced_deployment(NAME, namespace)

    # Let the deployment controller finish its status writes, which bump resourceVersion.
    wait_until(
        settled,
        lambda d: d.status.observed_generation == d.metadata.generation
        and any(c.reason == "NewReplicaSetAvailable" for c in d.status.conditions or []),
        what="the deployment controller to settle",
    )
    before = settled()
    service_before = core.read_namespaced_service(NAME, namespace)

    lines = cluster.apply(render_service(spec))

    assert lines == [
        f"NetworkPolicy {namespace}/chat: unchanged",
        f"Deployment {namespace}/chat: unchanged",
        f"Service {namespace}/chat: unchanged",
    ]
    after = settled()
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.metadata.generation == before.metadata.generation
    service_after = core.read_namespaced_service(NAME, namespace)
    assert service_after.metadata.resource_version == service_before.metadata.resource_version

    # A real change is reported as such and bumps the generation.
    lines = cluster.apply(render_service(make_spec(namespace, replicas=0, memory="12Gi")))
    assert lines == [
        f"NetworkPolicy {namespace}/chat: unchanged",
        f"Deployment {namespace}/chat: configured",
        f"Service {namespace}/chat: unchanged",
    ]
    assert settled().metadata.generation == before.metadata.generation + 1


def test_too_many_gpus_is_unschedulable(cluster, namespace):
    spec = make_spec(namespace, gpu_count=16)  # the nodes have 8 and 4
    cluster.apply(render_service(spec))

    status, observation = wait_until(
        status_of(cluster, spec),
        lambda s: s[0].phase == "Failed",
        what="derive_status to report the pod unschedulable",
    )

    assert status.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in status.message
    pod = observation.pods[0]
    assert pod.scheduled is False and pod.scheduling_reason == "Unschedulable"
    assert any(e.reason == "FailedScheduling" and e.object_kind == "Pod" for e in observation.events)


def test_one_gpu_service_becomes_running(cluster, namespace):
    spec = make_spec(namespace)
    cluster.apply(render_service(spec))

    status, observation = wait_until(
        status_of(cluster, spec), lambda s: s[0].phase == "Running", what="the service to be Running"
    )

    assert status.reason == "Ready"
    assert observation.found and observation.ready_replicas == observation.desired_replicas == 1
    assert observation.conditions["Available"][0] == "True"
    (pod,) = observation.pods
    assert pod.ready and pod.phase == "Running" and pod.scheduled is True
    assert pod.node.startswith("gpu-node-")
    assert pod.containers[0].state == "running" and pod.containers[0].ready
    kinds = {(e.object_kind, e.reason) for e in observation.events}
    assert {
        ("Deployment", "ScalingReplicaSet"),
        ("ReplicaSet", "SuccessfulCreate"),
        ("Pod", "Scheduled"),
    } <= kinds


def test_crash_looping_container_fails_the_service(cluster, namespace):
    spec = make_spec(namespace, annotations={"sim.harness/fail": "CrashLoopBackOff"})
    cluster.apply(render_service(spec))

    status, observation = wait_until(
        status_of(cluster, spec), lambda s: s[0].phase == "Failed", what="a CrashLoopBackOff failure"
    )

    assert status.reason == "CrashLoopBackOff"
    container = observation.pods[0].containers[0]
    assert container.state == "waiting" and container.reason == "CrashLoopBackOff"
    assert container.last_terminated_reason == "Error" and container.last_exit_code == 1


def test_delete_service_removes_every_labelled_object(cluster, kube_api_client, namespace):
    spec = make_spec(namespace, env=(("LOG_LEVEL", "debug"),))
    cluster.apply(render_service(spec))
    wait_until(
        lambda: cluster.observe(namespace, NAME), lambda o: len(o.pods) == 1, what="the pod to be created"
    )
    assert cluster.observe(namespace, NAME).other_objects == 3  # Service, ConfigMap, NetworkPolicy

    cluster.delete_service(namespace, NAME)

    observation = wait_until(
        lambda: cluster.observe(namespace, NAME),
        lambda o: not o.anything_left,
        what="every object of the service to be gone",
    )
    assert observation.found is False and observation.pods == () and observation.other_objects == 0
    core, apps = client.CoreV1Api(kube_api_client), client.AppsV1Api(kube_api_client)
    selector = f"{LABEL_SERVICE}={NAME}"
    assert apps.list_namespaced_replica_set(namespace, label_selector=selector).items == []
    assert core.list_namespaced_config_map(namespace, label_selector=selector).items == []
    cluster.delete_service(namespace, NAME)  # deleting nothing is fine


def test_unserved_api_version_is_a_permanent_error(cluster, namespace):
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {LABEL_SERVICE: NAME}}},
    }
    with pytest.raises(PermanentClusterError, match=r"does not serve policy/v1 PodDisruptionBudget") as info:
        cluster.apply([pdb])
    assert "(served: policy/v1beta1)" in str(info.value)

    # The version discovery names is the one to use.
    assert cluster.apply([{**pdb, "apiVersion": "policy/v1beta1"}]) == [
        f"PodDisruptionBudget {namespace}/chat: created"
    ]
    with pytest.raises(PermanentClusterError, match=r"does not serve example\.com/v1 Widget"):
        cluster.apply([{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}])


def test_typed_patch_rejection_is_permanent_with_the_servers_message(cluster, namespace):
    (deployment,) = [o for o in render_service(make_spec(namespace)) if o["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1

    # 1.20 answers HTTP 500 to a numeric quantity in server-side apply; retrying cannot help.
    with pytest.raises(PermanentClusterError, match=r"failed to create typed patch object.*expected string"):
        cluster.apply([deployment])


def test_watch_reports_the_service_and_returns_after_stop(cluster, namespace):
    seen: list[tuple[str, str]] = []
    ours = threading.Event()
    stop = threading.Event()

    def on_change(changed_namespace: str, service: str) -> None:
        seen.append((changed_namespace, service))
        if (changed_namespace, service) == (namespace, NAME):
            ours.set()

    watcher = threading.Thread(target=cluster.watch, args=(on_change, stop.is_set), daemon=True)
    watcher.start()
    try:
        cluster.apply(render_service(make_spec(namespace)))
        assert ours.wait(DEADLINE_SECONDS), f"on_change never called for {namespace}/{NAME}; saw {seen[-10:]}"
        # Pod and event changes keep coming for the same service as the pod starts.
        wait_until(
            lambda: seen.count((namespace, NAME)), lambda n: n >= 3, what="more changes of the service"
        )
    finally:
        stop.set()
        stopped = time.monotonic()
        watcher.join(timeout=10)
    assert not watcher.is_alive(), "watch() did not return after stop()"
    assert time.monotonic() - stopped < 5

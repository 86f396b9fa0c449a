"""The simulated cluster: apply, scheduling, pod life, faults, delete, watch and logs.

Time is a fake clock advanced by hand; nothing sleeps. Deployments are built by a small
helper here, plus one test that applies the real renderer's output.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from deploy.clusters.base import LABEL_MANAGED_BY, LABEL_SERVICE, MANAGED_BY, PermanentClusterError
from deploy.clusters.simulated import (
    PodNeeds,
    SimulatedCluster,
    node_misfit,
    parse_quantity,
    pick_node,
    pull_attempts_after,
    pull_error,
    restarts_after,
    tolerates,
)
from deploy.models import SimulatedObject, SimulatedPod
from tests.clock import FakeClock

NS = "inference"
H100_NODE, A100_NODE, CPU_NODE = "gpu-node-1", "gpu-node-2", "cpu-node-1"
A100 = "NVIDIA-A100-SXM4-80GB"
PULL, LOAD = 3, 5


@pytest.fixture
def faults_file(tmp_path: Path) -> Path:
    return tmp_path / "faults.json"  # absent until a test writes it: no rules


def make_cluster(clock: FakeClock, faults_file: Path, nodes_file: str | Path = "", poll: float = 0.05):
    return SimulatedCluster(
        nodes_file=str(nodes_file or Path(settings.BASE_DIR) / "deploy" / "simulated_nodes.json"),
        faults_file=str(faults_file),
        pull_seconds=PULL,
        load_seconds=LOAD,
        poll_seconds=poll,
        clock=clock,
    )


@pytest.fixture
def cluster(clock: FakeClock, faults_file: Path) -> SimulatedCluster:
    return make_cluster(clock, faults_file)


def write_rules(path: Path, rules: list | dict) -> None:
    # Replace atomically (new inode), as the harness README asks: the change is always seen.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rules))
    os.replace(tmp, path)


def labels(name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SERVICE: name}


def deployment(
    name: str = "chat",
    *,
    replicas: int = 1,
    gpus: int = 1,
    image: str = "vllm/vllm-openai:v0.11.0",
    memory: str = "16Gi",
    annotations: dict[str, str] | None = None,
    gpu_type: str = "",
    tolerations: list[dict] | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict:
    resources = {"cpu": "4", "memory": memory}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    pod_spec: dict = {
        "containers": [
            {
                "name": "server",
                "image": image,
                "args": ["--model=/models/org/model", "--port=8000"],
                "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                # Only limits: requests default to them, as Kubernetes does.
                "resources": {"limits": resources},
            }
        ]
    }
    if gpu_type:
        expression = {"key": "nvidia.com/gpu.product", "operator": "In", "values": [gpu_type]}
        pod_spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [expression]}]
                }
            }
        }
    if tolerations is not None:
        pod_spec["tolerations"] = tolerations
    if node_selector is not None:
        pod_spec["nodeSelector"] = node_selector
    template_metadata: dict = {"labels": labels(name)}
    if annotations:
        template_metadata["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels(name)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels(name)},
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


def service(name: str = "chat") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "labels": labels(name)},
        "spec": {"selector": labels(name), "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}]},
    }


def objects(name: str = "chat", **kw) -> list[dict]:
    return [deployment(name, **kw), service(name)]


def only_pod(cluster: SimulatedCluster, name: str = "chat"):
    obs = cluster.observe(NS, name)
    assert len(obs.pods) == 1, obs.pods
    return obs, obs.pods[0], obs.pods[0].containers[0] if obs.pods[0].containers else None


def pod_names(name: str = "chat") -> set[str]:
    return set(SimulatedPod.objects.filter(namespace=NS, service=name).values_list("name", flat=True))


# --- pure pieces --------------------------------------------------------------------------


def test_quantities():
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("4") == 4
    assert parse_quantity(2) == 2
    assert parse_quantity("16Gi") == 16 * 2**30
    assert parse_quantity("512Mi") == 512 * 2**20
    assert parse_quantity("1Ki") == 1024
    assert parse_quantity("2G") == 2e9
    assert parse_quantity("3K") == 3000
    assert parse_quantity("1M") == 1e6
    with pytest.raises(ValueError):
        parse_quantity("4 cores")


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        ({"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}, True),
        ({"key": "gpu", "value": "yes"}, True),  # operator defaults to Equal, any effect
        ({"key": "gpu", "operator": "Equal", "value": "no"}, False),
        ({"key": "gpu", "operator": "Exists"}, True),
        ({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"operator": "Exists"}, True),  # empty key + Exists tolerates everything
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_tolerations(toleration, expected):
    assert tolerates(toleration, {"key": "gpu", "value": "yes", "effect": "NoSchedule"}) is expected


def test_scheduler_counts_fractional_cpu_and_memory(cluster):
    node = next(n for n in cluster.nodes() if n.name == CPU_NODE)  # 16 cpu, 64Gi
    pod = PodNeeds(requests={"cpu": 0.5, "memory": 2 * 2**30})
    assert node_misfit(node, pod, {"cpu": 15.5, "memory": 62 * 2**30}) == []
    assert node_misfit(node, pod, {"cpu": 15.6, "memory": 63 * 2**30}) == [
        "Insufficient cpu",
        "Insufficient memory",
    ]
    assert node_misfit(node, PodNeeds(requests={}), {"pods": 110}) == ["Too many pods"]


def test_scheduler_affinity_operators(cluster):
    nodes = cluster.nodes()

    def place(*expressions):
        affinity = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]
                }
            }
        }
        return pick_node(nodes, PodNeeds(requests={"cpu": 1}, affinity=affinity), {})

    gpu = "nvidia.com/gpu.product"
    assert place({"key": gpu, "operator": "In", "values": [A100]})[0] == A100_NODE
    assert place({"key": gpu, "operator": "NotIn", "values": ["NVIDIA-H100"]})[0] == A100_NODE
    assert place({"key": gpu, "operator": "DoesNotExist"})[0] == CPU_NODE
    assert place({"key": gpu, "operator": "Exists"})[0] == H100_NODE
    assert place({"key": gpu, "operator": "In", "values": ["NVIDIA-B200"]}) == (
        None,
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
    )


def test_restart_backoff_grows():
    assert [restarts_after(t)[0] for t in (5, 20, 50, 100, 200, 1000, 1300)] == [1, 1, 2, 3, 4, 7, 8]


def test_back_off_schedule_and_pull_errors_match_the_harness_simulator():
    """Same numbers and words as deploy/testenv/kubelet_sim.py, so a failure looks alike on both."""
    path = Path(settings.BASE_DIR) / "deploy" / "testenv" / "kubelet_sim.py"
    spec = importlib.util.spec_from_file_location("harness_kubelet_sim", path)
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    for quarter_seconds in range(0, 4 * 3000, 3):
        elapsed = quarter_seconds / 4
        assert restarts_after(elapsed)[:2] == harness._restarts(elapsed)
        assert pull_attempts_after(elapsed)[0] == harness._pull_reason(elapsed)
    for image in ("vllm/vllm-openai:doesnotexist", "registry.invalid.example/team/vllm:v1", "nginx"):
        assert pull_error(image) == harness._pull_error(image)


# --- the cluster --------------------------------------------------------------------------


def test_identity_and_nodes(cluster, settings):
    assert cluster.display_name == "Simulated cluster" and cluster.simulated is True
    gpus = {n.name: n.allocatable.get("nvidia.com/gpu") for n in cluster.nodes()}
    assert gpus == {H100_NODE: "8", A100_NODE: "4", CPU_NODE: None}
    settings.WATCH_POLL_SECONDS = 0.5
    from_settings = SimulatedCluster.from_settings()
    assert from_settings.poll_seconds == 0.5
    assert from_settings.nodes_file == settings.SIMULATED_CLUSTER_NODES


@pytest.mark.django_db
def test_apply_twice_is_a_no_op(cluster):
    assert cluster.apply(objects()) == [f"Deployment {NS}/chat: created", f"Service {NS}/chat: created"]
    pods = pod_names()
    generation = SimulatedObject.objects.get(kind="Deployment", name="chat").generation
    assert cluster.apply(objects()) == [f"Deployment {NS}/chat: unchanged", f"Service {NS}/chat: unchanged"]
    assert pod_names() == pods and len(pods) == 1
    assert SimulatedObject.objects.get(kind="Deployment", name="chat").generation == generation
    changed = service()
    changed["spec"]["ports"][0]["port"] = 9000
    assert cluster.apply([changed]) == [f"Service {NS}/chat: configured"]
    assert SimulatedObject.objects.get(kind="Service", name="chat").generation == 2


@pytest.mark.django_db
def test_pod_goes_creating_then_loading_then_ready(cluster, clock):
    cluster.apply(objects())
    obs, pod, container = only_pod(cluster)
    assert obs.found and obs.desired_replicas == 1 and obs.ready_replicas == 0 and obs.other_objects == 1
    assert pod.scheduled is True and pod.node == H100_NODE and pod.phase == "Pending"
    assert (container.state, container.reason) == ("waiting", "ContainerCreating")
    assert "Pulling image" in container.message
    assert obs.observed_at == clock.now

    clock.advance(PULL)
    obs, pod, container = only_pod(cluster)
    assert pod.phase == "Running" and not pod.ready and container.state == "running"
    assert container.message == "loading model"
    assert obs.ready_replicas == 0 and obs.conditions["Available"][0] == "False"

    clock.advance(LOAD)
    obs, pod, container = only_pod(cluster)
    assert pod.ready and container.ready
    assert (obs.ready_replicas, obs.updated_replicas, obs.available_replicas) == (1, 1, 1)
    assert obs.conditions["Available"][0] == "True"
    assert obs.conditions["Progressing"][1] == "NewReplicaSetAvailable"
    reasons = [(e.type, e.reason) for e in obs.events]
    for expected in [
        ("Normal", "Scheduled"),
        ("Normal", "Pulling"),
        ("Normal", "Pulled"),
        ("Normal", "Started"),
    ]:
        assert expected in reasons
    assert ("Warning", "Unhealthy") in reasons  # while the model loaded
    assert cluster.pod_logs(NS, pod.name).splitlines()[-1] == "[simulated cluster] ready on :8000"


@pytest.mark.django_db
def test_too_many_gpus_is_unschedulable(cluster):
    cluster.apply(objects(gpus=16))
    obs, pod, _ = only_pod(cluster)
    assert pod.scheduled is False and pod.scheduling_reason == "Unschedulable" and pod.node == ""
    assert pod.scheduling_message == "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    assert [(e.type, e.reason, e.message) for e in obs.events] == [
        ("Warning", "FailedScheduling", pod.scheduling_message)
    ]


@pytest.mark.django_db
def test_scheduler_message_counts_each_reason(cluster):
    cluster.apply(objects(gpus=16, gpu_type="NVIDIA-H100"))
    _, pod, _ = only_pod(cluster)
    assert pod.scheduling_message == (
        "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, "
        "2 node(s) didn't match Pod's node affinity/selector."
    )


@pytest.mark.django_db
def test_gpu_type_affinity_lands_on_matching_node(cluster):
    cluster.apply(objects(gpu_type=A100))
    _, pod, _ = only_pod(cluster)
    assert pod.node == A100_NODE
    cluster.apply(objects("other", node_selector={"kubernetes.io/hostname": CPU_NODE}, gpus=0))
    assert only_pod(cluster, "other")[1].node == CPU_NODE


@pytest.mark.django_db
def test_pending_pod_is_scheduled_once_capacity_frees(cluster, clock):
    cluster.apply(objects("big-a", gpus=8))
    assert only_pod(cluster, "big-a")[1].node == H100_NODE
    clock.advance(1)
    cluster.apply(objects("big-b", gpus=8))
    _, pod, _ = only_pod(cluster, "big-b")
    assert pod.scheduled is False and "3 Insufficient nvidia.com/gpu" in pod.scheduling_message

    cluster.delete_service(NS, "big-a")
    clock.advance(1)
    _, pod, container = only_pod(cluster, "big-b")
    assert pod.scheduled is True and pod.node == H100_NODE
    assert container.reason == "ContainerCreating"
    assert SimulatedPod.objects.get(name=pod.name).scheduled_at == clock.now - timedelta(seconds=1)


@pytest.mark.django_db
def test_oldest_pending_pod_is_bound_first(cluster, clock):
    cluster.apply(objects("holder", gpus=8))
    for name in ("first", "second"):
        clock.advance(1)
        cluster.apply(objects(name, gpus=8))
    cluster.delete_service(NS, "holder")
    assert only_pod(cluster, "first")[1].node == H100_NODE
    assert only_pod(cluster, "second")[1].scheduled is False


@pytest.mark.django_db
def test_tolerations_against_a_tainted_node(tmp_path, clock, faults_file):
    nodes = tmp_path / "nodes.json"
    nodes.write_text(
        json.dumps(
            {
                "nodes": [
                    {
                        "name": "tainted-gpu",
                        "capacity": {"cpu": "32", "memory": "128Gi", "nvidia.com/gpu": "4"},
                        "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
                    },
                    {"name": "plain", "capacity": {"cpu": "8", "memory": "32Gi"}},
                ]
            }
        )
    )
    cluster = make_cluster(clock, faults_file, nodes)
    cluster.apply(objects("untolerated"))
    _, pod, _ = only_pod(cluster, "untolerated")
    assert pod.scheduling_message == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, "
        "1 node(s) had untolerated taint {nvidia.com/gpu: present}."
    )
    wrong_value = [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent", "effect": "NoSchedule"}]
    cluster.apply(objects("wrong-value", tolerations=wrong_value))
    assert only_pod(cluster, "wrong-value")[1].scheduled is False

    exists = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    cluster.apply(objects("tolerated", tolerations=exists))
    assert only_pod(cluster, "tolerated")[1].node == "tainted-gpu"
    cluster.apply(objects("everything", tolerations=[{"operator": "Exists"}]))
    assert only_pod(cluster, "everything")[1].node == "tainted-gpu"


@pytest.mark.django_db
def test_scale_up_and_down(cluster, clock):
    cluster.apply(objects(replicas=1))
    (first,) = pod_names()
    clock.advance(1)
    assert cluster.apply(objects(replicas=3))[0] == f"Deployment {NS}/chat: configured"
    assert len(pod_names()) == 3 and first in pod_names()
    assert all(n.startswith("chat-") and len(n.split("-")[-1]) == 5 for n in pod_names())
    obs = cluster.observe(NS, "chat")
    assert obs.desired_replicas == 3 and obs.updated_replicas == 3
    cluster.apply(objects(replicas=1))
    assert pod_names() == {first}  # the newest go first
    cluster.apply(objects(replicas=0))
    obs = cluster.observe(NS, "chat")
    assert obs.found and obs.pods == () and obs.desired_replicas == 0


@pytest.mark.django_db
def test_template_change_replaces_pods(cluster, clock):
    cluster.apply(objects(replicas=2))
    old = pod_names()
    clock.advance(10)
    cluster.apply(objects(replicas=2, image="vllm/vllm-openai:v0.12.0"))
    new = pod_names()
    assert len(new) == 2 and not (old & new)
    obs = cluster.observe(NS, "chat")
    assert obs.updated_replicas == 2
    assert all(c.reason == "ContainerCreating" for p in obs.pods for c in p.containers)
    # A label-only change of the Deployment keeps the pods.
    relabelled = objects(replicas=2, image="vllm/vllm-openai:v0.12.0")
    relabelled[0]["metadata"]["labels"]["team"] = "a"
    cluster.apply(relabelled)
    assert pod_names() == new


@pytest.mark.django_db
def test_fault_image_pull_backoff_annotation(cluster, clock):
    cluster.apply(objects(annotations={"sim.harness/fail": "ImagePullBackOff"}))
    clock.advance(PULL)
    obs, pod, container = only_pod(cluster)
    assert pod.phase == "Pending" and not pod.ready
    assert (container.state, container.reason) == ("waiting", "ImagePullBackOff")
    assert "Back-off pulling image" in container.message
    reasons = {(e.type, e.reason) for e in obs.events}
    assert {("Warning", "Failed"), ("Normal", "BackOff")} <= reasons
    assert "failed to pull image" in cluster.pod_logs(NS, pod.name)


@pytest.mark.django_db
def test_fault_crash_loop_restarts_grow(cluster, clock):
    cluster.apply(objects(annotations={"sim.harness/fail": "CrashLoopBackOff", "sim.harness/exit-code": "3"}))
    clock.advance(PULL + 5)
    _, pod, container = only_pod(cluster)
    assert pod.phase == "Running" and not pod.ready
    assert (container.state, container.reason) == ("waiting", "CrashLoopBackOff")
    assert (container.last_terminated_reason, container.last_exit_code) == ("Error", 3)
    counts = [container.restart_count]
    for _ in range(3):
        clock.advance(45)
        counts.append(only_pod(cluster)[2].restart_count)
    assert counts == sorted(counts) and counts[-1] > counts[0] >= 1
    previous = cluster.pod_logs(NS, pod.name, previous=True).splitlines()
    assert "Traceback (most recent call last):" in previous
    assert previous[-1].endswith("terminated: Error (exit code 3)")
    assert "previous log" in cluster.pod_logs(NS, pod.name)


@pytest.mark.django_db
def test_fault_oom_killed_by_annotation_and_by_tiny_memory_limit(cluster, clock):
    cluster.apply(objects("annotated", gpus=0, annotations={"sim.harness/fail": "OOMKilled"}))
    cluster.apply(objects("tiny", gpus=0, memory="32Mi"))
    clock.advance(PULL + 2)
    for name in ("annotated", "tiny"):
        _, pod, container = only_pod(cluster, name)
        assert container.reason == "CrashLoopBackOff"
        assert (container.last_terminated_reason, container.last_exit_code) == ("OOMKilled", 137)
        assert (
            cluster.pod_logs(NS, pod.name, previous=True)
            .splitlines()[-1]
            .endswith("OOMKilled (exit code 137)")
        )


@pytest.mark.django_db
def test_fault_other_reason_ready_after_and_start_after(cluster, clock):
    cluster.apply(objects("config", annotations={"sim.harness/fail": "CreateContainerConfigError"}))
    cluster.apply(objects("never", annotations={"sim.harness/ready-after": "never"}))
    cluster.apply(objects("late", annotations={"sim.harness/start-after": "20"}))
    clock.advance(10)
    _, pod, container = only_pod(cluster, "config")
    assert pod.phase == "Pending" and container.reason == "CreateContainerConfigError"
    assert only_pod(cluster, "late")[2].reason == "ContainerCreating"
    clock.advance(1000)
    assert only_pod(cluster, "never")[1].phase == "Running"
    assert not only_pod(cluster, "never")[1].ready
    assert only_pod(cluster, "late")[1].ready


@pytest.mark.django_db
def test_fault_rules_file_by_label(cluster, clock, faults_file):
    write_rules(
        faults_file, [{"labels": {LABEL_SERVICE: "broken"}, "fail": "CrashLoopBackOff", "exit_code": 4}]
    )
    cluster.apply(objects("broken"))
    cluster.apply(objects("fine"))
    cluster.apply(objects("annotated", annotations={"sim.harness/fail": "OOMKilled"}))
    clock.advance(PULL + LOAD)
    broken = only_pod(cluster, "broken")[2]
    assert (broken.reason, broken.last_exit_code) == ("CrashLoopBackOff", 4)
    assert only_pod(cluster, "fine")[1].ready
    write_rules(faults_file, {"rules": [{"labels": {}, "fail": "CrashLoopBackOff"}]})  # every pod
    assert only_pod(cluster, "annotated")[2].last_terminated_reason == "OOMKilled"  # annotation wins
    assert only_pod(cluster, "fine")[2].reason == "CrashLoopBackOff"  # the file is re-read
    faults_file.unlink()
    assert only_pod(cluster, "broken")[1].ready  # no file, no rules


@pytest.mark.django_db
def test_builtin_rule_image_tag_doesnotexist(cluster, clock):
    cluster.apply(objects("missing", image="vllm/vllm-openai:doesnotexist"))
    cluster.apply(objects("nohost", image="registry.invalid.example/vllm:v1"))
    clock.advance(PULL + 1)
    container = only_pod(cluster, "missing")[2]
    assert container.reason == "ErrImagePull" and "not found" in container.message
    assert "no such host" in only_pod(cluster, "nohost")[2].message
    clock.advance(5)
    obs, pod, container = only_pod(cluster, "missing")
    assert pod.phase == "Pending" and container.reason == "ImagePullBackOff"
    assert any(e.reason == "Failed" and "doesnotexist" in e.message for e in obs.events)


@pytest.mark.django_db
def test_delete_removes_everything(cluster):
    cluster.apply(
        [
            *objects(),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "chat-env", "namespace": NS, "labels": labels("chat")},
            },
        ]
    )
    cluster.apply(objects("keep"))
    assert cluster.observe(NS, "chat").other_objects == 2
    cluster.delete_service(NS, "chat")
    obs = cluster.observe(NS, "chat")
    assert not obs.found and not obs.anything_left
    assert not SimulatedObject.objects.filter(service="chat").exists()
    assert not SimulatedPod.objects.filter(service="chat").exists()
    assert cluster.observe(NS, "keep").found


@pytest.mark.django_db
def test_unsupported_kind_and_invalid_objects_are_permanent_errors(cluster):
    cron = {"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "x", "namespace": NS}}
    with pytest.raises(
        PermanentClusterError, match=r"^the simulated cluster does not serve batch/v1beta1 CronJob$"
    ):
        cluster.apply([service(), cron])
    assert not SimulatedObject.objects.exists()  # nothing applied before the refusal
    with pytest.raises(PermanentClusterError, match="does not serve extensions/v1beta1 Deployment"):
        cluster.apply([{**deployment(), "apiVersion": "extensions/v1beta1"}])
    mismatched = deployment()
    mismatched["spec"]["selector"]["matchLabels"][LABEL_SERVICE] = "other"
    with pytest.raises(PermanentClusterError, match="selector` does not match template `labels`"):
        cluster.apply([mismatched])
    bad_quantity = deployment(memory="lots")
    with pytest.raises(PermanentClusterError, match="invalid quantity"):
        cluster.apply([bad_quantity])


@pytest.mark.django_db
def test_secrets_are_not_stored_in_plain_text(cluster):
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": NS, "labels": labels("chat")},
        "stringData": {"AWS_SECRET_ACCESS_KEY": "hunter2-very-secret"},
    }
    assert cluster.apply([secret]) == [f"Secret {NS}/creds: created"]
    assert "hunter2" not in json.dumps(SimulatedObject.objects.get(kind="Secret").body)
    assert cluster.apply([secret]) == [f"Secret {NS}/creds: unchanged"]
    secret["stringData"]["AWS_SECRET_ACCESS_KEY"] = "rotated"
    assert cluster.apply([secret]) == [f"Secret {NS}/creds: configured"]


@pytest.mark.django_db
def test_pod_logs_follow_the_pod(cluster, clock):
    cluster.apply(objects())
    (name,) = pod_names()
    assert cluster.pod_logs(NS, name) == "[simulated cluster] pulling image vllm/vllm-openai:v0.11.0 ...\n"
    clock.advance(PULL)
    lines = cluster.pod_logs(NS, name).splitlines()
    assert lines[-1] == "[simulated cluster] loading model from /models/org/model ..."
    assert cluster.pod_logs(NS, name, tail_lines=1).count("\n") == 1
    assert cluster.pod_logs(NS, name, previous=True) == ""
    with pytest.raises(PermanentClusterError):
        cluster.pod_logs(NS, "no-such-pod")


@pytest.mark.django_db
def test_fail_containers_picks_the_failing_container(cluster, clock):
    obj = deployment(
        annotations={"sim.harness/fail": "CrashLoopBackOff", "sim.harness/fail-containers": "sidecar"}
    )
    obj["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox:1.36"})
    cluster.apply([obj])
    clock.advance(PULL + LOAD)
    _, pod, _ = only_pod(cluster)
    states = {c.name: (c.state, c.reason, c.ready) for c in pod.containers}
    assert states == {"server": ("running", "", True), "sidecar": ("waiting", "CrashLoopBackOff", False)}
    assert pod.phase == "Running" and not pod.ready
    assert cluster.pod_logs(NS, pod.name).splitlines()[-1] == "[simulated cluster] ready on :8000"


@pytest.mark.django_db
def test_progress_deadline(cluster, clock):
    obj = deployment(gpus=16)
    obj["spec"]["progressDeadlineSeconds"] = 60
    cluster.apply([obj])
    assert cluster.observe(NS, "chat").conditions["Progressing"][1] == "ReplicaSetUpdated"
    clock.advance(61)
    status, reason, _ = cluster.observe(NS, "chat").conditions["Progressing"]
    assert (status, reason) == ("False", "ProgressDeadlineExceeded")


@pytest.mark.django_db
def test_namespaces_and_deployment_rules_of_the_api_server(cluster):
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    assert cluster.apply([namespace]) == [f"Namespace {NS}: created"]
    never = deployment()
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    with pytest.raises(PermanentClusterError, match="restartPolicy: Unsupported value"):
        cluster.apply([never])
    cluster.apply([deployment()])
    moved = deployment()
    moved["spec"]["selector"]["matchLabels"] = {LABEL_SERVICE: "chat"}
    with pytest.raises(PermanentClusterError, match="field is immutable"):
        cluster.apply([moved])


@pytest.mark.django_db
def test_watch_reports_a_service_that_disappears(cluster):
    cluster.apply(objects())
    calls: list[tuple[str, str]] = []

    def on_change(namespace: str, name: str) -> None:
        calls.append((namespace, name))
        if len(calls) == 1:
            cluster.delete_service(namespace, name)  # the next poll finds nothing left

    deadline = time.monotonic() + 10
    cluster.watch(on_change, lambda: len(calls) >= 2 or time.monotonic() > deadline)
    assert calls == [(NS, "chat"), (NS, "chat")]
    assert not cluster.observe(NS, "chat").anything_left


def _watch_in_thread(cluster):
    """Run cluster.watch in a thread; return (calls queue, stop event, thread)."""
    calls: queue.Queue = queue.Queue()
    stop = threading.Event()

    def run():
        try:
            cluster.watch(lambda ns, name: calls.put((ns, name)), stop.is_set)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return calls, stop, thread


@pytest.mark.django_db(transaction=True)
def test_watch_reports_changes_and_stops(cluster, clock):
    cluster.apply(objects())
    calls, stop, thread = _watch_in_thread(cluster)
    try:
        assert calls.get(timeout=10) == (NS, "chat")  # every service once at the start
        clock.advance(PULL)  # ContainerCreating -> Running
        assert calls.get(timeout=10) == (NS, "chat")
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_watch_returns_soon_after_stop_even_with_a_long_poll(clock, faults_file):
    cluster = make_cluster(clock, faults_file, poll=60)
    cluster.apply(objects())
    calls, stop, thread = _watch_in_thread(cluster)
    try:
        assert calls.get(timeout=10) == (NS, "chat")
    finally:
        stop.set()
        thread.join(timeout=2)
    assert not thread.is_alive()


@pytest.mark.django_db
def test_applies_the_renderers_output(cluster, clock):
    from deploy.render import render_service
    from deploy.spec import ModelVolume, ServiceSpec

    spec = ServiceSpec(
        name="chat",
        namespace=NS,
        runtime="vllm",
        image="vllm/vllm-openai:v0.11.0",
        model_volume=ModelVolume(kind="pvc", claim_name="models"),
        model_path="org/model",
        served_model_name="model",
        gpu_count=2,
        gpu_type=A100,
        env=(("VLLM_LOGGING_LEVEL", "INFO"),),
    )
    rendered = render_service(spec)
    lines = cluster.apply(rendered)
    assert all(line.endswith(": created") for line in lines) and len(lines) == len(rendered)
    assert all(line.endswith(": unchanged") for line in cluster.apply(render_service(spec)))
    clock.advance(PULL + LOAD)
    obs, pod, _ = only_pod(cluster)
    assert pod.node == A100_NODE and pod.ready and obs.ready_replicas == 1
    assert obs.other_objects == len(rendered) - 1
    assert "loading model from" in cluster.pod_logs(NS, pod.name)


@pytest.mark.django_db
def test_admin_lists_the_simulated_state(cluster, admin_client):
    cluster.apply(objects())
    for model in ("simulatedobject", "simulatedpod"):
        response = admin_client.get(f"/admin/deploy/{model}/")
        assert response.status_code == 200
        assert b"chat" in response.content

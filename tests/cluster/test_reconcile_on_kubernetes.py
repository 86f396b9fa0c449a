"""The console's own reconcile path (action → task → sync → adapter → derive_status) with
CLUSTER_BACKEND=kubernetes against the real API server."""

import time

import pytest
from kubernetes import client

from datasets.prewarm import prewarm_spec
from deploy import clusters
from deploy.prewarm import render_prewarm
from deploy.sync import observe_service
from deploy.tasks import delete_service, reconcile_service
from services import phases
from services.actions import service_create, service_delete
from services.models import InferenceService

pytestmark = [pytest.mark.cluster, pytest.mark.django_db]


@pytest.fixture
def kubernetes_backend(settings, harness_kubeconfig, namespace):
    settings.CLUSTER_BACKEND = "kubernetes"
    settings.KUBECONFIG = harness_kubeconfig
    settings.SERVICE_NAMESPACE = namespace
    clusters._cluster_for.cache_clear()
    yield clusters.get_cluster()
    clusters._cluster_for.cache_clear()


@pytest.fixture
def prewarmed_dataset(kubernetes_backend, kube_api_client, namespace, dataset, bound_volume):
    """The shared NFS dataset as a finished prewarm leaves it: Ready, with its copy in the PVC
    that services mount (dataset-<name>), applied as the prewarm renders it and bound to a
    volume. Without it the pods wait for a missing claim and are never scheduled."""
    spec = prewarm_spec(dataset, job_name="prewarm-done")
    (claim,) = [o for o in render_prewarm(spec) if o["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == dataset.model_volume().claim_name
    bound_volume(
        namespace,
        spec.claim_name,
        size=spec.cache_size,
        access_mode=spec.access_mode,
        storage_class=spec.storage_class,
    )
    kubernetes_backend.apply([claim])
    core = client.CoreV1Api(kube_api_client)
    deadline = time.monotonic() + 30
    while True:
        phase = core.read_namespaced_persistent_volume_claim(spec.claim_name, namespace).status.phase
        if phase == "Bound":
            break
        if time.monotonic() > deadline:
            pytest.fail(f"PVC {namespace}/{spec.claim_name} not bound after 30 s: {phase}")
        time.sleep(0.25)
    return dataset


def observe_until(service_id: int, done, *, timeout: float = 60.0) -> InferenceService:
    """Observe as the watcher would until done(service); fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service = InferenceService.objects.select_related("dataset", "queue").get(id=service_id)
        if done(service):
            return service
        observe_service(service)
        time.sleep(0.5)
    pytest.fail(f"timed out; last phase {service.phase} {service.reason}: {service.message}")


def test_create_reaches_running_and_delete_removes_everything(
    kubernetes_backend, user, queue, prewarmed_dataset
):
    service = service_create(
        owner=user,
        name="chat",
        queue=queue,
        dataset=prewarmed_dataset,
        model_path="THUDM/chatglm2-6b",
        gpu_count=1,
    )
    reconcile_service(service.id)  # what the worker runs after commit
    service.refresh_from_db()
    assert service.applied_revision
    assert service.events.filter(reason="Applied", message__contains="Deployment").exists()

    service = observe_until(service.id, lambda s: s.phase == phases.RUNNING)
    assert service.ready_replicas == 1
    assert service.observed["pods"][0]["node"] in {"gpu-node-1", "gpu-node-2"}

    reconcile_service(service.id)  # idempotent: a second reconcile changes nothing in the cluster
    assert "unchanged" in service.events.filter(reason="Applied").last().message

    service_delete(service=service, actor=user)
    delete_service(service.id)
    observe_until(service.id, lambda s: s.phase == phases.DELETED)
    assert not kubernetes_backend.observe(service.namespace, "chat").anything_left


def test_no_free_gpus_fails_unschedulable(kubernetes_backend, user, queue, prewarmed_dataset):
    """Within quota but the H100 node is taken: kube-scheduler's verdict becomes the reason. (A
    service bigger than any node is refused at submit by the admission check.)"""
    queue.quotas.update(gpus=64)
    common = {
        "owner": user,
        "queue": queue,
        "dataset": prewarmed_dataset,
        "model_path": "m",
        "runtime": "triton",
    }
    first = service_create(name="first", gpu_count=8, gpu_type="NVIDIA-H100", **common)
    reconcile_service(first.id)
    observe_until(first.id, lambda s: s.phase == phases.RUNNING)
    service = service_create(name="huge", gpu_count=8, gpu_type="NVIDIA-H100", **common)
    reconcile_service(service.id)
    service = observe_until(service.id, lambda s: s.phase == phases.FAILED)
    assert service.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in service.message

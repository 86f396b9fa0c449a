"""create → Running → delete, through the API, a real worker on Redis and the watcher."""

from django.db import connection

from deploy.clusters import get_cluster
from services import phases
from services.models import InferenceService
from tests.stack import wait_for


def phase_of(service_id: int) -> str:
    connection.close()  # see the worker's commits, not a stale connection state
    return InferenceService.objects.get(id=service_id).phase


def test_create_runs_and_delete_removes(api, service_payload, celery_worker, watcher):
    response = api.post("/api/v1/services/", service_payload, format="json")
    assert response.status_code == 201, response.content
    service_id = response.json()["id"]
    assert response.json()["status"]["phase"] == phases.PENDING

    wait_for(lambda: phase_of(service_id) == phases.RUNNING, what="phase Running")
    service = InferenceService.objects.get(id=service_id)
    assert service.ready_replicas == 1
    assert service.applied_revision
    assert service.observed["pods"][0]["node"].startswith("gpu-node")
    timeline = [e.phase for e in service.events.filter(kind="phase")]
    assert timeline[0] == phases.DEPLOYING
    assert phases.STARTING in timeline
    assert timeline[-1] == phases.RUNNING

    response = api.delete(f"/api/v1/services/{service_id}/")
    assert response.status_code == 202
    assert response.json()["status"]["phase"] == phases.DELETING
    wait_for(lambda: phase_of(service_id) == phases.DELETED, what="phase Deleted")
    observation = get_cluster().observe(service.namespace, service.name)
    assert not observation.anything_left


def test_no_free_gpus_fails_unschedulable(api, service_payload, queue, celery_worker, watcher):
    """Within quota but the H100 node is full: the cluster's scheduler says so. (A service bigger
    than any node is refused at submit: tests/web/test_queues.py.)"""
    queue.quotas.update(gpus=64)
    h100 = {**service_payload, "gpu_count": 8, "gpu_type": "NVIDIA-H100"}
    first = api.post("/api/v1/services/", {**h100, "name": "first"}, format="json").json()["id"]
    wait_for(lambda: phase_of(first) == phases.RUNNING, what="the first to run")
    response = api.post("/api/v1/services/", {**h100, "name": "second"}, format="json")
    assert response.status_code == 201, response.content
    service_id = response.json()["id"]
    wait_for(lambda: phase_of(service_id) == phases.FAILED, what="phase Failed")
    service = InferenceService.objects.get(id=service_id)
    assert service.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in service.message


def test_scale_to_zero_stops_and_back_runs(api, service_payload, celery_worker, watcher):
    service_id = api.post("/api/v1/services/", service_payload, format="json").json()["id"]
    wait_for(lambda: phase_of(service_id) == phases.RUNNING, what="phase Running")
    assert api.patch(f"/api/v1/services/{service_id}/", {"replicas": 0}, format="json").status_code == 200
    wait_for(lambda: phase_of(service_id) == phases.STOPPED, what="phase Stopped")
    assert api.patch(f"/api/v1/services/{service_id}/", {"replicas": 2}, format="json").status_code == 200
    wait_for(lambda: phase_of(service_id) == phases.RUNNING, what="phase Running again")
    assert InferenceService.objects.get(id=service_id).ready_replicas == 2


def test_a_queued_service_runs_when_an_earlier_one_is_deleted(api, service_payload, celery_worker, watcher):
    first = api.post("/api/v1/services/", {**service_payload, "name": "first", "gpu_count": 8}, format="json")
    wait_for(lambda: phase_of(first.json()["id"]) == phases.RUNNING, what="the first to run")
    second = api.post(
        "/api/v1/services/", {**service_payload, "name": "second", "gpu_count": 4}, format="json"
    )
    third = api.post("/api/v1/services/", {**service_payload, "name": "third", "gpu_count": 8}, format="json")
    second_id, third_id = second.json()["id"], third.json()["id"]
    assert second.json()["status"]["phase"] == phases.QUEUED
    waiting = api.get("/api/v1/queues/gpu-a100/workloads/").json()["waiting"]
    assert [(w["name"], w["position"]) for w in waiting] == [("second", 1), ("third", 2)]

    assert api.delete(f"/api/v1/services/{first.json()['id']}/").status_code == 202

    wait_for(lambda: phase_of(second_id) == phases.RUNNING, what="the second to be admitted and run")
    third_status = api.get(f"/api/v1/services/{third_id}/").json()["status"]
    assert third_status["phase"] == phases.QUEUED
    assert "4 of 8 in use by 1 service" in third_status["message"]
    waiting = api.get("/api/v1/queues/gpu-a100/workloads/").json()["waiting"]
    assert [(w["name"], w["position"]) for w in waiting] == [("third", 1)]

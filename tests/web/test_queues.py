"""Queues, flavors and admission through the REST API on the simulated cluster's nodes (8 H100s,
4 A100s, a CPU node): the pre-submit check, Queued services with their position and reason,
admission when quota frees up, team limits, per-flavor quotas, and the race for the last GPUs."""

import threading

import pytest
from django.db import connection

from queues.actions import flavor_create, queue_create
from queues.models import Team
from services import phases
from services.actions import service_delete
from services.models import InferenceService

pytestmark = pytest.mark.django_db

H100, A100 = "NVIDIA-H100", "NVIDIA-A100-SXM4-80GB"


def create(api, payload, **overrides):
    response = api.post("/api/v1/services/", {**payload, **overrides}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def phase(service_id: int) -> tuple[str, str, str]:
    service = InferenceService.objects.get(id=service_id)
    return service.phase, service.reason, service.message


def test_the_pre_submit_check_answers_without_creating_anything(api, service_payload):
    fits = api.post(
        "/api/v1/services/check/", {**service_payload, "replicas": 2, "gpu_count": 2}, format="json"
    )
    assert fits.status_code == 200, fits.content
    assert fits.json()["verdict"] == "admit"
    assert fits.json()["holds"] == "4 × GPU (flavor default) for 2 replicas"
    refused = api.post("/api/v1/services/check/", {**service_payload, "replicas": 9}, format="json").json()
    assert (refused["verdict"], refused["field"]) == ("refuse", "queue")
    assert "needs 9 nvidia.com/gpu; queue gpu-a100 has at most 8" in refused["message"]
    bad = api.post("/api/v1/services/check/", {**service_payload, "name": "Bad_Name"}, format="json")
    assert bad.status_code == 400 and "name" in bad.json()
    assert not InferenceService.objects.exists()


def test_a_service_that_must_wait_is_queued_with_position_and_goes_when_quota_frees(
    api, user, service_payload, django_capture_on_commit_callbacks
):
    first = create(api, service_payload, name="first", gpu_count=8)
    check = api.post(
        "/api/v1/services/check/", {**service_payload, "name": "second", "gpu_count": 4}, format="json"
    )
    assert (check.json()["verdict"], check.json()["position"]) == ("queue", 1)

    second = create(api, service_payload, name="second", gpu_count=4)
    third = create(api, service_payload, name="third", gpu_count=8)

    assert second["status"]["phase"] == phases.QUEUED
    assert phase(second["id"])[1:] == (
        "WaitingForQuota",
        "waiting for 4 nvidia.com/gpu in flavor default: 8 of 8 in use by 1 service",
    )
    workloads = api.get("/api/v1/queues/gpu-a100/workloads/").json()
    assert [w["name"] for w in workloads["admitted"]] == ["first"]
    assert [(w["name"], w["position"]) for w in workloads["waiting"]] == [("second", 1), ("third", 2)]
    assert api.get("/api/v1/queues/gpu-a100/").json()["services_queued"] == 2

    with django_capture_on_commit_callbacks(execute=True):
        service_delete(service=InferenceService.objects.get(id=first["id"]), actor=user)

    # The quota is free at once: the second goes (it is Pending, reconcile is queued); the third
    # now waits first in line, for the 4 GPUs the second holds.
    assert phase(second["id"])[:2] == (phases.PENDING, "Admitted")
    assert InferenceService.objects.get(id=second["id"]).flavor.name == "default"
    assert phase(third["id"]) == (
        phases.QUEUED,
        "WaitingForQuota",
        "waiting for 4 nvidia.com/gpu in flavor default: 4 of 8 in use by 1 service",  # 4 more
    )


def test_a_higher_priority_class_goes_first(api, admin_api, service_payload):
    from queues.models import PriorityClass

    PriorityClass.objects.create(name="urgent", value=1000)
    create(api, service_payload, name="first", gpu_count=8)
    create(api, service_payload, name="normal", gpu_count=4)
    urgent = api.post(
        "/api/v1/services/check/",
        {**service_payload, "name": "urgent", "gpu_count": 4, "priority_class": "urgent"},
        format="json",
    ).json()
    assert (urgent["verdict"], urgent["position"]) == ("queue", 1)


def test_team_limits_are_enforced_by_the_console(api, user, service_payload):
    team = Team.objects.create(name="nlp", max_gpus=2, max_services=5)
    team.members.add(user)
    create(api, service_payload, name="small", gpu_count=2)
    response = api.post(
        "/api/v1/services/", {**service_payload, "name": "more", "gpu_count": 1}, format="json"
    )
    assert response.status_code == 400
    assert "team nlp holds 2 of its 2 GPUs" in response.json()["team"][0]
    assert InferenceService.objects.get(name="small").team == team


def test_a_team_may_only_use_its_queues(api, user, service_payload):
    other = queue_create(name="other", gpu_quota=8)
    team = Team.objects.create(name="vision")
    team.members.add(user)
    team.queues.add(other)
    response = api.post("/api/v1/services/", service_payload, format="json")
    assert response.status_code == 400 and "may use these queues: other" in response.json()["queue"][0]


def test_flavors_and_per_flavor_quotas_place_services_on_their_nodes(api, admin_api, service_payload):
    assert (
        admin_api.post(
            "/api/v1/flavors/",
            {"name": "h100", "node_labels": {"nvidia.com/gpu.product": H100}},
            format="json",
        ).status_code
        == 201
    )
    flavor_create(name="a100", node_labels={"nvidia.com/gpu.product": A100})
    bad = admin_api.post("/api/v1/flavors/", {"name": "x", "node_labels": {"bad key!": "v"}}, format="json")
    assert bad.status_code == 400 and "node_labels" in bad.json()
    response = admin_api.post(
        "/api/v1/queues/",
        {
            "name": "mixed",
            "cohort": "ml",
            "flavors": [
                {"flavor": "h100", "gpus": 8, "cpu": "64", "memory_gib": 512},
                {"flavor": "a100", "gpus": 4, "cpu": "32", "memory_gib": 256},
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert [f["flavor"] for f in response.json()["flavors"]] == ["h100", "a100"]

    on_a100 = create(api, service_payload, name="on-a100", queue="mixed", gpu_type=A100, gpu_count=2)
    service = InferenceService.objects.get(id=on_a100["id"])
    assert service.flavor.name == "a100"
    manifests = api.get(f"/api/v1/services/{service.id}/manifests/").json()
    assert "nvidia.com/gpu.product" in str(manifests) and A100 in str(manifests)
    usage = {u["flavor"]: u["gpus"] for u in api.get("/api/v1/queues/mixed/").json()["usage"]}
    assert usage == {"h100": {"quota": 8, "used": 0}, "a100": {"quota": 4, "used": 2}}
    refused = api.post(
        "/api/v1/services/check/",
        {**service_payload, "queue": "mixed", "gpu_type": "Tesla-T4"},
        format="json",
    ).json()
    assert (refused["verdict"], refused["field"]) == ("refuse", "gpu_type")


@pytest.mark.django_db(transaction=True)
def test_two_services_racing_for_the_last_gpus_are_not_both_admitted(user, queue, dataset, service_payload):
    from services.actions import service_create

    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    barrier = threading.Barrier(2)
    errors = []

    def create_one(name: str) -> None:
        try:
            barrier.wait(timeout=10)
            service_create(owner=user, name=name, queue=queue, dataset=dataset, model_path="m", gpu_count=8)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=create_one, args=(name,)) for name in ("racer-a", "racer-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors, errors
    phases_seen = sorted(InferenceService.objects.values_list("phase", flat=True))
    assert phases_seen == [phases.PENDING, phases.QUEUED]  # exactly one admitted


def test_where_kueue_is_not_installed_the_queue_says_so(admin_api, settings, tmp_path):
    """The simulated cluster serves no Kueue kinds: nothing is applied, the console governs."""
    from deploy import clusters
    from queues.kueue import apply_queue_objects, queue_objects
    from queues.models import Queue

    settings.SIMULATED_STATE_DIR = str(tmp_path)
    clusters._cluster_for.cache_clear()
    response = admin_api.post("/api/v1/queues/", {"name": "plain", "gpu_quota": 4}, format="json")
    assert response.status_code == 201, response.content
    queue = Queue.objects.get(name="plain")
    kinds = [obj["kind"] for obj in queue_objects(queue)]
    assert kinds == ["Namespace", "ResourceFlavor", "ClusterQueue", "LocalQueue"]
    apply_queue_objects(queue)
    queue.refresh_from_db()
    assert queue.kueue_state == Queue.KueueState.NOT_APPLIED
    assert "the console's own admission check applies the quotas" in queue.kueue_message.lower()


def test_limits_without_a_cohort_are_refused_next_to_the_flavors(admin_api):
    from queues.actions import flavor_create

    flavor_create(name="h100", node_labels={"nvidia.com/gpu.product": H100})
    response = admin_api.post(
        "/api/v1/queues/",
        {
            "name": "lonely",
            "flavors": [
                {"flavor": "h100", "gpus": 8, "cpu": "8", "memory_gib": 64, "gpu_borrowing_limit": 2}
            ],
        },
        format="json",
    )
    assert response.status_code == 400 and "need a cohort" in str(response.json()["flavors"])

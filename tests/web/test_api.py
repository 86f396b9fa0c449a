"""The REST API as automation uses it: Bearer tokens, list filters, pagination, actions."""

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from auth.actions import api_token_create
from services import phases
from services.models import InferenceService

pytestmark = pytest.mark.django_db


def create(api, payload, **changes):
    response = api.post("/api/v1/services/", {**payload, **changes}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_create_returns_spec_status_and_access(api, service_payload, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        body = create(api, service_payload)
    assert len(callbacks) == 1  # reconcile is enqueued after commit, once
    assert body["status"]["phase"] == phases.PENDING
    assert body["namespace"] == "inference"
    assert body["access"]["internal_url"] == "http://chatglm2.inference.svc.cluster.local:8000"
    assert body["access"]["gateway_url"] == f"{settings.GATEWAY_PUBLIC_URL}/chatglm2"
    assert body["access"]["health_url"] == f"{settings.GATEWAY_PUBLIC_URL}/chatglm2/health"
    assert body["access"]["requires_key"] is True  # the payload's policy is api_key
    assert body["access"]["key_header"] == "Authorization: Bearer $INFERENCE_KEY"
    assert body["access"]["params"] == []
    assert body["env"] == [{"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}]
    service = InferenceService.objects.get(id=body["id"])
    assert service.events.get().reason == "Created"


def test_triton_access_has_grpc(api, service_payload):
    body = create(api, service_payload, runtime="triton", engine_args="--log-verbose=1")
    assert body["access"]["grpc_address"] == "chatglm2.inference.svc.cluster.local:8001"
    assert body["access"]["grpc_gateway"] == settings.GATEWAY_PUBLIC_GRPC != ""  # through the gateway
    assert body["access"]["health_url"].endswith("/v2/health/ready")


def test_list_filters_and_pagination(api, service_payload, queue):
    queue.quotas.update(gpus=100)
    for i in range(5):
        create(api, service_payload, name=f"svc-{i}", runtime="triton" if i % 2 else "vllm", engine_args="")
    InferenceService.objects.filter(name="svc-0").update(phase=phases.RUNNING)

    page = api.get("/api/v1/services/?page_size=2").json()
    assert page["count"] == 5
    assert len(page["results"]) == 2
    assert page["next"]
    assert [s["name"] for s in api.get("/api/v1/services/?phase=Running").json()["results"]] == ["svc-0"]
    assert api.get("/api/v1/services/?runtime=triton").json()["count"] == 2
    assert api.get("/api/v1/services/?name=svc-3").json()["count"] == 1
    assert api.get("/api/v1/services/?queue=gpu-a100").json()["count"] == 5
    assert api.get("/api/v1/services/?queue=other").json()["count"] == 0


def test_patch_replicas_checks_quota_and_records_event(
    api, service_payload, django_capture_on_commit_callbacks
):
    body = create(api, service_payload)
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.patch(f"/api/v1/services/{body['id']}/", {"replicas": 3}, format="json")
    assert response.status_code == 200
    assert response.json()["replicas"] == 3
    assert len(callbacks) == 1  # a new desired spec goes through reconcile
    too_many = api.patch(f"/api/v1/services/{body['id']}/", {"replicas": 9}, format="json")
    assert too_many.status_code == 400
    assert "queue gpu-a100 has at most 8" in too_many.json()["replicas"][0]
    assert InferenceService.objects.get(id=body["id"]).replicas == 3
    assert api.patch(f"/api/v1/services/{body['id']}/", {"replicas": -1}, format="json").status_code == 400


def test_delete_is_accepted_and_marks_deleting(api, service_payload):
    body = create(api, service_payload)
    response = api.delete(f"/api/v1/services/{body['id']}/")
    assert response.status_code == 202
    assert response.json()["status"]["phase"] == phases.DELETING
    # A deleted service's name can be reused once it is Deleted, not while Deleting.
    assert api.post("/api/v1/services/", service_payload, format="json").status_code == 400
    InferenceService.objects.filter(id=body["id"]).update(phase=phases.DELETED)
    assert api.post("/api/v1/services/", service_payload, format="json").status_code == 201


def test_manifests_and_events(api, service_payload):
    body = create(api, service_payload)
    manifests = api.get(f"/api/v1/services/{body['id']}/manifests/").json()
    kinds = [o["kind"] for o in manifests["objects"]]
    assert kinds == ["ConfigMap", "NetworkPolicy", "Deployment", "Service"]
    assert "kind: Deployment" in manifests["yaml"]
    events = api.get(f"/api/v1/services/{body['id']}/events/").json()
    assert events[0]["reason"] == "Created"


def test_users_see_only_their_services(api, service_payload, db):
    body = create(api, service_payload)
    bob = get_user_model().objects.create_user("bob", password="bob-password-1")
    _token, plaintext = api_token_create(user=bob, name="bob")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert other.get("/api/v1/services/").json()["count"] == 0
    assert other.get(f"/api/v1/services/{body['id']}/").status_code == 404
    assert other.delete(f"/api/v1/services/{body['id']}/").status_code == 404
    assert other.get(f"/api/v1/services/{body['id']}/events/").status_code == 404


def test_queues_are_read_by_users_and_written_by_staff(api, admin_user, queue):
    assert api.get("/api/v1/queues/").json()["results"][0]["name"] == "gpu-a100"
    assert api.post("/api/v1/queues/", {"name": "q2", "gpu_quota": 4}, format="json").status_code == 403
    staff = APIClient()
    staff.force_authenticate(admin_user)
    response = staff.post("/api/v1/queues/", {"name": "q2", "gpu_quota": 4}, format="json")
    assert response.status_code == 201
    assert staff.post("/api/v1/queues/", {"name": "Bad Name"}, format="json").json()["name"]


def test_datasets_validate_by_kind_and_prewarm_on_create(api, django_capture_on_commit_callbacks):
    missing = api.post("/api/v1/datasets/", {"name": "s3-models", "kind": "s3"}, format="json")
    assert missing.status_code == 400
    assert "bucket" in missing.json()["s3_bucket"][0]
    with django_capture_on_commit_callbacks() as callbacks:
        created = api.post(
            "/api/v1/datasets/",
            {"name": "local-models", "kind": "local", "local_path": "/data/models"},
            format="json",
        )
    assert created.status_code == 201
    assert created.json()["phase"] == "Pending"
    assert len(callbacks) == 1


def test_unauthenticated_and_bad_tokens_are_401(db, user):
    client = APIClient()
    assert client.get("/api/v1/services/").status_code in {401, 403}
    client.credentials(HTTP_AUTHORIZATION="Bearer ick_000000000000_nope")
    assert client.get("/api/v1/services/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer garbage")
    assert client.get("/api/v1/services/").status_code == 401


def test_schema_and_docs_are_served(api, client, user):
    schema = api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/services/{id}/manifests/" in paths
    assert "/api/v1/services/{id}/events/" in paths
    client.force_login(user)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
    assert b"cdn" not in docs.content.lower()  # vendored, no CDN at run time


def test_openapi_schema_is_valid_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "BearerToken" in (tmp_path / "schema.yaml").read_text()

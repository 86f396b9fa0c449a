"""A service's auth policy at the gateway: key header, extra required parameters (stored
encrypted, never shown back), allowed networks, and `none` for admins only. Each bad value is
refused on its field through the form and the API, and nothing is created or changed."""

import pytest
from django.db import connection

from console.models import AuditEvent
from services.actions import NO_AUTH_FOR_STAFF_ONLY, service_create
from services.auth_policy import stored_params
from services.models import InferenceService

pytestmark = pytest.mark.django_db
SECRET = "tenant-s3cret-value-42"

# (case id, API field, API value, form text, error text)
BAD_POLICIES = [
    ("header-with-space", "auth_header", "X Api Key", "X Api Key", "not a valid header name"),
    ("header-with-colon", "auth_header", "X-Key:", "X-Key:", "not a valid header name"),
    ("header-reserved", "auth_header", "Host", "Host", "set by HTTP or the gateway"),
    ("header-too-long", "auth_header", "X" * 65, "X" * 65, ""),
    ("cidr-garbage", "allowed_cidrs", ["not-a-network"], "not-a-network", "not an IPv4 or IPv6 network"),
    ("cidr-host-bits", "allowed_cidrs", ["10.0.0.1/8"], "10.0.0.1/8", "did you mean 10.0.0.0/8"),
    ("cidr-bad-prefix", "allowed_cidrs", ["10.0.0.0/33"], "10.0.0.0/33", "not an IPv4 or IPv6 network"),
    (
        "param-bad-place",
        "auth_params",
        [{"in": "cookie", "name": "t", "value": "v"}],
        "cookie t=v",
        "header or query",
    ),
    (
        "param-bad-header-name",
        "auth_params",
        [{"in": "header", "name": "X Tenant", "value": "v"}],
        "header X Tenant=v",
        "not a valid header name",
    ),
    (
        "param-bad-query-name",
        "auth_params",
        [{"in": "query", "name": "a&b", "value": "v"}],
        "query a&b=v",
        "not a valid query parameter name",
    ),
    (
        "param-without-value",
        "auth_params",
        [{"in": "header", "name": "X-Tenant"}],
        "header X-Tenant",
        "Give a value for the header X-Tenant",
    ),
    (
        "param-twice",
        "auth_params",
        [{"in": "header", "name": "X-T", "value": "a"}, {"in": "header", "name": "x-t", "value": "b"}],
        "header X-T=a\nheader x-t=b",
        "given twice",
    ),
    (
        "param-is-the-key-header",
        "auth_params",
        [{"in": "header", "name": "authorization", "value": "v"}],
        "header authorization=v",
        "already carries the key",
    ),
]


@pytest.mark.parametrize(
    ("case", "field", "value", "form_text", "text"), BAD_POLICIES, ids=[c[0] for c in BAD_POLICIES]
)
def test_bad_policy_is_refused_on_its_field_by_form_and_api(
    api, client, user, queue, dataset, service_payload, case, field, value, form_text, text
):
    response = api.post("/api/v1/services/", {**service_payload, field: value}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert text in " ".join(response.json()[field]), response.json()

    client.force_login(user)
    data = {**service_payload, "queue": queue.id, "dataset": dataset.id, "env": "", field: form_text}
    response = client.post("/services/new/", data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors, errors
    assert text in " ".join(errors[field])
    assert f'data-field="{field}"' in response.content.decode()
    assert not InferenceService.objects.exists()


def test_no_auth_is_refused_for_users_on_the_field(api, client, user, queue, dataset, service_payload):
    response = api.post("/api/v1/services/", {**service_payload, "auth_policy": "none"}, format="json")
    assert response.status_code == 400
    assert response.json()["auth_policy"] == [NO_AUTH_FOR_STAFF_ONLY]
    client.force_login(user)
    data = {**service_payload, "queue": queue.id, "dataset": dataset.id, "env": "", "auth_policy": "none"}
    response = client.post("/services/new/", data)
    assert response.context["form"].errors["auth_policy"] == [NO_AUTH_FOR_STAFF_ONLY]
    assert not InferenceService.objects.exists()
    # A user's form shows no warning about it; nothing to warn about when it cannot be chosen.
    assert b"no-auth-warning" not in client.get("/services/new/").content


def test_admins_may_turn_key_checks_off_and_see_the_warning(admin_api, client, admin_user, service_payload):
    response = admin_api.post("/api/v1/services/", {**service_payload, "auth_policy": "none"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["auth_policy"] == "none"
    client.force_login(admin_user)
    page = client.get("/services/new/").content.decode()
    assert 'data-testid="no-auth-warning"' in page and "callable through the gateway by anyone" in page


def test_a_user_cannot_switch_an_existing_service_to_no_auth(api, service_payload):
    created = api.post("/api/v1/services/", service_payload, format="json").json()
    response = api.patch(f"/api/v1/services/{created['id']}/", {"auth_policy": "none"}, format="json")
    assert response.status_code == 400 and response.json()["auth_policy"] == [NO_AUTH_FOR_STAFF_ONLY]
    assert InferenceService.objects.get().auth_policy == "api_key"


def _database_dump() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM services_inferenceservice")
        services = repr(cursor.fetchall())
        cursor.execute("SELECT * FROM console_auditevent")
        return services + repr(cursor.fetchall())


def test_policy_values_are_stored_encrypted_and_never_shown_back(api, client, user, service_payload, caplog):
    payload = {
        **service_payload,
        "auth_header": "X-Api-Key",
        "auth_params": [
            {"in": "header", "name": "X-Tenant", "value": SECRET},
            {"in": "query", "name": "team", "value": "search"},
        ],
        "allowed_cidrs": ["10.0.0.0/8", "2001:DB8::/32"],
    }
    response = api.post("/api/v1/services/", payload, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["auth_header"] == "X-Api-Key"
    assert body["allowed_cidrs"] == ["10.0.0.0/8", "2001:db8::/32"]  # canonical spelling
    assert body["auth_params"] == [
        {"in": "header", "name": "X-Tenant", "value_set": True},
        {"in": "query", "name": "team", "value_set": True},
    ]
    assert body["access"]["key_header"] == "X-Api-Key: $INFERENCE_KEY"
    assert body["access"]["params"] == [{"in": "header", "name": "X-Tenant"}, {"in": "query", "name": "team"}]
    service = InferenceService.objects.get()
    assert stored_params(service.auth_params_encrypted)[0] == {
        "in": "header",
        "name": "X-Tenant",
        "value": SECRET,
    }
    assert SECRET not in response.content.decode()
    assert SECRET not in api.get(f"/api/v1/services/{body['id']}/").content.decode()
    assert SECRET not in _database_dump()
    assert SECRET not in caplog.text
    create = AuditEvent.objects.get(object_type="service", action="create")
    assert create.changes["auth_params"] == [None, ["header X-Tenant", "query team"]]
    assert create.via == "api" and create.actor_name == "alice"

    # The edit page shows names, never values; saving it unchanged keeps the values.
    client.force_login(user)
    page = client.get(f"/services/{service.id}/policy/").content.decode()
    assert "header X-Tenant" in page and "query team" in page and SECRET not in page
    assert "header X-Tenant (value set)" in page
    response = client.post(
        f"/services/{service.id}/policy/",
        {
            "auth_policy": "api_key",
            "auth_header": "X-Api-Key",
            "auth_params": "header X-Tenant\nquery team",
            "allowed_cidrs": "10.0.0.0/8\n2001:db8::/32",
        },
    )
    assert response.status_code == 302
    service.refresh_from_db()
    assert [p["value"] for p in stored_params(service.auth_params_encrypted)] == [SECRET, "search"]
    assert not AuditEvent.objects.filter(object_type="service", action="update").exists()  # nothing changed


def test_policy_changes_through_the_api_are_audited_and_keep_unsent_values(api, service_payload):
    payload = {**service_payload, "auth_params": [{"in": "header", "name": "X-Tenant", "value": SECRET}]}
    service_id = api.post("/api/v1/services/", payload, format="json").json()["id"]
    url = f"/api/v1/services/{service_id}/"
    response = api.patch(
        url,
        {
            "auth_header": "X-Key",
            "allowed_cidrs": ["192.168.0.0/16"],
            # Re-sent without its value: kept. A new one: added.
            "auth_params": [{"in": "header", "name": "X-Tenant"}, {"in": "query", "name": "v", "value": "2"}],
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["auth_header"] == "X-Key"
    assert response.json()["allowed_cidrs"] == ["192.168.0.0/16"]
    stored = stored_params(InferenceService.objects.get().auth_params_encrypted)
    assert stored == [
        {"in": "header", "name": "X-Tenant", "value": SECRET},
        {"in": "query", "name": "v", "value": "2"},
    ]
    update = AuditEvent.objects.get(object_type="service", action="update")
    assert update.changes["auth_header"] == ["Authorization", "X-Key"]
    assert update.changes["allowed_cidrs"] == [[], ["192.168.0.0/16"]]
    assert update.changes["auth_params"] == [["header X-Tenant"], ["header X-Tenant", "query v"]]
    assert SECRET not in repr(update.changes)

    # A bad value on PATCH changes nothing.
    response = api.patch(url, {"allowed_cidrs": ["10.0.0.1/8"], "auth_header": "Good-Name"}, format="json")
    assert response.status_code == 400 and "allowed_cidrs" in response.json()
    service = InferenceService.objects.get()
    assert service.auth_header == "X-Key" and service.allowed_cidrs == ["192.168.0.0/16"]
    response = api.patch(url, {"auth_params": "header X=1"}, format="json")
    assert response.status_code == 400 and "auth_params" in response.json()


def test_the_policy_form_refuses_bad_values_on_their_fields(client, user, queue, dataset):
    service = service_create(owner=user, name="chat", queue=queue, dataset=dataset, model_path="m")
    client.force_login(user)
    response = client.post(
        f"/services/{service.id}/policy/",
        {"auth_policy": "none", "auth_header": "Bad Header", "auth_params": "", "allowed_cidrs": "nope"},
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert set(errors) >= {"auth_policy", "auth_header", "allowed_cidrs"}, errors
    service.refresh_from_db()
    assert service.auth_policy == "api_key" and service.auth_header == "Authorization"


def test_service_delete_is_audited(api, service_payload):
    service_id = api.post("/api/v1/services/", service_payload, format="json").json()["id"]
    assert api.delete(f"/api/v1/services/{service_id}/").status_code == 202
    event = AuditEvent.objects.get(object_type="service", action="delete")
    assert event.object_id == str(service_id) and event.changes["phase"][1] == "Deleting"

"""Inference keys through the REST API: lifecycle, shown once, only a keyed hash at rest, scope,
tenancy, rotation grace, revocation, auto-disable, and the audit rows each change writes."""

import logging
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from auth.key_actions import inference_keys_disable_unused
from auth.models import InferenceKey
from auth.tokens import inference_key_digest
from console.models import AuditEvent
from services.actions import service_create
from tests.conftest import bearer_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", "bob@example.com", "bob-password-1")


@pytest.fixture
def chat(user, queue, dataset):
    return service_create(owner=user, name="chat", queue=queue, dataset=dataset, model_path="m")


@pytest.fixture
def embed(user, queue, dataset):
    return service_create(owner=user, name="embed", queue=queue, dataset=dataset, model_path="m")


@pytest.fixture
def bobs_service(bob, queue, dataset):
    return service_create(owner=bob, name="bob-chat", queue=queue, dataset=dataset, model_path="m")


def create_key(api, **fields):
    response = api.post("/api/v1/keys/", fields, format="json")
    assert response.status_code == 201, response.content
    assert "no-store" in response["Cache-Control"]  # the only response with the plaintext
    return response.json()


def database_dump() -> str:
    """Every row of every table the key could have landed in, as text."""
    dump = []
    with connection.cursor() as cursor:
        for table in ("access_inferencekey", "access_inferencekey_services", "console_auditevent"):
            cursor.execute(f"SELECT * FROM {table}")
            dump.append(repr(cursor.fetchall()))
    return "\n".join(dump)


def test_create_shows_the_key_once_and_stores_only_a_keyed_hash(api, chat, caplog):
    caplog.set_level(logging.DEBUG)
    body = create_key(api, name="frontend", services=[chat.id], rpm_limit=60)
    plaintext = body["key"]
    assert plaintext.startswith(f"iek_{body['prefix']}_")
    assert body["scope"] == [{"id": chat.id, "name": "chat"}]
    assert body["state"] == "active" and body["rpm_limit"] == 60 and body["user"] == "alice"

    key = InferenceKey.objects.get()
    assert key.digest == inference_key_digest(plaintext)
    secret = plaintext.rsplit("_", 1)[1]
    dump = database_dump()
    assert plaintext not in dump and secret not in dump
    assert plaintext not in caplog.text and secret not in caplog.text

    # Never again: not in the list, not in the detail.
    listed = api.get("/api/v1/keys/").json()
    assert listed["count"] == 1 and "key" not in listed["results"][0]
    detail = api.get(f"/api/v1/keys/{body['id']}/")
    assert secret not in detail.content.decode() and "key" not in detail.json()

    event = AuditEvent.objects.get(object_type="inference_key", action="create")
    assert event.actor_name == "alice" and event.via == "api"
    assert event.changes["services"] == [None, ["chat"]]
    assert event.changes["prefix"] == [None, key.prefix]
    assert "digest" not in event.changes


def test_an_inference_key_is_refused_by_the_management_api(api, chat):
    plaintext = create_key(api, name="frontend", services=[chat.id])["key"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    response = client.get("/api/v1/services/")
    assert response.status_code == 401
    assert "inference key" in response.json()["detail"]


def test_scope_is_limited_to_services_the_creator_can_see(api, chat, bobs_service):
    response = api.post("/api/v1/keys/", {"name": "x", "services": [bobs_service.id]}, format="json")
    assert response.status_code == 400
    assert "services" in response.json()
    response = api.post("/api/v1/keys/", {"name": "x", "services": []}, format="json")
    assert response.status_code == 400 and "services" in response.json()
    assert not InferenceKey.objects.exists()
    # Re-scoping an existing key follows the same rule.
    body = create_key(api, name="x", services=[chat.id])
    response = api.patch(f"/api/v1/keys/{body['id']}/", {"services": [bobs_service.id]}, format="json")
    assert response.status_code == 400 and "services" in response.json()
    assert list(InferenceKey.objects.get().services.all()) == [chat]


def test_only_admins_create_keys_for_others_and_may_scope_to_any_service(
    api, admin_api, user, bob, chat, bobs_service
):
    response = api.post("/api/v1/keys/", {"name": "x", "services": [chat.id], "user": "bob"}, format="json")
    assert response.status_code == 400 and "user" in response.json()
    body = create_key(admin_api, name="for-alice", services=[chat.id, bobs_service.id], user="alice")
    assert body["user"] == "alice" and body["created_by"] == "root"
    assert {s["name"] for s in body["scope"]} == {"chat", "bob-chat"}
    # Alice sees the key an admin made for her.
    assert api.get(f"/api/v1/keys/{body['id']}/").status_code == 200


def test_another_users_key_is_not_found(api, bob, bobs_service):
    bob_api = bearer_client(bob)
    body = create_key(bob_api, name="bob's", services=[bobs_service.id])
    url = f"/api/v1/keys/{body['id']}/"
    assert api.get("/api/v1/keys/").json()["count"] == 0
    assert api.get(url).status_code == 404
    assert api.patch(url, {"name": "mine"}, format="json").status_code == 404
    assert api.post(f"{url}rotate/", {}, format="json").status_code == 404
    assert api.post(f"{url}revoke/").status_code == 404
    assert InferenceKey.objects.get().revoked_at is None
    # Staff see every key and may filter by user; users may not.
    assert api.get("/api/v1/keys/?user=bob").status_code == 400
    staff = bearer_client(get_user_model().objects.create_superuser("root", "r@example.com", "pw-root-123"))
    assert [k["name"] for k in staff.get("/api/v1/keys/?user=bob").json()["results"]] == ["bob's"]
    assert staff.get("/api/v1/keys/?user=alice").json()["count"] == 0


def test_bad_input_is_a_400_on_the_field(api, chat):
    cases = [
        ({"name": "", "services": [chat.id]}, "name"),
        ({"name": "x", "services": [chat.id], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x", "services": [chat.id], "expires_at": "next tuesday"}, "expires_at"),
        ({"name": "x", "services": [chat.id], "rpm_limit": 0}, "rpm_limit"),
        ({"name": "x", "services": [chat.id], "tpm_limit": -5}, "tpm_limit"),
        ({"name": "x", "services": [chat.id], "daily_token_budget": "lots"}, "daily_token_budget"),
        ({"name": "x", "services": [chat.id], "monthly_token_budget": 0}, "monthly_token_budget"),
        ({"name": "x", "services": [chat.id], "rpm_limit": 10**12}, "rpm_limit"),
        ({"name": "x" * 101, "services": [chat.id]}, "name"),
        ({"name": "x", "services": [999999]}, "services"),
        ({"name": "x", "services": "chat"}, "services"),
    ]
    for payload, field in cases:
        response = api.post("/api/v1/keys/", payload, format="json")
        assert response.status_code == 400, (payload, response.content)
        assert field in response.json(), (payload, response.json())
    assert not InferenceKey.objects.exists()
    assert api.get("/api/v1/keys/?state=sleepy").status_code == 400


def test_update_changes_name_scope_expiry_and_limits_with_an_audit_row(api, chat, embed):
    body = create_key(api, name="frontend", services=[chat.id])
    expiry = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    response = api.patch(
        f"/api/v1/keys/{body['id']}/",
        {"name": "web", "services": [chat.id, embed.id], "expires_at": expiry.isoformat(), "tpm_limit": 1000},
        format="json",
    )
    assert response.status_code == 200, response.content
    updated = response.json()
    assert updated["name"] == "web" and updated["tpm_limit"] == 1000
    assert parse_datetime(updated["expires_at"]) == expiry
    assert [s["name"] for s in updated["scope"]] == ["chat", "embed"]
    event = AuditEvent.objects.get(action="update")
    assert event.changes["name"] == ["frontend", "web"]
    assert event.changes["services"] == [["chat"], ["chat", "embed"]]
    assert event.changes["tpm_limit"] == [None, 1000]
    # A past expiry is refused on update too; nothing changes.
    response = api.patch(f"/api/v1/keys/{body['id']}/", {"expires_at": "2001-01-01T00:00:00Z"}, format="json")
    assert response.status_code == 400 and "expires_at" in response.json()
    assert InferenceKey.objects.get().expires_at == expiry
    # The owner may not be changed through PATCH (read-only there).
    api.patch(f"/api/v1/keys/{body['id']}/", {"user": "root"}, format="json")
    assert InferenceKey.objects.get().user.username == "alice"


def test_rotation_keeps_the_old_key_for_the_grace_period(api, chat):
    expiry = timezone.now() + timedelta(days=10)
    body = create_key(api, name="frontend", services=[chat.id], rpm_limit=5, expires_at=expiry.isoformat())
    before = timezone.now()
    response = api.post(f"/api/v1/keys/{body['id']}/rotate/", {"grace_hours": 2}, format="json")
    assert response.status_code == 201, response.content
    new = response.json()
    assert new["key"].startswith(f"iek_{new['prefix']}_") and new["prefix"] != body["prefix"]
    assert new["scope"] == body["scope"] and new["rpm_limit"] == 5
    assert new["state"] == "active"

    old = InferenceKey.objects.get(id=body["id"])
    assert old.replaced_by_id == new["id"]
    assert before + timedelta(hours=2) <= old.expires_at <= timezone.now() + timedelta(hours=2)
    assert old.state == "rotated"
    assert api.get(f"/api/v1/keys/{body['id']}/").json()["replaced_by"] == new["prefix"]
    assert new["key"] not in database_dump()

    rotate = AuditEvent.objects.get(action="rotate")
    assert rotate.object_id == str(old.id) and rotate.changes["replaced_by"] == [None, new["prefix"]]
    assert rotate.changes["grace_hours"] == [None, 2]
    # A rotated key cannot be rotated again (its successor can), nor have its grace moved.
    assert (
        api.post(f"/api/v1/keys/{body['id']}/rotate/", {"grace_hours": 1}, format="json").status_code == 400
    )
    for expires_at in (None, (timezone.now() + timedelta(days=30)).isoformat()):
        refused = api.patch(f"/api/v1/keys/{body['id']}/", {"expires_at": expires_at}, format="json")
        assert refused.status_code == 400 and "grace period" in refused.json()["expires_at"][0]
    assert InferenceKey.objects.get(id=body["id"]).expires_at == old.expires_at


def test_rotation_grace_never_extends_an_expiry_and_zero_stops_at_once(api, chat):
    soon = timezone.now() + timedelta(minutes=30)
    body = create_key(api, name="a", services=[chat.id], expires_at=soon.isoformat())
    assert (
        api.post(f"/api/v1/keys/{body['id']}/rotate/", {"grace_hours": 24}, format="json").status_code == 201
    )
    assert abs(InferenceKey.objects.get(id=body["id"]).expires_at - soon) < timedelta(seconds=1)

    other = create_key(api, name="b", services=[chat.id])
    assert (
        api.post(f"/api/v1/keys/{other['id']}/rotate/", {"grace_hours": 0}, format="json").status_code == 201
    )
    assert InferenceKey.objects.get(id=other["id"]).expires_at <= timezone.now()
    assert api.get("/api/v1/keys/?state=expired").json()["results"][0]["id"] == other["id"]

    third = create_key(api, name="c", services=[chat.id])
    for bad in (-1, 10**6, "soon"):
        response = api.post(f"/api/v1/keys/{third['id']}/rotate/", {"grace_hours": bad}, format="json")
        assert response.status_code == 400 and "grace_hours" in response.json(), bad
    assert InferenceKey.objects.get(id=third["id"]).replaced_by is None


def test_rotation_uses_the_default_grace_from_settings(api, chat, settings):
    settings.INFERENCE_KEY_ROTATION_GRACE_HOURS = 5
    body = create_key(api, name="a", services=[chat.id])
    api.post(f"/api/v1/keys/{body['id']}/rotate/", {}, format="json")
    remaining = InferenceKey.objects.get(id=body["id"]).expires_at - timezone.now()
    assert timedelta(hours=4, minutes=59) < remaining <= timedelta(hours=5)


def test_revoke_is_idempotent_and_audited_once(api, chat):
    body = create_key(api, name="frontend", services=[chat.id])
    first = api.post(f"/api/v1/keys/{body['id']}/revoke/")
    assert first.status_code == 200 and first.json()["state"] == "revoked"
    revoked_at = InferenceKey.objects.get().revoked_at
    second = api.post(f"/api/v1/keys/{body['id']}/revoke/")
    assert second.status_code == 200 and second.json()["state"] == "revoked"
    assert InferenceKey.objects.get().revoked_at == revoked_at
    assert AuditEvent.objects.filter(action="revoke").count() == 1
    # A revoked key cannot be changed or rotated.
    assert api.patch(f"/api/v1/keys/{body['id']}/", {"name": "again"}, format="json").status_code == 400
    assert api.post(f"/api/v1/keys/{body['id']}/rotate/", {}, format="json").status_code == 400
    assert [k["id"] for k in api.get("/api/v1/keys/?state=revoked").json()["results"]] == [body["id"]]
    assert api.get("/api/v1/keys/?state=active").json()["count"] == 0


def test_list_filters_by_service(api, chat, embed):
    a = create_key(api, name="a", services=[chat.id])
    b = create_key(api, name="b", services=[embed.id, chat.id])
    assert {k["id"] for k in api.get(f"/api/v1/keys/?service={embed.id}").json()["results"]} == {b["id"]}
    assert {k["id"] for k in api.get("/api/v1/keys/?service=chat").json()["results"]} == {a["id"], b["id"]}
    assert api.get("/api/v1/keys/?service=99999999999999999999999").json()["count"] == 0


def test_unused_keys_are_disabled_after_the_setting(user, chat, settings):
    from auth.key_actions import inference_key_create
    from console.audit import SYSTEM

    settings.INFERENCE_KEY_DISABLE_AFTER_DAYS = 90
    now = timezone.now()

    def make(name, *, created_days_ago, used_days_ago=None):
        key, _ = inference_key_create(owner=user, created_by=user, name=name, services=[chat], context=SYSTEM)
        InferenceKey.objects.filter(id=key.id).update(
            created_at=now - timedelta(days=created_days_ago),
            last_used_at=now - timedelta(days=used_days_ago) if used_days_ago is not None else None,
        )
        return key

    never_used_old = make("never-used-old", created_days_ago=91)
    never_used_new = make("never-used-new", created_days_ago=10)
    used_long_ago = make("used-long-ago", created_days_ago=400, used_days_ago=100)
    used_lately = make("used-lately", created_days_ago=400, used_days_ago=3)

    assert inference_keys_disable_unused(now=now) == 2
    disabled = set(InferenceKey.objects.filter(disabled_at__isnull=False).values_list("name", flat=True))
    assert disabled == {never_used_old.name, used_long_ago.name}
    assert InferenceKey.objects.get(id=never_used_new.id).state == "active"
    assert InferenceKey.objects.get(id=used_lately.id).state == "active"
    assert InferenceKey.objects.get(id=used_long_ago.id).state == "disabled"
    events = AuditEvent.objects.filter(action="disable")
    assert events.count() == 2 and {e.actor_name for e in events} == {"system"}
    assert inference_keys_disable_unused(now=now) == 0  # already disabled: nothing again


def test_the_disable_task_is_scheduled(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "auth.tasks.disable_unused_inference_keys" in tasks
    from console.celery import app

    app.loader.import_default_modules()
    assert "auth.tasks.disable_unused_inference_keys" in app.tasks


def test_management_tokens_are_audited_without_the_secret(client, user):
    client.force_login(user)
    plaintext = client.post("/tokens/", {"name": "ci"}).context["created_token"]
    token_id = AuditEvent.objects.get(object_type="api_token", action="create").object_id
    client.post(f"/tokens/{token_id}/revoke/")
    client.post(f"/tokens/{token_id}/revoke/")
    events = AuditEvent.objects.filter(object_type="api_token").order_by("at")
    assert [e.action for e in events] == ["create", "revoke"]
    assert all(e.actor_name == "alice" and e.via == "web" for e in events)
    assert plaintext not in repr(list(events.values()))


def test_schema_still_builds_with_the_keys_api(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(out), "--validate", "--fail-on-warn")
    assert "/api/v1/keys/{id}/rotate/" in out.read_text()


def test_key_pages_create_show_once_and_refuse_bad_input_on_fields(client, user, chat, bob, bobs_service):
    client.force_login(user)
    page = client.get("/keys/new/").content.decode()
    assert "chat" in page and "bob-chat" not in page  # only services the user can see

    response = client.post(
        "/keys/new/",
        {"name": "", "services": [bobs_service.id], "rpm_limit": "0", "expires_at": "2001-01-01T00:00"},
    )
    errors = response.context["form"].errors
    assert {"name", "services", "rpm_limit", "expires_at"} <= set(errors), errors
    assert 'data-field="expires_at"' in response.content.decode()
    assert not InferenceKey.objects.exists()

    response = client.post("/keys/new/", {"name": "web", "services": [chat.id], "tpm_limit": "500"})
    assert response.status_code == 200
    plaintext = response.context["plaintext"]
    key = InferenceKey.objects.get()
    assert plaintext.startswith(f"iek_{key.prefix}_") and plaintext in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert key.tpm_limit == 500 and key.user == user and list(key.services.all()) == [chat]
    detail = client.get(f"/keys/{key.id}/").content.decode()
    assert plaintext not in detail and key.prefix in detail
    assert "create" in detail  # its audit row
    listing = client.get("/keys/?state=active").content.decode()
    assert key.prefix in listing and plaintext not in listing
    assert key.prefix not in client.get("/keys/?state=revoked").content.decode()

    # Rotate then revoke from the page.
    response = client.post(f"/keys/{key.id}/rotate/", {"grace_hours": "1"})
    new = InferenceKey.objects.exclude(id=key.id).get()
    assert response.context["plaintext"].startswith(f"iek_{new.prefix}_")
    client.post(f"/keys/{new.id}/revoke/")
    new.refresh_from_db()
    assert new.state == "revoked"
    assert AuditEvent.objects.get(action="revoke").via == "web"


def test_key_pages_of_another_user_are_not_found(client, user, bob, bobs_service):
    from auth.key_actions import inference_key_create
    from console.audit import SYSTEM

    key, _ = inference_key_create(
        owner=bob, created_by=bob, name="b", services=[bobs_service], context=SYSTEM
    )
    client.force_login(user)
    assert client.get(f"/keys/{key.id}/").status_code == 404
    assert client.post(f"/keys/{key.id}/revoke/").status_code == 404
    assert client.post(f"/keys/{key.id}/rotate/", {"grace_hours": "0"}).status_code == 404
    assert key.prefix not in client.get("/keys/?user=bob").content.decode()
    key.refresh_from_db()
    assert key.state == "active"


def test_admins_revoke_keys_from_the_django_admin_with_an_audit_row(client, admin_user, user, chat):
    from auth.key_actions import inference_key_create
    from console.audit import SYSTEM

    key, _ = inference_key_create(owner=user, created_by=user, name="k", services=[chat], context=SYSTEM)
    client.force_login(admin_user)
    assert client.get(f"/admin/access/inferencekey/{key.id}/change/").status_code == 200  # view only
    response = client.post(
        "/admin/access/inferencekey/", {"action": "revoke_keys", "_selected_action": [key.id]}, follow=True
    )
    assert b"Revoked 1 key(s)." in response.content
    key.refresh_from_db()
    assert key.state == "revoked"
    event = AuditEvent.objects.get(action="revoke")
    assert event.via == "admin" and event.actor_name == "root"


def test_key_pages_show_recent_usage_per_service(client, user, chat, embed):
    from auth.key_actions import inference_key_create
    from auth.models import UsageHour
    from console.audit import SYSTEM

    key, _ = inference_key_create(
        owner=user, created_by=user, name="k", services=[chat, embed], context=SYSTEM
    )
    idle, _ = inference_key_create(owner=user, created_by=user, name="idle", services=[chat], context=SYSTEM)
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    rows = [
        (hour, chat, 5, 1, 0, 70, 50),
        (hour - timedelta(hours=3), chat, 2, 0, 1, 10, 4),
        (hour, embed, 1, 0, 0, 8, 0),
        (hour - timedelta(days=31), chat, 1000, 0, 0, 1, 1),  # older than the pages look
    ]
    for at, service, requests, e4, e5, prompt, completion in rows:
        UsageHour.objects.create(
            hour=at, key=key, service=service, requests=requests, errors_4xx=e4, errors_5xx=e5,
            prompt_tokens=prompt, completion_tokens=completion,
        )  # fmt: skip
    client.force_login(user)

    # Filtered by service (a join and DISTINCT) or not, the sums are the key's own.
    for query in ("", "?service=chat"):
        page = client.get(f"/keys/{query}").content.decode()
        row = page.split(f'data-testid="key-{key.prefix}"')[1].split("</tr>")[0]
        assert '<td data-testid="requests">8</td>' in row and '<td data-testid="tokens">142</td>' in row
    idle_row = page.split(f'data-testid="key-{idle.prefix}"')[1].split("</tr>")[0]
    assert '<td data-testid="requests">0</td>' in idle_row

    detail = client.get(f"/keys/{key.id}/").content.decode()
    table = detail.split('data-testid="key-usage"')[1].split("</table>")[0]
    assert table.index("<td>chat</td>") < table.index("<td>embed</td>")  # busiest first
    assert "<td>chat</td><td>7</td><td>1</td><td>1</td><td>80</td><td>54</td>" in table
    assert "<td>embed</td><td>1</td><td>0</td><td>0</td><td>8</td><td>0</td>" in table

"""Users in Django's admin: activating and deactivating goes through auth.user_actions."""

from __future__ import annotations

import json
import time

import redis
from django.conf import settings
from django.contrib.auth import get_user_model

from console.models import AuditEvent
from gateway import conf


def change_form_data(client, user) -> dict[str, object]:
    """What the admin's change form would post back unchanged, read from the form itself."""
    response = client.get(f"/admin/auth/user/{user.pk}/change/")
    assert response.status_code == 200
    form = response.context["adminform"].form
    data: dict[str, object] = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if name in ("groups", "user_permissions"):
            data[name] = [getattr(v, "pk", v) for v in (value or [])]
        elif name in ("last_login", "date_joined"):
            if value:
                data[f"{name}_0"], data[f"{name}_1"] = value.strftime("%Y-%m-%d"), value.strftime("%H:%M:%S")
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None and name != "password":
            data[name] = value
    return data


def test_unticking_active_on_the_change_form_deactivates_through_the_action(client, admin_user, user):
    client.force_login(admin_user)
    data = change_form_data(client, user)
    assert data["is_active"] == "on"
    del data["is_active"]
    data["first_name"] = "Alice"  # another field changed in the same save is kept too
    response = client.post(f"/admin/auth/user/{user.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    user.refresh_from_db()
    assert (user.is_active, user.first_name) == (False, "Alice")
    event = AuditEvent.objects.get(object_type="user", action="deactivate")
    assert (event.actor, event.object_id, event.via) == (admin_user, str(user.pk), "admin")
    assert event.changes == {"is_active": [True, False]}


def test_the_admin_actions_activate_and_deactivate_but_never_oneself(client, admin_user, user):
    client.force_login(admin_user)

    def act(action: str, *users) -> str:
        data = {"action": action, "_selected_action": [str(u.pk) for u in users], "index": "0"}
        return client.post("/admin/auth/user/", data, follow=True).content.decode()

    assert "You cannot deactivate yourself." in act("deactivate_users", user, admin_user)
    assert get_user_model().objects.filter(is_active=False).count() == 0  # nobody, not even alice
    assert "Deactivated 1 user(s)." in act("deactivate_users", user)
    assert "Deactivated 0 user(s)." in act("deactivate_users", user)  # already: no second row
    assert "Activated 1 user(s)." in act("activate_users", user)
    user.refresh_from_db()
    assert user.is_active
    actions = list(
        AuditEvent.objects.filter(object_type="user").order_by("id").values_list("action", flat=True)
    )
    assert actions == ["deactivate", "activate"]


def test_the_change_form_announces_the_users_keys_to_the_gateways(
    client, admin_user, user, make_service, make_key, redis_prefix, django_capture_on_commit_callbacks
):
    key, _plaintext = make_key([make_service("chat", None)])
    revoked, _ = make_key([make_service("other", None)], name="old")
    revoked.revoked_at = revoked.created_at
    revoked.save(update_fields=["revoked_at"])
    subscriber = redis.Redis.from_url(settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(conf.invalidation_channel())
    client.force_login(admin_user)
    data = change_form_data(client, user)
    del data["is_active"]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/auth/user/{user.pk}/change/", data)
    assert response.status_code == 302
    messages = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not messages:
        message = subscriber.get_message(timeout=0.5)
        if message is not None:
            messages.append(json.loads(message["data"]))
    subscriber.close()
    assert messages == [{"kind": "key", "prefix": key.prefix}]  # the live key only


def test_an_admin_cannot_untick_their_own_active_box(client, admin_user):
    client.force_login(admin_user)
    data = change_form_data(client, admin_user)
    assert "is_active" not in data or data["is_active"] == "on"
    data.pop("is_active", None)  # as if unticked: the field is read-only, so it is ignored
    response = client.post(f"/admin/auth/user/{admin_user.pk}/change/", data)
    assert response.status_code == 302
    admin_user.refresh_from_db()
    assert admin_user.is_active
    assert not AuditEvent.objects.filter(object_type="user").exists()

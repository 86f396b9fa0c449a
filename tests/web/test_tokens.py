"""Management-API tokens: shown once, only a keyed hash at rest, revocable."""

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from auth.models import ApiToken

pytestmark = pytest.mark.django_db


def test_token_page_shows_the_token_once_and_stores_only_a_hash(client, user):
    client.force_login(user)
    response = client.post("/tokens/", {"name": "ci"})
    plaintext = response.context["created_token"]
    assert plaintext.startswith("ick_")
    assert plaintext in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get()
    assert plaintext not in (token.prefix, token.digest)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM access_apitoken")
        assert plaintext not in repr(cursor.fetchall())
    assert plaintext not in client.get("/tokens/").content.decode()  # never shown again

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api.get("/api/v1/services/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None

    client.post(f"/tokens/{token.id}/revoke/")
    assert api.get("/api/v1/services/").status_code == 401


def test_create_api_token_command_prints_a_working_token(user, capsys):
    call_command("create_api_token", "alice", "--name", "cli")
    plaintext = capsys.readouterr().out.strip()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api.get("/api/v1/services/").status_code == 200


def test_create_api_token_for_unknown_user_fails(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No user named"):
        call_command("create_api_token", "nobody")


def test_a_token_of_another_user_cannot_be_revoked(client, user, admin_user):
    from auth.actions import api_token_create

    token, _ = api_token_create(user=admin_user, name="root's")
    client.force_login(user)
    assert client.post(f"/tokens/{token.id}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.is_active

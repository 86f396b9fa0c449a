"""Pages a person opens, the admin for every model, and start-up rules."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib import admin
from django.core.management import call_command

from services import phases
from services.actions import service_create
from services.models import InferenceService

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


@pytest.fixture
def service(user, queue, dataset):
    return service_create(
        owner=user, name="chat", queue=queue, dataset=dataset, model_path="THUDM/chatglm2-6b"
    )


def test_pages_render_for_a_user(client, user, service):
    client.force_login(user)
    for url in (
        "/services/",
        f"/services/{service.id}/",
        "/services/new/",
        "/queues/",
        "/datasets/",
        "/tokens/",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"Simulated cluster" in response.content, url
    manifests = client.get(f"/services/{service.id}/manifests/").content.decode()
    assert "kind: Deployment" in manifests
    assert "kueue.x-k8s.io/queue-name: gpu-a100" in manifests


def test_status_partial_polls_fast_while_moving_slowly_once_settled_and_not_once_deleted(
    client, user, service
):
    client.force_login(user)
    polling = client.get(f"/services/{service.id}/status/").content.decode()
    assert 'hx-trigger="every 2s"' in polling
    InferenceService.objects.filter(id=service.id).update(phase=phases.RUNNING)
    # Shown as Pending, now Running: the answer tells the page's other panels to reload.
    settled = client.get(f"/services/{service.id}/status/", {"shown": phases.PENDING})
    assert settled["HX-Trigger"] == "service-phase-changed"
    assert 'hx-trigger="every 15s"' in settled.content.decode()
    assert 'data-testid="phase">Running<' in settled.content.decode()
    assert "HX-Trigger" not in client.get(f"/services/{service.id}/status/", {"shown": phases.RUNNING})
    InferenceService.objects.filter(id=service.id).update(phase=phases.DELETED)
    assert "hx-trigger" not in client.get(f"/services/{service.id}/status/").content.decode()


def test_another_users_service_is_404(client, admin_user, service, django_user_model):
    bob = django_user_model.objects.create_user("bob", password="bob-password-1")
    client.force_login(bob)
    assert client.get(f"/services/{service.id}/").status_code == 404
    assert client.post(f"/services/{service.id}/delete/").status_code == 404
    assert b"chat" not in client.get("/services/").content
    client.force_login(admin_user)  # staff see everything
    assert client.get(f"/services/{service.id}/").status_code == 200


def test_scale_and_delete_from_the_page(client, user, service):
    client.force_login(user)
    client.post(f"/services/{service.id}/scale/", {"replicas": "2"})
    service.refresh_from_db()
    assert service.replicas == 2
    response = client.post(f"/services/{service.id}/scale/", {"replicas": "99"}, follow=True)
    assert b"Replicas must be a whole number from 0 to 32" in response.content
    client.post(f"/services/{service.id}/delete/")
    service.refresh_from_db()
    assert service.phase == phases.DELETING


def test_only_staff_create_queues(client, user):
    client.force_login(user)
    response = client.get("/queues/new/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_login_required(client):
    response = client.get("/services/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_admin_lists_every_model(client, admin_user, service):
    client.force_login(admin_user)
    for model in apps.get_models():
        if not admin.site.is_registered(model):
            continue
        meta = model._meta
        response = client.get(f"/admin/{meta.app_label}/{meta.model_name}/")
        assert response.status_code == 200, meta.label
    ours = {"queues", "datasets", "services", "access", "deploy"}
    registered = {m._meta.app_label for m in admin.site._registry}
    assert ours <= registered
    assert client.get(f"/admin/services/inferenceservice/{service.id}/change/").status_code == 200


def test_bootstrap_admin_creates_one_account_once(capsys, django_user_model):
    call_command("bootstrap_admin")
    out = capsys.readouterr().out
    assert "Log in as 'admin' with password" in out
    call_command("bootstrap_admin")
    assert capsys.readouterr().out == ""
    assert django_user_model.objects.filter(is_superuser=True).count() == 1


def _check(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True
    )


def test_production_refuses_unsafe_settings(tmp_path):
    result = _check({"CONSOLE_ENV": "production", "CONSOLE_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "Refusing to start in production" in result.stderr
    assert "SECRET_KEY" in result.stderr
    assert "ALLOWED_HOSTS" in result.stderr
    debug_on = _check(
        {
            "CONSOLE_ENV": "production",
            "CONSOLE_VAR_DIR": str(tmp_path),
            "SECRET_KEY": "x" * 50,
            "ALLOWED_HOSTS": "console.example",
            "DEBUG": "true",
        }
    )
    assert "DEBUG must be off" in debug_on.stderr
    safe = _check(
        {
            "CONSOLE_ENV": "production",
            "CONSOLE_VAR_DIR": str(tmp_path),
            "SECRET_KEY": "x" * 50,
            "ALLOWED_HOSTS": "console.example",
            "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1/test"),
        }
    )
    assert safe.returncode == 0, safe.stderr

"""The service page's access panel and playground, over HTTP with Django's test client.

The playground's call through a real gateway is in tests/gateway/test_playground.py and the
browser tier; here: what the panel shows, bad input next to its field, a service that is not
Running, an unreachable gateway, and that the pasted key goes nowhere.
"""

from __future__ import annotations

import logging
import re
import socket

import pytest
from django.db import connection

from services import phases
from services.actions import service_create
from services.auth_policy import encrypt_params
from services.models import InferenceService

pytestmark = pytest.mark.django_db

KEY = "ik_test_0123456789abcdefSECRET"
PARAM_VALUE = "stored-param-value-xyz"


@pytest.fixture
def service(user, queue, dataset, settings):
    settings.GATEWAY_PUBLIC_URL = "http://127.0.0.1:9"
    created = service_create(
        owner=user, name="chat", queue=queue, dataset=dataset, model_path="THUDM/chatglm2-6b"
    )
    InferenceService.objects.filter(pk=created.pk).update(
        auth_header="X-Api-Key",
        auth_params_encrypted=encrypt_params([{"in": "header", "name": "X-Team", "value": PARAM_VALUE}]),
    )
    created.refresh_from_db()
    return created


def page(client, user, service) -> str:
    client.force_login(user)
    response = client.get(f"/services/{service.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_access_panel_puts_the_gateway_first_with_the_policy_filled(client, user, service):
    html = page(client, user, service)
    panel = html[html.index('data-testid="access-panel"') : html.index('data-testid="playground"')]
    assert re.search(r'data-testid="gateway-url">http://127.0.0.1:9/chat<', panel)
    assert panel.index("gateway-url") < panel.index("internal-url")  # in-cluster URL second
    assert "X-Api-Key: $INFERENCE_KEY" in panel
    assert "<code>X-Team</code>" in panel and "$X_TEAM" in panel
    assert PARAM_VALUE not in html
    for title in ("curl: chat completion", "Python (requests)", "Python (OpenAI SDK", "Python (LangChain)"):
        assert title in panel
    assert "http://127.0.0.1:9/chat/v1" in panel


def test_playground_only_for_running_services(client, user, service):
    assert 'data-testid="playground-closed"' in page(client, user, service)  # Pending
    response = client.post(f"/services/{service.pk}/playground/", {"key": KEY, "prompt": "hi"})
    assert response.status_code == 200 and "the playground works on Running services only" in response.text

    InferenceService.objects.filter(pk=service.pk).update(phase=phases.RUNNING)
    html = page(client, user, service)
    assert f'hx-post="/services/{service.pk}/playground/"' in html
    assert 'name="key"' in html and 'name="prompt"' in html and 'name="param_0"' in html


def test_playground_errors_go_next_to_their_fields(client, user, service):
    InferenceService.objects.filter(pk=service.pk).update(phase=phases.RUNNING)
    client.force_login(user)
    response = client.post(f"/services/{service.pk}/playground/", {"key": "", "prompt": " "})
    html = response.text
    assert response.status_code == 200
    assert re.search(
        r'id="pg-errors-key" hx-swap-oob="true"><ul class="field-errors"[^>]*><li>Paste an inference key',
        html,
    )
    assert re.search(
        r'id="pg-errors-prompt" hx-swap-oob="true"><ul class="field-errors"[^>]*><li>Type a prompt', html
    )
    assert re.search(r'id="pg-errors-param_0" hx-swap-oob="true"><ul class="field-errors"', html)

    # A pasted key or header value with a character HTTP headers cannot carry (a dash turned
    # typographic, a zero-width space) is a field error, not a 500.
    response = client.post(
        f"/services/{service.pk}/playground/", {"key": KEY + "\u200b", "prompt": "hi", "param_0": "a–b"}
    )
    assert response.status_code == 200
    assert re.search(
        r'id="pg-errors-key" hx-swap-oob="true"><ul class="field-errors"[^>]*><li>That is not a key',
        response.text,
    )
    assert re.search(
        r'id="pg-errors-param_0" hx-swap-oob="true"><ul class="field-errors"[^>]*><li>Printable ASCII',
        response.text,
    )


def test_triton_playground_checks_the_json_body(client, admin_user, queue, dataset, settings):
    user = admin_user  # only admins may turn key checks off
    triton = service_create(
        owner=user, name="vision", queue=queue, dataset=dataset, model_path="repo", runtime="triton",
        auth_policy="none",
    )  # fmt: skip
    InferenceService.objects.filter(pk=triton.pk).update(phase=phases.RUNNING)
    settings.GATEWAY_PUBLIC_GRPC = "gw.example:8002"
    html = page(client, user, triton)
    assert 'name="body"' in html and "INPUT0" in html and 'name="prompt"' not in html
    # gRPC through the gateway's own port, with the metadata that names the service.
    assert re.search(r'data-testid="grpc-gateway">gw.example:8002<', html)
    assert "x-inference-service: vision" in html and "tritonclient.grpc" in html
    response = client.post(f"/services/{triton.pk}/playground/", {"body": "{not json"})
    assert re.search(
        r'id="pg-errors-body" hx-swap-oob="true"><ul class="field-errors"[^>]*><li>Not valid JSON',
        response.text,
    )
    response = client.post(f"/services/{triton.pk}/playground/", {"body": "[1, 2]"})
    assert "an &quot;inputs&quot; list" in response.text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_unreachable_gateway_is_a_clear_error_and_the_key_goes_nowhere(
    client, user, service, settings, caplog
):
    settings.GATEWAY_PUBLIC_URL = f"http://127.0.0.1:{closed_port()}"
    InferenceService.objects.filter(pk=service.pk).update(phase=phases.RUNNING)
    client.force_login(user)
    caplog.set_level(logging.DEBUG)
    response = client.post(
        f"/services/{service.pk}/playground/", {"key": KEY, "prompt": "hello", "param_0": "team-a"}
    )
    assert response.status_code == 200
    assert 'data-testid="playground-error"' in response.text
    assert f"The gateway at {settings.GATEWAY_PUBLIC_URL} did not answer" in response.text
    assert KEY not in response.text and KEY not in caplog.text
    assert KEY not in str(dict(client.session))
    with connection.cursor() as cursor:  # nowhere in the database either
        for table in connection.introspection.table_names():
            cursor.execute(
                f'SELECT COUNT(*) FROM "{table}" WHERE CAST("{table}" AS text) LIKE %s', [f"%{KEY}%"]
            )
            assert cursor.fetchone()[0] == 0, table


def test_another_users_service_has_no_playground(client, service, django_user_model):
    other = django_user_model.objects.create_user("mallory", "m@example.com", "mallory-password-1")
    client.force_login(other)
    assert client.post(f"/services/{service.pk}/playground/", {"key": KEY, "prompt": "x"}).status_code == 404
    assert client.get(f"/services/{service.pk}/playground/").status_code in (404, 405)

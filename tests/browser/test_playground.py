"""A person reads the access panel and tries the service in the playground: the page calls the
real gateway (`manage.py run_gateway`), which reaches the simulated cluster's stand-in server."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import expect

from deploy.clusters.simulated import SimulatedCluster
from deploy.render import render_service
from services.spec import service_spec

INSTANT = {"SIMULATED_PULL_SECONDS": "0", "SIMULATED_LOAD_SECONDS": "0"}


@pytest.fixture
def running_chat(make_service, tmp_path):
    """A Running service whose pod is ready at once on the cluster the gateway process sees."""
    cluster = SimulatedCluster(
        nodes_file=django_settings.SIMULATED_CLUSTER_NODES,
        faults_file=str(tmp_path / "faults.json"),
        pull_seconds=0,
        load_seconds=0,
        poll_seconds=0.1,
        state_dir=str(tmp_path / "simulated"),  # as gateway_env sets it for the gateway
    )
    chat = make_service("chat", None)
    cluster.apply(render_service(service_spec(chat)))
    yield chat
    cluster.delete_service(chat.namespace, chat.name)  # stops the stand-in the gateway started


def test_user_calls_the_model_from_the_playground(
    page, live_server, login, running_chat, make_key, start_gateway, settings
):
    gateway = start_gateway(**INSTANT)
    settings.GATEWAY_PUBLIC_URL = gateway.url
    _key, plaintext = make_key([running_chat])
    login("alice", "alice-password-1")
    page.goto(f"{live_server.url}/services/{running_chat.pk}/")

    expect(page.get_by_test_id("gateway-url")).to_have_text(f"{gateway.url}/chat")
    expect(page.get_by_test_id("key-header")).to_have_text("Authorization: Bearer $INFERENCE_KEY")
    expect(page.locator(".snippet").first).to_contain_text(f"{gateway.url}/chat/v1/chat/completions")

    # Sending without a key: the error is next to the key field, nothing is called.
    page.fill("#id_prompt", "Hello from the browser")
    page.click("#playground button[type=submit]")
    expect(page.locator("#pg-errors-key")).to_contain_text("Paste an inference key")

    page.fill("#id_key", plaintext)
    page.click("#playground button[type=submit]")
    expect(page.get_by_test_id("playground-status")).to_have_text("HTTP 200", timeout=20_000)
    expect(page.get_by_test_id("playground-answer")).to_contain_text("[simulated chat]")
    expect(page.get_by_test_id("playground-answer")).to_contain_text("Hello from the browser")
    expect(page.locator("#pg-errors-key")).to_be_empty()
    expect(page.get_by_test_id("playground-result")).to_contain_text("chunks, first after")
    assert plaintext not in page.get_by_test_id("playground-result").inner_text()

"""The embedded default end to end: the service page's playground -> `manage.py run_gateway` ->
the simulated cluster's stand-in server of a Running pod, every hop on 127.0.0.1.

The gateway process finds the stand-in through SimulatedCluster.service_endpoint (it starts it,
detached, in the shared state folder); this test deletes the service at the end, which stops it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from deploy.clusters.simulated import SimulatedCluster
from deploy.render import render_service
from services.auth_policy import encrypt_params
from services.spec import service_spec

INSTANT = {"SIMULATED_PULL_SECONDS": "0", "SIMULATED_LOAD_SECONDS": "0"}


@pytest.fixture
def deploy(tmp_path):
    """The cluster the gateway process sees: same database rows, same state folder (gateway_env)."""
    cluster = SimulatedCluster(
        nodes_file=django_settings.SIMULATED_CLUSTER_NODES,
        faults_file=str(tmp_path / "faults.json"),
        pull_seconds=0,
        load_seconds=0,
        poll_seconds=0.1,
        state_dir=str(tmp_path / "simulated"),
    )
    applied: list[tuple[str, str]] = []

    def apply(service) -> None:
        cluster.apply(render_service(service_spec(service)))
        applied.append((service.namespace, service.name))

    yield apply
    for namespace, name in applied:
        cluster.delete_service(namespace, name)  # stops the stand-in the gateway started
    assert not list((Path(cluster.state.root) / "standins").glob("*/*/*"))


def playground(client, service, **data):
    response = client.post(f"/services/{service.pk}/playground/", data)
    assert response.status_code == 200
    return response.text


def test_playground_calls_the_gateway_which_reaches_the_standin(
    client, user, make_service, make_key, start_gateway, deploy, settings, caplog
):
    chat = make_service(
        "chat",
        None,
        auth_params_encrypted=encrypt_params([{"in": "header", "name": "X-Team", "value": "team-a"}]),
    )
    deploy(chat)
    gateway = start_gateway(**INSTANT)
    settings.GATEWAY_PUBLIC_URL = gateway.url
    _key, plaintext = make_key([chat])
    client.force_login(user)
    caplog.set_level(logging.DEBUG)

    html = playground(client, chat, key=plaintext, prompt="Hello from the playground", param_0="team-a")

    assert 'data-testid="playground-status">HTTP 200<' in html, html
    answer = re.search(r'data-testid="playground-answer">(.*?)</pre>', html, re.S).group(1)
    assert answer.startswith("[simulated chat]") and "Hello from the playground" in answer
    assert re.search(r"\d+ chunks, first after \d+ ms", html)
    assert "tokens: 4 in," in html  # the usage chunk the stand-in sends with include_usage
    assert plaintext not in html and plaintext not in caplog.text
    assert plaintext not in gateway.log.read_text()

    # The gateway's refusals come back as what they are.
    html = playground(client, chat, key="ik_wrong", prompt="x", param_0="team-a")
    assert re.search(r'data-testid="playground-status">HTTP 40[13]<', html)
    assert 'data-testid="playground-error"' in html
    html = playground(client, chat, key=plaintext, prompt="x", param_0="team-b")
    assert re.search(r'data-testid="playground-status">HTTP 40[13]<', html)


def test_triton_playground_through_the_gateway(
    client, user, make_service, make_key, start_gateway, deploy, settings
):
    vision = make_service("vision", None, runtime="triton", served_model_name="resnet")
    deploy(vision)
    settings.GATEWAY_PUBLIC_URL = start_gateway(**INSTANT).url
    _key, plaintext = make_key([vision])
    client.force_login(user)
    body = {"inputs": [{"name": "IMAGE", "shape": [1, 3], "datatype": "FP32", "data": [0.5, 1, 2]}]}

    html = playground(client, vision, key=plaintext, body=json.dumps(body))

    assert 'data-testid="playground-status">HTTP 200<' in html, html
    assert "/vision/v2/models/resnet/infer" in html
    answer = re.search(r'data-testid="playground-answer">(.*?)</pre>', html, re.S).group(1)
    reply = json.loads(answer.replace("&quot;", '"'))
    assert reply["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 3], "data": [0.5, 1, 2]}]

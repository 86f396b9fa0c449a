"""Who gets through: every refusal is a JSON error from the gateway and the model never sees it."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from auth.key_actions import inference_key_revoke
from auth.models import InferenceKey
from console.audit import SYSTEM
from services import phases
from services.auth_policy import encrypt_params
from tests.gateway.upstream import MockUpstream, free_port

CHAT = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: requests.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["message"]
    return error


@pytest.fixture
def chat(make_service, upstream):
    return make_service("chat", upstream.url)


@pytest.fixture
def gateway(start_gateway):
    return start_gateway()


def test_a_valid_key_reaches_the_model_without_the_key(gateway, upstream, chat, make_key):
    _key, plaintext = make_key([chat])
    # A header the Connection header names is for this hop only: it goes no further.
    headers = {**bearer(plaintext), "Connection": "keep-alive, X-Hop-Only", "X-Hop-Only": "1"}
    response = requests.post(f"{gateway.url}/chat/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "fake answer"
    assert len(upstream.seen) == 1
    seen = upstream.seen[0]
    assert seen.path == "/v1/chat/completions"
    sent = {h.lower() for h in seen.headers}
    assert "authorization" not in sent and "x-hop-only" not in sent
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"


def _expired(key: InferenceKey) -> None:
    InferenceKey.objects.filter(id=key.id).update(expires_at=timezone.now() - timedelta(seconds=1))


def _disabled(key: InferenceKey) -> None:
    InferenceKey.objects.filter(id=key.id).update(disabled_at=timezone.now())


@pytest.mark.parametrize(
    ("case", "status", "error_type"),
    [
        ("missing", 401, "authentication_error"),
        ("not bearer", 401, "authentication_error"),
        ("malformed", 401, "authentication_error"),
        ("wrong secret", 401, "authentication_error"),
        ("unknown prefix", 401, "authentication_error"),
        ("expired", 401, "authentication_error"),
        ("revoked", 401, "authentication_error"),
        ("disabled", 401, "authentication_error"),
        ("owner deactivated", 401, "authentication_error"),
        ("other service", 403, "permission_error"),
        ("management token", 401, "authentication_error"),
    ],
)
def test_key_refusals_never_reach_the_model(
    case, status, error_type, gateway, upstream, chat, make_service, make_key, api
):
    other = make_service("other", upstream.url)
    key, plaintext = make_key([other] if case == "other service" else [chat])
    headers = bearer(plaintext)
    if case == "missing":
        headers = {}
    elif case == "not bearer":
        headers = {"Authorization": f"Basic {plaintext}"}
    elif case == "malformed":
        headers = bearer("sk-not-one-of-ours")
    elif case == "wrong secret":
        headers = bearer(plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB"))
    elif case == "unknown prefix":
        headers = bearer("iek_0123456789ab_" + plaintext.rsplit("_", 1)[1])
    elif case == "expired":
        _expired(key)
    elif case == "revoked":
        inference_key_revoke(key=key, context=SYSTEM)
    elif case == "disabled":
        _disabled(key)
    elif case == "owner deactivated":
        type(key.user).objects.filter(id=key.user_id).update(is_active=False)
    elif case == "management token":
        headers = api._credentials and {"Authorization": api._credentials["HTTP_AUTHORIZATION"]}
    response = requests.post(f"{gateway.url}/chat/v1/chat/completions", json=CHAT, headers=headers)
    assert_error(response, status, error_type)
    assert upstream.seen == []


def test_custom_parameters_are_required_and_stripped(gateway, upstream, make_service, make_key):
    service = make_service(
        "tenant",
        upstream.url,
        auth_header="X-Api-Key",
        auth_params_encrypted=encrypt_params(
            [
                {"in": "header", "name": "X-Tenant", "value": "acme"},
                {"in": "query", "name": "team", "value": "blue"},
            ]
        ),
    )
    _key, plaintext = make_key([service])
    url = f"{gateway.url}/tenant/v1/models"
    good = {"X-Api-Key": plaintext, "X-Tenant": "acme"}
    # The key in the Authorization header is not where this policy looks.
    assert_error(requests.get(url + "?team=blue", headers=bearer(plaintext)), 401, "authentication_error")
    assert_error(requests.get(url + "?team=blue", headers={"X-Api-Key": plaintext}), 403, "permission_error")
    error = assert_error(
        requests.get(url + "?team=blue", headers={**good, "X-Tenant": "evil"}), 403, "permission_error"
    )
    assert "x-tenant" in error["message"]
    assert_error(requests.get(url, headers=good), 403, "permission_error")
    assert_error(requests.get(url + "?team=red", headers=good), 403, "permission_error")
    assert upstream.seen == []

    response = requests.get(url + "?team=blue&limit=3", headers=good)
    assert response.status_code == 200, response.text
    (seen,) = upstream.seen
    assert seen.query == "limit=3"
    assert {"x-api-key", "x-tenant"}.isdisjoint(h.lower() for h in seen.headers)


def test_source_network_outside_allowed_cidrs_is_refused(gateway, upstream, make_service, make_key):
    closed = make_service("closed", upstream.url, allowed_cidrs=["10.0.0.0/8"])
    opened = make_service("opened", upstream.url, allowed_cidrs=["10.0.0.0/8", "127.0.0.0/8"])
    _key, plaintext = make_key([closed, opened])
    error = assert_error(
        requests.get(f"{gateway.url}/closed/v1/models", headers=bearer(plaintext)), 403, "permission_error"
    )
    assert "127.0.0.1" in error["message"]
    assert upstream.seen == []
    assert requests.get(f"{gateway.url}/opened/v1/models", headers=bearer(plaintext)).status_code == 200


def test_policy_none_needs_no_key(gateway, upstream, make_service):
    # Parameters left from an earlier api_key policy are not asked for: they are its options,
    # and the access panel and the playground do not show them for `none` either.
    left_over = encrypt_params([{"in": "header", "name": "X-Tenant", "value": "acme"}])
    make_service("open", upstream.url, auth_policy="none", auth_params_encrypted=left_over)
    response = requests.post(
        f"{gateway.url}/open/v2/models/m/infer",
        json={"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32", "data": [1, 2]}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1, 2]
    assert requests.get(f"{gateway.url}/open/v2/health/ready").status_code == 200
    assert [s.path for s in upstream.seen] == ["/v2/models/m/infer", "/v2/health/ready"]


def test_unknown_unready_and_unreachable_services(gateway, upstream, make_service, make_key):
    starting = make_service("starting", None, phase=phases.STARTING)
    down = make_service("down", f"http://127.0.0.1:{free_port()}")
    _key, plaintext = make_key([starting, down])
    headers = bearer(plaintext)

    error = assert_error(
        requests.get(f"{gateway.url}/nosuch/v1/models", headers=headers), 404, "not_found_error"
    )
    assert "nosuch" in error["message"]
    assert_error(requests.get(f"{gateway.url}/", headers=headers), 404, "not_found_error")
    error = assert_error(
        requests.get(f"{gateway.url}/starting/v1/models", headers=headers), 503, "service_unavailable"
    )
    assert "Starting" in error["message"]
    error = assert_error(
        requests.get(f"{gateway.url}/down/v1/models", headers=headers), 502, "upstream_error"
    )
    assert "connect" in error["message"].lower()
    # The namespace-qualified form reaches the same service.
    assert_error(
        requests.get(f"{gateway.url}/down.{down.namespace}/v1/models", headers=headers), 502, "upstream_error"
    )


def test_a_model_server_that_does_not_answer_in_time_is_a_504(start_gateway, make_service, make_key):
    slow = MockUpstream(latency=3.0).start()
    try:
        gateway = start_gateway(GATEWAY_READ_TIMEOUT_SECONDS="0.5")
        service = make_service("slow", slow.url)
        _key, plaintext = make_key([service])
        started = time.monotonic()
        response = requests.post(
            f"{gateway.url}/slow/v1/chat/completions", json=CHAT, headers=bearer(plaintext)
        )
        assert_error(response, 504, "upstream_timeout")
        assert time.monotonic() - started < 2.5  # the gateway gave up; it did not wait for the answer
    finally:
        slow.stop()


def test_a_forwarded_header_does_not_fake_the_source_network(gateway, upstream, make_service, make_key):
    closed = make_service("closed", upstream.url, allowed_cidrs=["10.0.0.0/8"])
    _key, plaintext = make_key([closed])
    response = requests.get(
        f"{gateway.url}/closed/v1/models", headers={**bearer(plaintext), "X-Forwarded-For": "10.1.2.3"}
    )
    assert_error(response, 403, "permission_error")
    assert upstream.seen == []

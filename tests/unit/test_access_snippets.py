"""The access panel's content per auth policy: gateway URL first, the key header filled, extra
parameters by name with placeholders (never their values), every snippet well-formed."""

from __future__ import annotations

import ast
import json
import re
import shlex

import pytest

from services.access import access_info
from services.auth_policy import encrypt_params
from services.models import InferenceService

SECRET_VALUE = "team-secret-value-123"


def service(runtime: str = "vllm", **fields) -> InferenceService:
    values = {"name": "chat", "namespace": "inference", "runtime": runtime, "served_model_name": "demo"}
    values.update(fields)
    return InferenceService(**values)


def with_params(*params: tuple[str, str], **fields) -> InferenceService:
    stored = [{"in": where, "name": name, "value": SECRET_VALUE} for where, name in params]
    return service(auth_params_encrypted=encrypt_params(stored), **fields)


@pytest.fixture(autouse=True)
def gateway_url(settings):
    settings.GATEWAY_PUBLIC_URL = "https://gw.example.com/"
    settings.GATEWAY_PUBLIC_GRPC = "gw.example.com:8002"
    settings.GATEWAY_GRPC_PORT = 8002
    settings.CLUSTER_DOMAIN = "cluster.local"


def snippet(info, title_start: str) -> str:
    (code,) = [s.code for s in info.snippets if s.title.startswith(title_start)]
    return code


def test_gateway_url_first_and_the_in_cluster_url_second():
    info = access_info(service())
    assert info.gateway_url == "https://gw.example.com/chat"
    assert info.health_url == "https://gw.example.com/chat/health"
    assert info.internal_url == "http://chat.inference.svc.cluster.local:8000"
    assert info.grpc_address == ""
    titles = [s.title for s in info.snippets]
    assert titles[:4] == [
        "curl: chat completion",
        "Python (requests)",
        "Python (OpenAI SDK, streaming)",
        "Python (LangChain)",
    ]
    for s in info.snippets:
        assert "https://gw.example.com/chat" in s.code, s.title
        assert "svc.cluster.local" not in s.code, s.title


def test_bearer_key_in_every_snippet():
    info = access_info(service())
    assert info.requires_key and info.key_header == "Authorization: Bearer $INFERENCE_KEY"
    curl = snippet(info, "curl: chat")
    assert '-H "Authorization: Bearer $INFERENCE_KEY"' in curl
    assert "f\"Bearer {os.environ['INFERENCE_KEY']}\"" in snippet(info, "Python (requests)")
    openai = snippet(info, "Python (OpenAI SDK")
    assert 'base_url="https://gw.example.com/chat/v1"' in openai
    assert 'api_key=os.environ["INFERENCE_KEY"]' in openai and "default_headers" not in openai
    langchain = snippet(info, "Python (LangChain)")
    assert "ChatOpenAI(" in langchain and 'base_url="https://gw.example.com/chat/v1"' in langchain
    assert 'model="demo"' in langchain


def test_custom_header_and_extra_parameters_by_name_only():
    info = access_info(
        with_params(("header", "X-Team"), ("query", "tenant"), auth_header="X-Api-Key", runtime="vllm")
    )
    assert info.key_header == "X-Api-Key: $INFERENCE_KEY"
    assert [(p.location, p.name, p.variable) for p in info.params] == [
        ("header", "X-Team", "X_TEAM"),
        ("query", "tenant", "TENANT"),
    ]
    for s in info.snippets:
        assert SECRET_VALUE not in s.code, s.title
    curl = snippet(info, "curl: chat")
    assert '"https://gw.example.com/chat/v1/chat/completions?tenant=$TENANT"' in curl
    assert '-H "X-Api-Key: $INFERENCE_KEY"' in curl and '-H "X-Team: $X_TEAM"' in curl
    assert "Bearer" not in curl
    requests_code = snippet(info, "Python (requests)")
    assert '"X-Api-Key": os.environ["INFERENCE_KEY"]' in requests_code
    assert 'params={"tenant": os.environ["TENANT"]}' in requests_code
    openai = snippet(info, "Python (OpenAI SDK")
    assert 'api_key="unused"' in openai
    assert (
        'default_headers={"X-Api-Key": os.environ["INFERENCE_KEY"], "X-Team": os.environ["X_TEAM"]}' in openai
    )
    assert 'default_query={"tenant": os.environ["TENANT"]}' in openai


def test_no_key_policy_has_no_key_header():
    info = access_info(service(auth_policy="none", auth_params_encrypted=""))
    assert not info.requires_key and info.key_header == "" and info.params == ()
    for s in info.snippets:
        assert "INFERENCE_KEY" not in s.code and "Authorization" not in s.code, s.title


def test_triton_snippets_use_the_gateway_and_the_http_client():
    info = access_info(
        with_params(("header", "X-Team"), runtime="triton", served_model_name="", name="vision")
    )
    assert info.health_url == "https://gw.example.com/vision/v2/health/ready"
    assert info.grpc_address == "vision.inference.svc.cluster.local:8001"  # in-cluster, secondary
    curl = snippet(info, "curl: infer")
    assert '"https://gw.example.com/vision/v2/models/vision/infer"' in curl
    client = snippet(info, "Python (Triton HTTP client)")
    assert 'InferenceServerClient(url="gw.example.com/vision", ssl=True)' in client
    assert 'client.infer("vision", inputs, headers=headers)' in client
    assert '"X-Team": os.environ["X_TEAM"]' in client and SECRET_VALUE not in client
    # gRPC through the gateway's own port, the service named in metadata (lower-case names).
    assert info.grpc_gateway == "gw.example.com:8002"
    grpc_client = snippet(info, "Python (Triton gRPC client)")
    assert 'InferenceServerClient(url="gw.example.com:8002")' in grpc_client
    assert '"x-inference-service": "vision"' in grpc_client
    assert '"authorization": f"Bearer {os.environ[\'INFERENCE_KEY\']}"' in grpc_client
    assert '"x-team": os.environ["X_TEAM"]' in grpc_client and SECRET_VALUE not in grpc_client


@pytest.mark.parametrize("runtime", ["vllm", "triton"])
@pytest.mark.parametrize("policy", ["bearer", "custom", "none"])
def test_every_snippet_parses(runtime, policy):
    fields = {"runtime": runtime}
    if policy == "custom":
        fields["auth_header"] = "X-Api-Key"
    if policy == "none":
        info = access_info(service(auth_policy="none", **fields))
    else:
        info = access_info(with_params(("header", "X-Team"), ("query", "tenant"), **fields))
    for s in info.snippets:
        if s.language == "python":
            ast.parse(s.code)
        else:
            words = shlex.split(s.code.replace("\\\n", " "))
            assert words[0] == "curl" and words[1].startswith("https://gw.example.com/chat")
            if "-d" in words:
                json.loads(words[words.index("-d") + 1])
            if policy != "none":
                assert any(re.match(r"(Authorization: Bearer|X-Api-Key:) \$INFERENCE_KEY", w) for w in words)

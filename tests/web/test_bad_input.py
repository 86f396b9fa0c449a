"""Each invalid spec is refused with an error on the right field, through the form and the API,
and nothing is created."""

import pytest

from services.forms import format_env
from services.models import InferenceService

# (case id, field changed, new value, field the error must be on, text in the message)
BAD_SPECS = [
    ("uppercase-name", "name", "ChatGLM", "name", "lowercase"),
    ("name-starts-with-digit", "name", "6b-chat", "name", "starting with a letter"),
    ("name-with-underscore", "name", "chat_glm", "name", "lowercase"),
    ("name-too-long", "name", "a" * 51, "name", "at most 50 characters"),
    (
        "unknown-engine-flag",
        "engine_args",
        "--dtype=half --frobnicate=3",
        "engine_args",
        "unknown flag --frobnicate",
    ),
    ("managed-engine-flag", "engine_args", "--model=/etc", "engine_args", "set by the console"),
    ("engine-flag-missing-value", "engine_args", "--max-model-len", "engine_args", "needs a value"),
    ("engine-bare-value", "engine_args", "rm -rf /", "engine_args", "unexpected value"),
    ("negative-gpus", "gpu_count", -1, "gpu_count", ""),
    ("too-many-gpus", "gpu_count", 65, "gpu_count", "64"),
    ("huge-replicas", "replicas", 1000, "replicas", "32"),
    ("missing-dataset", "dataset", "no-such-dataset", "dataset", ""),
    ("model-path-dotdot", "model_path", "THUDM/../../etc", "model_path", "no '..'"),
    ("model-path-absolute", "model_path", "/etc/passwd", "model_path", "no leading '/'"),
    ("env-name-with-space", "env", [{"name": "MY VAR", "value": "x"}], "env", "not a valid variable name"),
    ("env-reserved", "env", [{"name": "HF_HUB_OFFLINE", "value": "0"}], "env", "set by the console"),
    ("bad-cpu-quantity", "cpu", "four", "cpu", "not a Kubernetes quantity"),
    ("bad-memory-quantity", "memory", "30 GB", "memory", "not a Kubernetes quantity"),
    ("bad-image", "image", "vllm/vllm openai", "image", "no spaces"),
    ("bad-gpu-type", "gpu_type", "A100 80GB", "gpu_type", ""),
    (
        "rules-without-custom-mode",
        "node_rules",
        [{"key": "zone", "operator": "In", "values": ["a"]}],
        "affinity_mode",
        "custom",
    ),
    ("bigger-than-any-node", "gpu_count", 9, "gpu_count", "no node in flavor default has 9 nvidia.com/gpu"),
    ("over-queue-quota", "replicas", 9, "queue", "needs 9 nvidia.com/gpu; queue gpu-a100 has at most 8"),
]


def _form_value(field, value):
    if field == "env":
        return format_env(value)
    if field == "node_rules":
        return "\n".join(f"{r['key']} {r['operator']} {','.join(r['values'])}" for r in value)
    return value


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "field", "value", "error_field", "text"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS]
)
def test_api_refuses_bad_spec(api, service_payload, case, field, value, error_field, text):
    response = api.post("/api/v1/services/", {**service_payload, field: value}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert error_field in body, body
    assert text in " ".join(str(m) for m in body[error_field]), body
    assert not InferenceService.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "field", "value", "error_field", "text"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS]
)
def test_form_refuses_bad_spec(
    client, user, queue, dataset, service_payload, case, field, value, error_field, text
):
    client.force_login(user)
    data = {
        **service_payload,
        "queue": queue.id,
        "dataset": dataset.id,
        "env": format_env(service_payload["env"]),
    }
    data[field] = _form_value(field, value)
    if field == "dataset":
        data["dataset"] = 999_999
    response = client.post("/services/new/", data)
    assert response.status_code == 200  # the form again, not a redirect
    form = response.context["form"]
    assert error_field in form.errors, form.errors
    assert text in " ".join(form.errors[error_field])
    # The error is shown next to its field.
    assert f'data-field="{error_field}"' in response.content.decode()
    assert not InferenceService.objects.exists()


@pytest.mark.django_db
def test_duplicate_name_is_a_field_error_in_both(api, client, user, queue, dataset, service_payload):
    assert api.post("/api/v1/services/", service_payload, format="json").status_code == 201
    response = api.post("/api/v1/services/", service_payload, format="json")
    assert response.status_code == 400
    assert "already exists" in response.json()["name"][0]
    client.force_login(user)
    data = {**service_payload, "queue": queue.id, "dataset": dataset.id, "env": ""}
    response = client.post("/services/new/", data)
    assert "already exists" in response.context["form"].errors["name"][0]
    assert InferenceService.objects.count() == 1


@pytest.mark.django_db
def test_malformed_json_is_400_not_500(api):
    response = api.post("/api/v1/services/", "{not json", content_type="application/json")
    assert response.status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body", [{"env": "A=b"}, {"env": [{"name": "A"}]}, {"node_rules": "x"}, {"replicas": "many"}]
)
def test_wrongly_typed_fields_are_400(api, service_payload, body):
    response = api.post("/api/v1/services/", {**service_payload, **body}, format="json")
    assert response.status_code == 400
    assert set(body) & set(response.json())

"""Creating a service checks its model files first (the same checks the picker shows): a wrong
layout is a 400 on model_path, a model that cannot fit is a 400 on gpu_count unless an admin
overrides it. Through the REST API, against a LOCAL dataset of generated model trees."""

import json

import pytest

from datasets.models import Dataset
from deploy import clusters
from services.models import InferenceService
from tests.datasets.modeltrees import write_chatglm2_6b, write_triton_repository

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def t4_nodes(settings, tmp_path):
    """A simulated cluster of 16 GiB Tesla T4s, small enough for the 6B model not to fit on one."""
    nodes = tmp_path / "nodes.json"
    labels = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.count": "4"}
    capacity = {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "4"}
    nodes.write_text(json.dumps({"nodes": [{"name": "t4-node", "labels": labels, "capacity": capacity}]}))
    settings.SIMULATED_CLUSTER_NODES = str(nodes)
    clusters._cluster_for.cache_clear()
    yield
    clusters._cluster_for.cache_clear()


@pytest.fixture
def models(user, tmp_path):
    write_chatglm2_6b(tmp_path / "THUDM" / "chatglm2-6b", shards=2)
    write_triton_repository(tmp_path / "triton")
    return Dataset.objects.create(
        name="local-models", kind=Dataset.Kind.LOCAL, local_path=str(tmp_path), owner=user, phase="Ready"
    )


def payload(queue, **overrides):
    return {
        "name": "chatglm2",
        "queue": queue.name,
        "runtime": "vllm",
        "dataset": "local-models",
        "model_path": "THUDM/chatglm2-6b",
        "gpu_count": 1,
        "gpu_type": "Tesla-T4",  # 16 GiB: 12.5 GB of FP16 weights plus a 32k-token context do not fit
        **overrides,
    }


def test_a_model_that_fits_is_created(api, queue, models):
    response = api.post("/api/v1/services/", payload(queue, gpu_count=2), format="json")
    assert response.status_code == 201, response.content


def test_a_model_too_big_for_the_gpus_is_refused_on_gpu_count(api, queue, models):
    response = api.post("/api/v1/services/", payload(queue), format="json")
    assert response.status_code == 400
    assert "needs at least 2 GPUs of 16 GiB" in response.json()["gpu_count"][0]
    assert not InferenceService.objects.exists()


def test_only_admins_may_override_the_fit_check(api, admin_api, queue, models):
    response = api.post("/api/v1/services/", payload(queue, fit_override=True), format="json")
    assert response.status_code == 400 and "fit_override" in response.json()
    response = admin_api.post("/api/v1/services/", payload(queue, fit_override=True), format="json")
    assert response.status_code == 201, response.content
    assert InferenceService.objects.get().fit_override


def test_a_wrong_layout_for_the_runtime_is_refused_on_model_path(api, queue, models):
    response = api.post("/api/v1/services/", payload(queue, runtime="triton", gpu_count=2), format="json")
    assert response.status_code == 400
    assert any("config.pbtxt" in problem for problem in response.json()["model_path"])
    response = api.post(
        "/api/v1/services/", payload(queue, runtime="triton", model_path="triton", gpu_count=2), format="json"
    )
    assert response.status_code == 201, response.content

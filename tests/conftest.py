"""Fixtures shared by every tier: users, a queue, a ready dataset, API clients."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from auth.actions import api_token_create
from datasets.models import Dataset
from queues.actions import queue_create
from tests.stack import _require_real_parts, celery_worker, fast_cluster, watcher  # noqa: F401 (fixtures)

pytest_plugins = ["tests.clock", "tests.gateway.fixtures"]


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("alice", "alice@example.com", "alice-password-1")


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "root-password-1")


@pytest.fixture
def queue(db):
    """A simple queue: 8 GPUs, 64 cores and 512 GiB on the default flavor (every node)."""
    return queue_create(name="gpu-a100", gpu_quota=8, cpu_quota=64, memory_quota_gib=512)


@pytest.fixture
def dataset(user):
    return Dataset.objects.create(
        name="nfs-models",
        kind=Dataset.Kind.NFS,
        nfs_server="10.0.0.5",
        nfs_path="/exports/models",
        owner=user,
        phase=Dataset.Phase.READY,
    )


def bearer_client(user) -> APIClient:
    """An API client authenticated the way automation does: Authorization: Bearer <token>."""
    _token, plaintext = api_token_create(user=user, name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


@pytest.fixture
def api(user):
    return bearer_client(user)


@pytest.fixture
def admin_api(admin_user):
    return bearer_client(admin_user)


@pytest.fixture
def service_payload(queue, dataset):
    """A valid create request; tests change one field at a time."""
    return {
        "name": "chatglm2",
        "queue": queue.name,
        "runtime": "vllm",
        "dataset": dataset.name,
        "model_path": "THUDM/chatglm2-6b",
        "engine_args": "--dtype=half --max-model-len=4096",
        "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}],
        "replicas": 1,
        "cpu": "4",
        "memory": "30Gi",
        "gpu_count": 1,
        "shm_size": "16Gi",
        "auth_policy": "api_key",
        "affinity_mode": "auto",
    }

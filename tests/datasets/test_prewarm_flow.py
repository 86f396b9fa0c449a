"""A dataset through the REST API with the real parts: a Celery worker on Redis, the watcher
following prewarms, the simulated cluster running the copier Job against the S3 server on
127.0.0.1. Create (credentials checked), prewarm with progress, browse, inspect, prewarm again
(a cache hit, then one changed file), failures with their reason, delete."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from datasets.models import Dataset, PrewarmRun
from deploy.models import SimulatedObject
from tests.datasets.modeltrees import write_tiny_llama
from tests.stack import wait_for

pytestmark = pytest.mark.integration
FILES = 6  # the tiny Llama in two shards: config, index, 2 shards, tokenizer files


def s3_payload(s3_server, bucket: str, **overrides) -> dict:
    return {
        "name": "s3-models",
        "kind": "s3",
        "s3_endpoint": s3_server.endpoint_url,
        "s3_bucket": bucket,
        "s3_prefix": "models",
        "s3_region": "us-east-1",
        "s3_path_style": True,
        "s3_access_key": s3_server.access_key,
        "s3_secret_key": s3_server.secret_key,
        **overrides,
    }


def latest_run(dataset_id: int) -> PrewarmRun | None:
    connection.close()  # see the worker's and the watcher's commits
    return PrewarmRun.objects.filter(dataset_id=dataset_id).first()


def finished_run(dataset_id: int, after: int = 0) -> PrewarmRun:
    def done():
        run = latest_run(dataset_id)
        return run if run and run.id > after and run.is_finished else None

    return wait_for(done, timeout=60, what="the prewarm to finish")


@pytest.fixture
def bucket_with_model(s3_server, s3_bucket, tmp_path):
    tree = write_tiny_llama(tmp_path / "tree" / "llama", shards=2)
    files = [path for path in tree.rglob("*") if path.is_file()]
    assert len(files) == FILES
    for path in files:
        s3_server.put_file(s3_bucket, f"models/org/{path.relative_to(tree.parent)}", path.read_bytes())
    return s3_bucket


def test_an_s3_dataset_is_checked_prewarmed_browsed_and_reprewarmed(
    api, s3_server, bucket_with_model, celery_worker, watcher
):
    wrong = api.post(
        "/api/v1/datasets/", s3_payload(s3_server, bucket_with_model, s3_secret_key="nope"), format="json"
    )
    assert wrong.status_code == 400 and "s3_secret_key" in wrong.json(), wrong.content
    missing = api.post("/api/v1/datasets/", s3_payload(s3_server, "no-such-bucket"), format="json")
    assert missing.status_code == 400 and "s3_bucket" in missing.json(), missing.content
    assert not Dataset.objects.exists()  # nothing half-created

    created = api.post("/api/v1/datasets/", s3_payload(s3_server, bucket_with_model), format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["has_credentials"] and s3_server.secret_key not in json.dumps(body)
    dataset_id = body["id"]
    stored = Dataset.objects.get(id=dataset_id)
    assert s3_server.secret_key not in stored.credentials_encrypted

    run = finished_run(dataset_id)
    assert run.status == "Succeeded", (run.reason, run.message, run.log_tail)
    progress = api.get(f"/api/v1/datasets/{dataset_id}/prewarm/").json()
    assert progress["percent"] == 100 and progress["bytes_done"] == progress["bytes_total"] > 0
    assert progress["files_total"] == progress["files_done"] == FILES
    assert api.get(f"/api/v1/datasets/{dataset_id}/").json()["phase"] == "Ready"
    # The Secret the Job read its keys from is stored without them.
    secret = SimulatedObject.objects.get(kind="Secret", name="dataset-s3-models-credentials")
    assert s3_server.secret_key not in json.dumps(secret.body) + secret.secret_data

    listing = api.get(f"/api/v1/datasets/{dataset_id}/browse/", {"path": "org/llama"}).json()
    sizes = {f["name"]: f["size"] for f in listing["files"]}
    assert "config.json" in sizes and sizes["model-00001-of-00002.safetensors"] > 0
    inspected = api.get(
        f"/api/v1/datasets/{dataset_id}/inspect/", {"path": "org/llama", "runtime": "triton"}
    ).json()
    assert not inspected["layout"]["ok"] and inspected["layout"]["problems"]
    inspected = api.get(
        f"/api/v1/datasets/{dataset_id}/inspect/",
        {"path": "org/llama", "runtime": "vllm", "gpu_memory_gib": 80},
    ).json()
    assert inspected["layout"]["ok"] and inspected["fit"]["fits"], inspected

    # Again with nothing changed: every file is skipped.
    assert api.post(f"/api/v1/datasets/{dataset_id}/prewarm/").status_code == 202
    hit = finished_run(dataset_id, after=run.id)
    assert (hit.status, hit.files_skipped, hit.files_total) == ("Succeeded", FILES, FILES)

    # One object changed: only it is copied.
    s3_server.put_file(bucket_with_model, "models/org/llama/config.json", b'{"architectures": ["X"]}')
    assert api.post(f"/api/v1/datasets/{dataset_id}/prewarm/").status_code == 202
    changed = finished_run(dataset_id, after=hit.id)
    assert (changed.status, changed.files_skipped, changed.files_total) == ("Succeeded", FILES - 1, FILES)

    assert api.delete(f"/api/v1/datasets/{dataset_id}/").status_code == 204
    wait_for(
        lambda: not SimulatedObject.objects.filter(
            labels__contains={"inference.console/dataset": "s3-models"}
        ).exists(),
        what="the dataset's Job, Secret and PVC to be deleted",
    )


def test_a_failed_prewarm_says_why_and_keeps_the_log(
    api, s3_server, bucket_with_model, celery_worker, watcher
):
    created = api.post("/api/v1/datasets/", s3_payload(s3_server, bucket_with_model), format="json")
    assert created.status_code == 201, created.content
    dataset_id = created.json()["id"]
    first = finished_run(dataset_id)
    # The bucket goes away behind the console's back; the next prewarm fails on it.
    for path in sorted(s3_server.bucket_path(bucket_with_model).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    s3_server.bucket_path(bucket_with_model).rmdir()

    assert api.post(f"/api/v1/datasets/{dataset_id}/prewarm/").status_code == 202
    failed = finished_run(dataset_id, after=first.id)

    assert (failed.status, failed.reason) == ("Failed", "NoSuchBucket"), failed.message
    assert bucket_with_model in failed.message
    assert "error NoSuchBucket" in failed.log_tail  # the log's tail, as a person reads it
    progress = api.get(f"/api/v1/datasets/{dataset_id}/prewarm/").json()
    assert (progress["status"], progress["reason"]) == ("Failed", "NoSuchBucket")
    dataset = api.get(f"/api/v1/datasets/{dataset_id}/").json()
    assert dataset["phase"] == "Failed" and "NoSuchBucket" in dataset["phase_message"]

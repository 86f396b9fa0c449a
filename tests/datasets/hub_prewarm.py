"""The end-to-end prewarm check shared by the two hub kinds (Hugging Face and ModelScope): a
dataset created through the API is copied by a real worker and watcher, browsable, inspectable,
and a second prewarm is a cache hit."""

from __future__ import annotations

import json

from django.db import connection

from datasets.models import PrewarmRun
from deploy.models import SimulatedObject
from tests.stack import wait_for


def finished_run(dataset_id: int, after: int = 0) -> PrewarmRun:
    def done():
        connection.close()  # see the worker's and the watcher's commits
        run = PrewarmRun.objects.filter(dataset_id=dataset_id).first()
        return run if run and run.id > after and run.is_finished else None

    return wait_for(done, timeout=90, what="the prewarm to finish")


def check_hub_prewarm_end_to_end(
    api, payload: dict, files: dict[str, bytes], *, source: str, endpoint: str, token: str, token_env: str
) -> None:
    created = api.post("/api/v1/datasets/", payload, format="json")
    assert created.status_code == 201, created.content
    dataset_id = created.json()["id"]

    run = finished_run(dataset_id)
    assert run.status == "Succeeded", (run.reason, run.message, run.log_tail)
    progress = api.get(f"/api/v1/datasets/{dataset_id}/prewarm/").json()
    assert progress["percent"] == 100 and progress["files_total"] == progress["files_done"] == len(files)
    assert progress["bytes_done"] == progress["bytes_total"] == sum(map(len, files.values()))
    assert api.get(f"/api/v1/datasets/{dataset_id}/").json()["phase"] == "Ready"

    job = SimulatedObject.objects.get(kind="Job", name=run.job_name).body
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert f"--source={source}" in container["args"]
    assert f"--endpoint-url={endpoint}" in container["args"]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    secret = SimulatedObject.objects.get(kind="Secret", name=f"dataset-{payload['name']}-credentials")
    assert token not in json.dumps(secret.body) + secret.secret_data  # stored encrypted
    assert list(secret.body.get("stringData", {})) == [token_env]

    listing = api.get(f"/api/v1/datasets/{dataset_id}/browse/", {"path": "extra"}).json()
    assert listing["files"] == [{"name": "big.bin", "size": len(files["extra/big.bin"])}]
    inspected = api.get(
        f"/api/v1/datasets/{dataset_id}/inspect/", {"path": "", "runtime": "vllm", "gpu_memory_gib": 80}
    ).json()
    assert inspected["layout"]["ok"] and inspected["fit"]["fits"], inspected

    assert api.post(f"/api/v1/datasets/{dataset_id}/prewarm/").status_code == 202
    hit = finished_run(dataset_id, after=run.id)
    assert (hit.status, hit.files_skipped, hit.files_total) == ("Succeeded", len(files), len(files))

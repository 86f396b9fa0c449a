"""The prewarm objects: valid for Kubernetes 1.30 and the newest schema, CPU only, no secrets shown."""

import json

import pytest

from deploy.prewarm import PrewarmSpec, redact_secrets, render_prewarm
from tests.unit.test_render import VERSIONS, validate

S3 = PrewarmSpec(
    dataset="s3-models",
    namespace="inference",
    job_name="prewarm-s3-models-1",
    claim_name="dataset-s3-models",
    cache_size="200Gi",
    image="inference-console:1.0",
    source="s3",
    s3_url="s3://models/llm",
    s3_endpoint="http://minio.storage:9000",
    s3_region="us-east-1",
    s3_path_style=True,
    storage_class="fast-rwx",
)
NFS = PrewarmSpec(
    dataset="nfs-models",
    namespace="inference",
    job_name="prewarm-nfs-models-2",
    claim_name="dataset-nfs-models",
    cache_size="100Gi",
    image="inference-console:1.0",
    source="nfs",
    nfs_server="10.0.0.5",
    nfs_path="/exports/models",
)
CREDS = {"s3_access_key": "AKIAEXAMPLE", "s3_secret_key": "very-secret-value"}
HUB = PrewarmSpec(
    dataset="hub-models",
    namespace="inference",
    job_name="prewarm-hub-models-3",
    claim_name="dataset-hub-models",
    cache_size="50Gi",
    image="inference-console:1.0",
    source="hf",
    hub_repo="THUDM/chatglm2-6b",
    hub_revision="v1.0",
    hub_endpoint="https://hf-mirror.com",
)
HUB_CREDS = {"hub_token": "hf_very_secret_token"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("spec", "credentials"), [(S3, CREDS), (S3, None), (NFS, None), (HUB, HUB_CREDS), (HUB, None)]
)
def test_prewarm_objects_pass_strict_schemas(spec, credentials, version):
    for obj in render_prewarm(spec, credentials=credentials):
        validate(obj, version)


def test_job_requests_no_gpu_and_prefers_cpu_nodes():
    job = render_prewarm(S3, credentials=CREDS)[-1]
    assert job["kind"] == "Job"
    pod = job["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in json.dumps(resources)
    assert resources["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in json.dumps(pod["affinity"])
    preferred = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert preferred["preference"]["matchExpressions"][0]["operator"] == "DoesNotExist"


def test_s3_job_gets_credentials_from_the_secret_only():
    secret, claim, job = render_prewarm(S3, credentials=CREDS)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "dataset-s3-models-credentials"}}]
    assert "very-secret-value" not in json.dumps(job)
    assert secret["stringData"]["AWS_SECRET_ACCESS_KEY"] == "very-secret-value"
    assert "--source=s3://models/llm" in container["args"]
    assert "--path-style" in container["args"]
    assert claim["spec"]["storageClassName"] == "fast-rwx"
    assert claim["spec"]["resources"]["requests"]["storage"] == "200Gi"


def test_nfs_job_mounts_the_export_read_only():
    claim, job = render_prewarm(NFS)
    pod = job["spec"]["template"]["spec"]
    assert {
        "name": "source",
        "nfs": {"server": "10.0.0.5", "path": "/exports/models", "readOnly": True},
    } in pod["volumes"]
    assert "--source=/source" in pod["containers"][0]["args"]
    assert "storageClassName" not in claim["spec"]


def test_redacted_copy_hides_secret_values_and_leaves_the_original():
    objects = render_prewarm(S3, credentials=CREDS)
    shown = redact_secrets(objects)
    assert "very-secret-value" not in json.dumps(shown)
    assert "AKIAEXAMPLE" not in json.dumps(shown)
    assert objects[0]["stringData"]["AWS_SECRET_ACCESS_KEY"] == "very-secret-value"


def test_hub_job_gets_the_token_from_the_secret_only():
    secret, _claim, job = render_prewarm(HUB, credentials={**HUB_CREDS, **CREDS})
    assert secret["stringData"] == {"HF_TOKEN": "hf_very_secret_token"}  # no stale S3 keys
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "dataset-hub-models-credentials"}}]
    assert "hf_very_secret_token" not in json.dumps(job)
    assert container["args"] == [
        "--source=hf://THUDM/chatglm2-6b@v1.0",
        "--dest=/cache",
        "--workers=16",
        "--endpoint-url=https://hf-mirror.com",
    ]
    assert [v["name"] for v in pod["volumes"]] == ["cache"]  # nothing mounted from the source
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert "hf_very_secret_token" not in json.dumps(redact_secrets([secret]))


def test_public_hub_repo_needs_no_secret():
    claim, job = render_prewarm(HUB, credentials={})
    assert "envFrom" not in job["spec"]["template"]["spec"]["containers"][0]
    assert claim["kind"] == "PersistentVolumeClaim"

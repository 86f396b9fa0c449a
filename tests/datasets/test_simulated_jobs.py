"""Jobs on the simulated cluster really run: the prewarm Job copies files with the copier in a
local process, its log is the pod log, its exit code the Job's outcome. Against local folders
(the "NFS server" is this machine) and the S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from django.conf import settings

from deploy.clusters.base import LABEL_MANAGED_BY, MANAGED_BY, PermanentClusterError
from deploy.clusters.simulated import SimulatedCluster
from deploy.clusters.simulated.jobs import alive
from deploy.models import SimulatedObject, SimulatedPod
from deploy.prewarm import LABEL_DATASET, PrewarmSpec, render_prewarm
from tests.stack import wait_for

NS = "inference"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cluster(tmp_path: Path) -> SimulatedCluster:
    return SimulatedCluster(
        nodes_file=str(Path(settings.BASE_DIR) / "deploy" / "simulated_nodes.json"),
        faults_file=str(tmp_path / "faults.json"),
        pull_seconds=0.1,
        load_seconds=0.1,
        poll_seconds=0.1,
        state_dir=str(tmp_path / "state"),
    )


def spec(**overrides) -> PrewarmSpec:
    values = {
        "dataset": "models",
        "namespace": NS,
        "job_name": "prewarm-models-1",
        "claim_name": "dataset-models",
        "cache_size": "10Gi",
        "image": "inference-console:latest",
        "source": "nfs",
        "nfs_server": "127.0.0.1",
        "workers": 4,
    }
    return PrewarmSpec(**{**values, **overrides})


def command_job(name: str, code: str, *, backoff_limit: int = 0, env: list | None = None) -> dict:
    container = {"name": "main", "image": "python", "command": ["python", "-c", code], "env": env or []}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "labels": {LABEL_MANAGED_BY: MANAGED_BY, "test": name}},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def finished(cluster: SimulatedCluster, name: str):
    def check():
        job = cluster.observe_job(NS, name)
        return job if job.finished else None

    return wait_for(check, timeout=60, what=f"job {name} to finish")


def events(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_an_nfs_prewarm_copies_the_export_into_the_claim(cluster, tmp_path):
    export = tmp_path / "export"
    (export / "org" / "model").mkdir(parents=True)
    (export / "org" / "model" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (export / "org" / "model" / "model.safetensors").write_bytes(os.urandom(300_000))

    lines = cluster.apply(render_prewarm(spec(nfs_path=str(export))))

    assert lines == [
        "PersistentVolumeClaim inference/dataset-models: created",
        "Job inference/prewarm-models-1: created",
    ]
    job = finished(cluster, "prewarm-models-1")
    assert job.complete and job.succeeded == 1 and not job.failure_reason
    claim = tmp_path / "state" / "volumes" / NS / "dataset-models"
    assert (claim / "org" / "model" / "model.safetensors").read_bytes() == (
        export / "org" / "model" / "model.safetensors"
    ).read_bytes()
    log = cluster.pod_logs(NS, job.pod, tail_lines=1000)
    kinds = [e["event"] for e in events(log)]
    assert kinds[0] == "plan" and kinds[-1] == "done"
    assert events(log)[-1]["bytes_total"] == 300_000 + len('{"architectures": ["LlamaForCausalLM"]}')
    pod = SimulatedPod.objects.get(name=job.pod)
    assert "nvidia.com/gpu" not in pod.requests and pod.node


def test_a_missing_export_leaves_the_pod_waiting_on_its_mount(cluster, tmp_path):
    cluster.apply(render_prewarm(spec(nfs_path=str(tmp_path / "absent"))))

    job = cluster.observe_job(NS, "prewarm-models-1")

    assert job.found and not job.finished and job.active == 1
    assert job.waiting_reason == "FailedMount"
    assert "absent: No such file or directory" in job.waiting_message


def test_secrets_are_stored_encrypted_and_reach_the_container(cluster):
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": NS},
        "stringData": {"TOKEN": "s3cr3t-value"},
    }
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN"}}}]
    cluster.apply([secret, command_job("echo", "import os; print(len(os.environ['TOKEN']))", env=env)])

    job = finished(cluster, "echo")

    row = SimulatedObject.objects.get(kind="Secret", name="creds")
    assert "s3cr3t-value" not in json.dumps(row.body) and "s3cr3t-value" not in row.secret_data
    assert job.complete and cluster.pod_logs(NS, job.pod).strip() == "12"


def test_a_failing_pod_is_retried_up_to_the_backoff_limit(cluster):
    cluster.apply([command_job("fails", "import sys; print('boom'); sys.exit(3)", backoff_limit=1)])

    job = finished(cluster, "fails")

    assert job.failure_reason == "BackoffLimitExceeded"
    assert job.failed == 2 and job.succeeded == 0 and not job.complete
    assert SimulatedPod.objects.filter(job="fails").count() == 2
    assert cluster.pod_logs(NS, job.pod) == "boom\n"


def test_deleting_a_job_stops_its_process_and_removes_its_pods(cluster, tmp_path):
    cluster.apply([command_job("sleeper", "import time; print('up', flush=True); time.sleep(120)")])
    job = wait_for(
        lambda: (j := cluster.observe_job(NS, "sleeper")).pod_phase == "Running" and j,
        timeout=30,
        what="the sleeper to run",
    )
    pid = int((tmp_path / "state" / "pods" / NS / job.pod / "pid").read_text())
    assert alive(pid)

    cluster.delete_labelled(NS, {"test": "sleeper"}, ("Job",))

    assert not alive(pid)
    assert not cluster.observe_job(NS, "sleeper").found
    assert not SimulatedPod.objects.filter(job="sleeper").exists()
    with pytest.raises(PermanentClusterError):
        cluster.pod_logs(NS, job.pod)


def test_deleting_the_claim_removes_its_folder(cluster, tmp_path):
    cluster.apply(render_prewarm(spec(nfs_path=str(tmp_path))))
    claim = tmp_path / "state" / "volumes" / NS / "dataset-models"
    assert claim.is_dir()

    cluster.delete_labelled(
        NS, {LABEL_MANAGED_BY: MANAGED_BY, LABEL_DATASET: "models"}, ("Job", "PersistentVolumeClaim")
    )

    assert not claim.exists()
    assert not SimulatedObject.objects.filter(namespace=NS).exists()


def test_a_job_template_is_immutable(cluster):
    cluster.apply([command_job("once", "pass")])
    changed = command_job("once", "print(1)")

    with pytest.raises(PermanentClusterError, match="field is immutable"):
        cluster.apply([changed])


def test_a_python_job_runs_with_this_interpreter(cluster):
    cluster.apply([command_job("which", "import sys; print(sys.executable)")])

    job = finished(cluster, "which")

    assert cluster.pod_logs(NS, job.pod).strip() == sys.executable

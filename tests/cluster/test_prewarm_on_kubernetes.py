"""A dataset prewarm (deploy.prewarm.render_prewarm) applied through KubernetesCluster to the real
kube-apiserver v1.20.2, followed with observe_job and removed with delete_labelled.

What the harness does with it (deploy/testenv): the job controller creates the copier pod; a
PVC with no PersistentVolume stays Pending (no provisioner, no default StorageClass), so the
scheduler leaves the pod Unschedulable; with a PV bound to the claim the pod is scheduled and
the kubelet simulator runs it (Running, no container really starts) and finishes it: Succeeded
after 5 s, or Failed at once with the `sim.harness/fail` annotation. No database needed.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from deploy.clusters.base import LABEL_MANAGED_BY, MANAGED_BY
from deploy.clusters.kubernetes import KubernetesCluster
from deploy.observation import JobObservation
from deploy.prewarm import LABEL_DATASET, PrewarmSpec, render_prewarm
from tests import stack

pytestmark = pytest.mark.cluster

# Typically 1-8 s: the simulator syncs every second and runs Job pods for 5 s.
DEADLINE_SECONDS = 60
GPU = "nvidia.com/gpu"
CREDENTIALS = {"s3_access_key": "AKIAHARNESS", "s3_secret_key": "harness-secret-value"}
KINDS = ("Job", "Secret", "PersistentVolumeClaim")


def make_spec(namespace: str, source: str, **overrides: Any) -> PrewarmSpec:
    dataset = f"{source}-models"
    values: dict[str, Any] = {
        "dataset": dataset,
        "namespace": namespace,
        "job_name": f"prewarm-{dataset}-1",
        "claim_name": f"dataset-{dataset}",
        "cache_size": "20Gi",
        "image": "inference-console:test",
        "source": source,
    }
    if source == "s3":
        values.update(
            s3_url="s3://models/llm",
            s3_endpoint="http://minio.storage:9000",
            s3_region="us-east-1",
            s3_path_style=True,
        )
    else:
        values.update(nfs_server="192.0.2.10", nfs_path="/exports/models")
    values.update(overrides)
    return PrewarmSpec(**values)


def labels_of(spec: PrewarmSpec) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_DATASET: spec.dataset}


def wait_until(read, done, *, what: str):
    return stack.wait_until(read, done, timeout=DEADLINE_SECONDS, what=what)


def job_of(cluster: KubernetesCluster, spec: PrewarmSpec) -> Callable[[], JobObservation]:
    return lambda: cluster.observe_job(spec.namespace, spec.job_name)


def remaining(kube_api_client: client.ApiClient, spec: PrewarmSpec) -> dict[str, list[str]]:
    """What is left of the prewarm, by kind (pods found by the job controller's label)."""
    core, batch = client.CoreV1Api(kube_api_client), client.BatchV1Api(kube_api_client)
    selector = ",".join(f"{k}={v}" for k, v in labels_of(spec).items())
    ns = spec.namespace
    left = {
        "Job": batch.list_namespaced_job(ns, label_selector=selector).items,
        "Pod": core.list_namespaced_pod(ns, label_selector=f"job-name={spec.job_name}").items,
        "PersistentVolumeClaim": core.list_namespaced_persistent_volume_claim(
            ns, label_selector=selector
        ).items,
        "Secret": core.list_namespaced_secret(ns, label_selector=selector).items,
    }
    return {kind: [item.metadata.name for item in items] for kind, items in left.items() if items}


def assert_cpu_only(job: client.V1Job) -> None:
    pod = job.spec.template.spec
    for container in pod.containers:
        assert GPU not in (container.resources.requests or {})
        assert GPU not in (container.resources.limits or {})
    node_affinity = pod.affinity.node_affinity
    assert node_affinity.required_during_scheduling_ignored_during_execution is None
    (preferred,) = node_affinity.preferred_during_scheduling_ignored_during_execution
    assert preferred.preference.match_expressions[0].key == "nvidia.com/gpu.count"
    assert preferred.preference.match_expressions[0].operator == "DoesNotExist"


def test_s3_prewarm_is_applied_as_rendered_and_waits_for_its_volume(cluster, kube_api_client, namespace):
    spec = make_spec(namespace, "s3")
    objects = render_prewarm(spec, credentials=CREDENTIALS)

    lines = cluster.apply(objects)

    assert lines == [
        f"Secret {namespace}/dataset-s3-models-credentials: created",
        f"PersistentVolumeClaim {namespace}/dataset-s3-models: created",
        f"Job {namespace}/prewarm-s3-models-1: created",
    ]
    core, batch = client.CoreV1Api(kube_api_client), client.BatchV1Api(kube_api_client)
    # stringData is write-only: the server stores it base64-encoded in data.
    secret = core.read_namespaced_secret(spec.secret_name, namespace)
    assert {k: base64.b64decode(v).decode() for k, v in secret.data.items()} == {
        "AWS_ACCESS_KEY_ID": "AKIAHARNESS",
        "AWS_SECRET_ACCESS_KEY": "harness-secret-value",
    }
    claim = core.read_namespaced_persistent_volume_claim(spec.claim_name, namespace)
    assert claim.spec.access_modes == ["ReadWriteMany"]
    assert claim.spec.resources.requests == {"storage": "20Gi"}
    job = batch.read_namespaced_job(spec.job_name, namespace)
    assert job.metadata.labels[LABEL_DATASET] == "s3-models"
    assert_cpu_only(job)
    container = job.spec.template.spec.containers[0]
    assert container.env_from[0].secret_ref.name == spec.secret_name
    assert "--source=s3://models/llm" in container.args and "--path-style" in container.args
    assert job.spec.template.spec.volumes[0].persistent_volume_claim.claim_name == spec.claim_name

    # No PV for the claim and no provisioner: the job controller's pod is not scheduled, and
    # observe_job says why, as the scheduler put it.
    observed = wait_until(
        job_of(cluster, spec),
        lambda j: j.waiting_reason == "Unschedulable" and j.active == 1,
        what="the prewarm pod to be reported Unschedulable",
    )
    assert observed.found and not observed.finished
    assert observed.pod.startswith(f"{spec.job_name}-") and observed.pod_phase == "Pending"
    assert "unbound immediate PersistentVolumeClaims" in observed.waiting_message
    assert (observed.succeeded, observed.failed) == (0, 0)

    # Applying the same objects again changes nothing the console wrote, Secret (stringData)
    # included. 1.20 stores a new PVC without its defaulted status.phase and writes "Pending"
    # in on the first update, so that one apply bumps the PVC's resourceVersion (reported
    # "configured") with identical content; from then on every apply is a no-op.
    before = {o["kind"]: _content(_read(kube_api_client, spec, o["kind"])) for o in objects}
    first = cluster.apply(render_prewarm(spec, credentials=CREDENTIALS))
    assert first[0] == f"Secret {namespace}/dataset-s3-models-credentials: unchanged"
    assert first[2] == f"Job {namespace}/prewarm-s3-models-1: unchanged"
    assert {o["kind"]: _content(_read(kube_api_client, spec, o["kind"])) for o in objects} == before
    versions = {o["kind"]: _read(kube_api_client, spec, o["kind"]).metadata.resource_version for o in objects}
    assert cluster.apply(render_prewarm(spec, credentials=CREDENTIALS)) == [
        f"Secret {namespace}/dataset-s3-models-credentials: unchanged",
        f"PersistentVolumeClaim {namespace}/dataset-s3-models: unchanged",
        f"Job {namespace}/prewarm-s3-models-1: unchanged",
    ]
    assert {
        o["kind"]: _read(kube_api_client, spec, o["kind"]).metadata.resource_version for o in objects
    } == versions

    # The one delete the prewarm does removes the Job, its pod, the claim and the Secret.
    cluster.delete_labelled(namespace, labels_of(spec), KINDS)
    wait_until(lambda: remaining(kube_api_client, spec), lambda left: not left, what="the prewarm to be gone")
    assert cluster.observe_job(namespace, spec.job_name) == JobObservation(found=False)
    cluster.delete_labelled(namespace, labels_of(spec), KINDS)  # nothing left to delete is fine


def test_nfs_prewarm_on_a_bound_claim_runs_to_completion(cluster, kube_api_client, namespace, bound_volume):
    spec = make_spec(namespace, "nfs")
    bound_volume(namespace, spec.claim_name, size="20Gi")
    objects = render_prewarm(spec)

    assert cluster.apply(objects) == [
        f"PersistentVolumeClaim {namespace}/dataset-nfs-models: created",
        f"Job {namespace}/prewarm-nfs-models-1: created",
    ]
    job = client.BatchV1Api(kube_api_client).read_namespaced_job(spec.job_name, namespace)
    assert_cpu_only(job)
    source = job.spec.template.spec.volumes[1]
    assert (source.nfs.server, source.nfs.path, source.nfs.read_only) == (
        "192.0.2.10",
        "/exports/models",
        True,
    )
    assert job.spec.template.spec.containers[0].env_from is None  # no credentials, no Secret

    # The simulator runs the pod (Running) and ends it Succeeded after 5 s; the Job completes.
    seen_phases: list[str] = []

    def read() -> JobObservation:
        observed = cluster.observe_job(namespace, spec.job_name)
        seen_phases.append(observed.pod_phase)
        return observed

    observed = wait_until(read, lambda j: j.complete, what="the prewarm Job to complete")
    assert "Running" in seen_phases
    assert observed.found and observed.finished and not observed.failure_reason
    assert (observed.active, observed.succeeded, observed.failed) == (0, 1, 0)
    assert observed.pod.startswith(f"{spec.job_name}-") and observed.pod_phase == "Succeeded"
    assert observed.waiting_reason == ""
    pod = client.CoreV1Api(kube_api_client).read_namespaced_pod(observed.pod, namespace)
    # Only a preference: the scheduler's other scores could outweigh it on a busier cluster,
    # not on the harness's three idle nodes.
    assert pod.spec.node_name == "cpu-node-1"
    claim = client.CoreV1Api(kube_api_client).read_namespaced_persistent_volume_claim(
        spec.claim_name, namespace
    )
    assert claim.status.phase == "Bound"

    # A finished Job re-applied as rendered is left alone (its template is immutable anyway).
    assert cluster.apply(render_prewarm(spec)) == [
        f"PersistentVolumeClaim {namespace}/dataset-nfs-models: unchanged",
        f"Job {namespace}/prewarm-nfs-models-1: unchanged",
    ]

    cluster.delete_labelled(namespace, labels_of(spec), KINDS)
    wait_until(lambda: remaining(kube_api_client, spec), lambda left: not left, what="the prewarm to be gone")


def test_failing_copier_fails_the_job_with_the_controllers_reason(
    cluster, kube_api_client, namespace, bound_volume
):
    spec = make_spec(namespace, "nfs")
    bound_volume(namespace, spec.claim_name, size="20Gi")
    claim, job = copy.deepcopy(render_prewarm(spec))
    # The simulator fails the container (exit 1, restartPolicy Never: pod Failed); no retries,
    # so the job controller gives up on the first failure instead of after 10+20+40 s back-off.
    job["spec"]["backoffLimit"] = 0
    job["spec"]["template"]["metadata"]["annotations"] = {"sim.harness/fail": "Error"}
    cluster.apply([claim, job])

    observed = wait_until(job_of(cluster, spec), lambda j: j.finished, what="the prewarm Job to fail")

    assert observed.failure_reason == "BackoffLimitExceeded"
    assert "backoff limit" in observed.failure_message
    assert not observed.complete and (observed.succeeded, observed.failed) == (0, 1)
    assert observed.pod_phase == "Failed" and observed.waiting_reason == ""


def test_changed_credentials_replace_the_secret(cluster, kube_api_client, namespace):
    spec = make_spec(namespace, "s3")
    (secret,) = [o for o in render_prewarm(spec, credentials=CREDENTIALS) if o["kind"] == "Secret"]
    cluster.apply([secret])

    # A rotated access key and no secret key any more: the Secret holds exactly that, since
    # the apply owns data (a key dropped from a stringData apply would linger in data).
    (rotated,) = [
        o for o in render_prewarm(spec, credentials={"s3_access_key": "AKIAROTATED"}) if o["kind"] == "Secret"
    ]
    assert cluster.apply([rotated]) == [f"Secret {namespace}/dataset-s3-models-credentials: configured"]

    data = client.CoreV1Api(kube_api_client).read_namespaced_secret(spec.secret_name, namespace).data
    assert {k: base64.b64decode(v).decode() for k, v in data.items()} == {"AWS_ACCESS_KEY_ID": "AKIAROTATED"}


def test_missing_job_is_not_found(cluster, namespace):
    assert cluster.observe_job(namespace, "prewarm-nothing-1") == JobObservation(found=False)
    # Nothing labelled, not even the namespace: nothing to do, no error.
    cluster.delete_labelled(namespace, {LABEL_DATASET: "nothing"}, KINDS)


def test_delete_labelled_leaves_other_datasets_alone(cluster, kube_api_client, namespace):
    ours = make_spec(namespace, "s3")
    theirs = make_spec(
        namespace, "s3", dataset="other-models", job_name="prewarm-other-1", claim_name="dataset-other"
    )
    cluster.apply(
        render_prewarm(ours, credentials=CREDENTIALS) + render_prewarm(theirs, credentials=CREDENTIALS)
    )

    cluster.delete_labelled(namespace, labels_of(ours), KINDS)

    wait_until(lambda: remaining(kube_api_client, ours), lambda left: not left, what="one prewarm to be gone")
    left = remaining(kube_api_client, theirs)
    assert {kind: names for kind, names in left.items() if kind != "Pod"} == {
        "Job": ["prewarm-other-1"],
        "PersistentVolumeClaim": ["dataset-other"],
        "Secret": ["dataset-other-credentials"],
    }
    with pytest.raises(ValueError, match="at least one label"):
        cluster.delete_labelled(namespace, {}, KINDS)  # would select everything in the namespace


def _read(kube_api_client: client.ApiClient, spec: PrewarmSpec, kind: str) -> Any:
    core, batch = client.CoreV1Api(kube_api_client), client.BatchV1Api(kube_api_client)
    if kind == "Secret":
        return core.read_namespaced_secret(spec.secret_name, spec.namespace)
    if kind == "PersistentVolumeClaim":
        return core.read_namespaced_persistent_volume_claim(spec.claim_name, spec.namespace)
    return batch.read_namespaced_job(spec.job_name, spec.namespace)


def _content(obj: Any) -> tuple[Any, ...]:
    """What an apply could change: labels, annotations and spec (a Secret's type and data)."""
    metadata = obj.metadata
    body = (obj.type, obj.data) if isinstance(obj, client.V1Secret) else obj.spec
    return metadata.labels, metadata.annotations, body

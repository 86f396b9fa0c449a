"""The reconcile path without a worker: tasks called as the worker would call them, against
the simulated cluster (transient errors: a kube API port that refuses connections on 127.0.0.1)."""

import pytest
import yaml

from console.celery import app as celery_app
from deploy import clusters
from deploy.clusters import get_cluster
from deploy.tasks import reconcile_service, repair_drift
from services import phases
from services.actions import service_create
from services.models import InferenceService
from tests.datasets.modeltrees import write_tiny_llama
from tests.stack import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def simulated(settings, tmp_path):
    settings.CLUSTER_BACKEND = "simulated"
    settings.SIMULATED_CLUSTER_FAULTS = str(tmp_path / "faults.json")
    settings.SIMULATED_STATE_DIR = str(tmp_path / "simulated")
    clusters._cluster_for.cache_clear()
    yield get_cluster()
    clusters._cluster_for.cache_clear()


@pytest.fixture
def eager(monkeypatch):
    """Tasks enqueued by repair_drift run inline, so the test sees their effect."""
    monkeypatch.setattr(celery_app.conf, "task_always_eager", True)
    monkeypatch.setattr(celery_app.conf, "task_eager_propagates", True)


@pytest.fixture
def service(user, queue, dataset):
    return service_create(owner=user, name="chat", queue=queue, dataset=dataset, model_path="m")


def test_reconcile_applies_and_moves_to_deploying(simulated, service):
    reconcile_service(service.id)
    service.refresh_from_db()
    assert service.phase in {phases.DEPLOYING, phases.STARTING}
    assert service.applied_revision
    assert simulated.observe("inference", "chat").found


def test_reconcile_waits_for_a_dataset_that_is_not_ready(simulated, service, dataset):
    dataset.phase = dataset.Phase.PREWARMING
    dataset.save()
    reconcile_service(service.id)
    service.refresh_from_db()
    assert (service.phase, service.reason) == (phases.PREWARMING, "WaitingForDataset")
    assert not simulated.observe("inference", "chat").found


def test_prewarm_releases_waiting_services(
    simulated, service, dataset, eager, django_capture_on_commit_callbacks, tmp_path
):
    from datasets.prewarm import sync_running_prewarms
    from datasets.tasks import prewarm_dataset

    export = tmp_path / "export"  # on the simulated cluster, the NFS server is this machine
    write_tiny_llama(export / "m")
    dataset.phase = dataset.Phase.PENDING
    dataset.nfs_path = str(export)
    dataset.save()
    reconcile_service(service.id)
    service.refresh_from_db()
    assert service.phase == phases.PREWARMING
    with django_capture_on_commit_callbacks(execute=True):
        prewarm_dataset(dataset.id)

        def warm() -> bool:
            sync_running_prewarms()  # what the watcher does every second
            dataset.refresh_from_db()
            return dataset.phase == dataset.Phase.READY

        wait_for(warm, timeout=60, what="the prewarm to finish")
    service.refresh_from_db()
    assert service.phase in {phases.DEPLOYING, phases.STARTING}
    run = dataset.prewarm_runs.get()
    assert (run.status, run.files_total, run.bytes_done) == ("Succeeded", len(dataset.files), run.bytes_total)
    assert any(path == "m/config.json" for path, _ in dataset.files)  # browsable from now on


def test_a_failed_prewarm_fails_the_services_waiting_for_it(
    simulated, service, dataset, eager, django_capture_on_commit_callbacks, tmp_path
):
    from datasets.prewarm import sync_running_prewarms
    from datasets.tasks import prewarm_dataset

    (tmp_path / "empty-export").mkdir()
    dataset.phase = dataset.Phase.PENDING
    dataset.nfs_path = str(tmp_path / "empty-export")
    dataset.save()
    reconcile_service(service.id)
    with django_capture_on_commit_callbacks(execute=True):
        prewarm_dataset(dataset.id)

        def failed() -> bool:
            sync_running_prewarms()
            dataset.refresh_from_db()
            return dataset.phase == dataset.Phase.FAILED

        wait_for(failed, timeout=60, what="the prewarm to fail")
    service.refresh_from_db()
    assert (service.phase, service.reason) == (phases.FAILED, "PrewarmFailed")
    assert "EmptySource" in service.message and "nfs-models" in service.message
    assert not simulated.observe("inference", "chat").found  # it never took a GPU


def test_repair_drift_reapplies_objects_deleted_behind_our_back(simulated, service, eager):
    reconcile_service(service.id)
    simulated.delete_service("inference", "chat")
    assert not simulated.observe("inference", "chat").found
    repair_drift()
    assert simulated.observe("inference", "chat").found
    assert (
        InferenceService.objects.get(id=service.id).events.filter(kind="cluster", reason="Applied").count()
        == 2
    )


def test_repair_drift_fails_a_service_stuck_past_its_deadline(simulated, service, settings):
    settings.SIMULATED_LOAD_SECONDS = 3600  # the model never finishes loading in this test
    clusters._cluster_for.cache_clear()
    reconcile_service(service.id)
    settings.SERVICE_START_DEADLINE_SECONDS = 0
    repair_drift()
    service.refresh_from_db()
    assert (service.phase, service.reason) == (phases.FAILED, "StartTimeout")
    assert "Not running" in service.message
    repair_drift()  # what the cluster says next does not undo a console-decided failure
    service.refresh_from_db()
    assert service.reason == "StartTimeout"


def test_repair_drift_requeues_a_pending_service_whose_task_was_lost(simulated, service, eager):
    InferenceService.objects.filter(id=service.id).update(created_at=service.created_at.replace(year=2020))
    repair_drift()
    service.refresh_from_db()
    assert service.applied_revision


def _kubeconfig(tmp_path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


def test_transient_cluster_errors_are_retried_and_lose_nothing(
    settings, tmp_path, service, eager, monkeypatch
):
    settings.CLUSTER_BACKEND = "kubernetes"
    settings.KUBECONFIG = _kubeconfig(tmp_path, "http://127.0.0.1:1")  # connection refused
    clusters._cluster_for.cache_clear()
    monkeypatch.setattr(celery_app.conf, "task_eager_propagates", False)
    attempts = []
    real_apply = reconcile_service.run

    def counting(service_id):
        attempts.append(service_id)
        return real_apply(service_id)

    monkeypatch.setattr(reconcile_service, "run", counting)
    result = reconcile_service.apply(args=[service.id])
    clusters._cluster_for.cache_clear()
    assert len(attempts) > 1, "a transient error must be retried"
    assert result.failed()
    service.refresh_from_db()
    assert service.phase == phases.PENDING  # not Failed: repair_drift will try again later
    assert not service.applied_revision


def test_permanent_cluster_errors_fail_the_service_with_the_reason(settings, tmp_path, service):
    settings.CLUSTER_BACKEND = "kubernetes"
    settings.KUBECONFIG = str(tmp_path / "missing-kubeconfig")
    clusters._cluster_for.cache_clear()
    reconcile_service(service.id)
    clusters._cluster_for.cache_clear()
    service.refresh_from_db()
    assert (service.phase, service.reason) == (phases.FAILED, "ApplyFailed")
    assert "cannot load the Kubernetes configuration" in service.message


def test_pod_logs_through_api_and_page(simulated, service, api, client, user):
    reconcile_service(service.id)
    service.refresh_from_db()
    pod = service.observed["pods"][0]["name"]
    body = api.get(f"/api/v1/services/{service.id}/logs/").json()
    assert body["pod"] == pod
    assert "simulated cluster" in body["text"]
    assert body["error"] == ""
    wrong = api.get(f"/api/v1/services/{service.id}/logs/?pod=someone-elses-pod")
    assert wrong.status_code == 400
    assert "not one of this service's pods" in wrong.json()["pod"][0]
    client.force_login(user)
    page = client.get(f"/services/{service.id}/logs/?pod={pod}")
    assert "simulated cluster" in page.content.decode()
    assert client.get(f"/services/{service.id}/logs/?pod=nope").status_code == 404

"""Datasets through the REST API without a worker: validation, what is never shown back, the
browse and inspect endpoints' answers to bad requests, delete rules."""

import pytest

from console.models import AuditEvent
from datasets.models import Dataset
from services import phases
from services.actions import service_create
from services.models import InferenceService
from tests.datasets.modeltrees import write_tiny_llama

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_dataset(user, tmp_path):
    write_tiny_llama(tmp_path / "models" / "org" / "llama")
    return Dataset.objects.create(
        name="local-models", kind=Dataset.Kind.LOCAL, local_path=str(tmp_path / "models"), owner=user
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"kind": "nfs", "nfs_server": "bad host!", "nfs_path": "/exports"}, "nfs_server"),
        ({"kind": "nfs", "nfs_server": "10.0.0.5", "nfs_path": "exports"}, "nfs_path"),
        ({"kind": "nfs", "nfs_server": "10.0.0.5"}, "nfs_path"),
        ({"kind": "s3"}, "s3_bucket"),
        ({"kind": "s3", "s3_bucket": "b", "s3_secret_key": "x"}, "s3_access_key"),
        ({"kind": "s3", "s3_bucket": "b", "s3_access_key": "x"}, "s3_secret_key"),
        ({"kind": "local", "local_path": "/a/../b"}, "local_path"),
        ({"kind": "nfs", "nfs_server": "nfs", "nfs_path": "/x", "cache_size": "lots"}, "cache_size"),
    ],
)
def test_bad_datasets_are_400_with_the_field_and_create_nothing(api, payload, field):
    response = api.post("/api/v1/datasets/", {"name": "d", **payload}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Dataset.objects.exists()


def test_a_missing_field_of_the_kind_is_named_in_words():
    from datasets.forms import DatasetForm

    form = DatasetForm(data={"name": "d", "kind": "s3"})
    assert not form.is_valid()
    assert form.errors["s3_bucket"] == ["Give the S3 bucket: a dataset of kind S3 needs it."]
    # The page shows the form by sections, one kind's at a time: every field is in exactly one.
    placed = [name for _title, _kinds, names in DatasetForm.SECTIONS for name in names]
    assert sorted(placed) == sorted(DatasetForm().fields)


def test_hosts_and_ips_are_accepted_as_nfs_servers(api):
    for i, server in enumerate(["10.0.0.5", "nfs.example.com", "fd00::5", "filer-1"]):
        response = api.post(
            "/api/v1/datasets/",
            {"name": f"d{i}", "kind": "nfs", "nfs_server": server, "nfs_path": "/exports"},
            format="json",
        )
        assert response.status_code == 201, (server, response.content)


def test_browse_and_inspect_answer_bad_requests_with_400(api, local_dataset):
    url = f"/api/v1/datasets/{local_dataset.id}"
    assert api.get(f"{url}/browse/", {"path": "org"}).json()["folders"] == ["llama"]
    for params, field in [
        ({"path": "a\x00b"}, "path"),
        ({"path": "../etc"}, "path"),
        ({"path": "absent"}, "path"),
    ]:
        response = api.get(f"{url}/browse/", params)
        assert response.status_code == 400 and field in response.json(), (params, response.content)
    response = api.get(f"{url}/inspect/", {"path": "org/llama", "runtime": "bogus"})
    assert response.status_code == 400 and "runtime" in response.json()
    response = api.get(f"{url}/inspect/", {"path": "org/llama", "gpu_count": "two"})
    assert response.status_code == 400 and "gpu_count" in response.json()
    fine = api.get(
        f"{url}/inspect/", {"path": "org/llama", "runtime": "vllm", "gpu_type": "", "gpu_memory_gib": 24}
    )
    assert fine.status_code == 200 and fine.json()["layout"]["ok"] and fine.json()["fit"]["fits"]


def test_a_dataset_in_use_cannot_be_deleted(api, user, queue, local_dataset):
    service = service_create(
        owner=user, name="chat", queue=queue, dataset=local_dataset, model_path="org/llama"
    )
    response = api.delete(f"/api/v1/datasets/{local_dataset.id}/")
    assert response.status_code == 400 and "Delete the services" in str(response.json())
    service.phase = phases.DELETED
    service.save()
    response = api.delete(f"/api/v1/datasets/{local_dataset.id}/")
    assert response.status_code == 400 and "keep their history" in str(response.json())
    assert Dataset.objects.filter(id=local_dataset.id).exists()
    assert not AuditEvent.objects.filter(object_type="dataset").exists()  # refused: nothing recorded


def test_deleting_a_dataset_is_recorded_in_the_audit_log(api, user, local_dataset):
    response = api.delete(f"/api/v1/datasets/{local_dataset.id}/")
    assert response.status_code == 204
    assert not Dataset.objects.filter(id=local_dataset.id).exists()
    event = AuditEvent.objects.get(object_type="dataset")
    assert (event.action, event.object_id, event.object_repr) == (
        "delete",
        str(local_dataset.id),
        "local-models",
    )
    assert (event.actor, event.via) == (user, "api")


@pytest.fixture
def s3_dataset(user):
    # Saved directly: dataset_create would check the (unreachable) endpoint first.
    dataset = Dataset(
        name="s3-models", kind=Dataset.Kind.S3, s3_endpoint="http://127.0.0.1:9", s3_bucket="b", owner=user
    )
    dataset.set_credentials({"s3_access_key": "AKIAEXAMPLE", "s3_secret_key": "very-secret-value"})
    dataset.save()
    return dataset


def test_editing_a_dataset_never_shows_its_secret_and_a_description_needs_no_storage_call(
    api, client, user, s3_dataset
):
    client.force_login(user)
    page = client.get(f"/datasets/{s3_dataset.id}/edit/").content.decode()
    assert "very-secret-value" not in page and "AKIAEXAMPLE" not in page
    assert "very-secret-value" not in str(api.get(f"/api/v1/datasets/{s3_dataset.id}/").json())
    # The endpoint (port 9 on 127.0.0.1) refuses connections: only a source change would notice.
    response = api.patch(f"/api/v1/datasets/{s3_dataset.id}/", {"description": "weights"}, format="json")
    assert response.status_code == 200, response.content
    moved = api.patch(f"/api/v1/datasets/{s3_dataset.id}/", {"s3_prefix": "other"}, format="json")
    assert moved.status_code == 400 and "s3_endpoint" in moved.json()
    s3_dataset.refresh_from_db()
    assert (s3_dataset.description, s3_dataset.s3_prefix) == ("weights", "")
    assert s3_dataset.credentials()["s3_secret_key"] == "very-secret-value"  # kept, not shown


def test_a_prewarm_that_never_starts_fails_with_the_reason(settings, user, tmp_path):
    from datasets.prewarm import start_prewarm, sync_running_prewarms
    from deploy import clusters

    settings.SIMULATED_STATE_DIR = str(tmp_path / "simulated")
    settings.PREWARM_START_DEADLINE_SECONDS = 0
    clusters._cluster_for.cache_clear()
    dataset = Dataset.objects.create(
        name="gone",
        kind=Dataset.Kind.NFS,
        nfs_server="127.0.0.1",
        nfs_path=str(tmp_path / "absent"),
        owner=user,
    )
    run = start_prewarm(dataset)
    sync_running_prewarms()
    run.refresh_from_db()
    dataset.refresh_from_db()
    clusters._cluster_for.cache_clear()
    assert (run.status, run.reason) == ("Failed", "FailedMount")
    assert "did not start within 0 s" in run.message and "absent" in run.message
    assert dataset.phase == Dataset.Phase.FAILED


def test_the_progress_panel_polls_fast_while_copying_then_slowly(client, user, local_dataset):
    """A dataset whose prewarm task has not run yet has no run row: the page must poll anyway, or
    it would never show the prewarm starting (seen on a loaded machine)."""
    client.force_login(user)
    url = f"/datasets/{local_dataset.id}/"
    assert local_dataset.phase == Dataset.Phase.PENDING
    assert 'hx-trigger="every 1s"' in client.get(url).content.decode()
    Dataset.objects.filter(id=local_dataset.id).update(phase=Dataset.Phase.READY)
    assert "hx-trigger" not in client.get(url).content.decode()  # a node path: nothing to follow
    Dataset.objects.filter(id=local_dataset.id).update(kind=Dataset.Kind.NFS, nfs_server="nfs", nfs_path="/x")
    page = client.get(url).content.decode()  # copied and done: a prewarm may start elsewhere
    assert 'hx-trigger="every 15s"' in page and 'hx-trigger="every 1s"' not in page


def test_the_datasets_list_shows_each_copy_and_its_services_in_a_fixed_number_of_queries(
    client, user, queue, local_dataset, django_assert_max_num_queries
):
    from datasets.models import PrewarmRun

    runs = [
        (PrewarmRun.Status.SUCCEEDED, 1000),
        (PrewarmRun.Status.SUCCEEDED, 3 * 2**30),
        (PrewarmRun.Status.FAILED, 7),
    ]
    for status, size in runs:  # the last complete copy counts, not a later failed run
        PrewarmRun.objects.create(
            dataset=local_dataset, job_name="j", status=status, bytes_total=size, files_total=4
        )
    for name in ("chat", "old"):
        service_create(owner=user, name=name, queue=queue, dataset=local_dataset, model_path="org/llama")
    InferenceService.objects.filter(name="old").update(phase=phases.DELETED)
    for i in range(5):
        Dataset.objects.create(name=f"spare-{i}", kind=Dataset.Kind.PVC, pvc_name="models", owner=user)
    client.force_login(user)

    with django_assert_max_num_queries(6):  # session, user, the list: not one per dataset
        page = client.get("/datasets/").content.decode()
    row = page.split("local-models</a>")[1].split("</tr>")[0]
    assert '<td data-testid="dataset-copy">3.0 GiB · 4 files</td>' in row
    assert '<td data-testid="dataset-services">1</td>' in row
    spare = page.split("spare-0</a>")[1].split("</tr>")[0]
    assert (
        '<td data-testid="dataset-copy">—</td>' in spare
        and '<td data-testid="dataset-services">0</td>' in spare
    )

"""Issue 4's rest: editing flavors (page and PUT/PATCH /api/v1/flavors/<name>/) re-applies the
Kueue objects of the queues that use them; node taints reach the service's pods; a LocalQueue
per team namespace; usage samples and the queue page's chart."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from console.celery import app as celery_app
from deploy import clusters
from deploy.kueue import NAMESPACE_LABEL
from queues.actions import flavor_create, priority_class_create, priority_class_update, queue_create
from queues.kueue import queue_objects
from queues.models import Queue, QueueUsageSample, ResourceFlavor, Team
from queues.usage import prune_usage_samples, sample_queue_usage
from services import phases
from services.models import InferenceService
from services.spec import service_spec
from tests.web.test_queue_pages import field_errors

pytestmark = pytest.mark.django_db

H100 = "NVIDIA-H100"
TAINT = {"key": "dedicated", "value": "h100", "effect": "NoSchedule"}


@pytest.fixture
def eager(monkeypatch, settings, tmp_path):
    """apply_queue runs in-process when the transaction commits, against the simulated cluster
    (which serves no Kueue kinds: the queue ends NotApplied, with the time it was tried)."""
    monkeypatch.setattr(celery_app.conf, "task_always_eager", True)
    settings.SIMULATED_STATE_DIR = str(tmp_path)
    clusters._cluster_for.cache_clear()
    yield
    clusters._cluster_for.cache_clear()


@pytest.fixture
def h100(db):
    return flavor_create(name="h100", node_labels={"nvidia.com/gpu.product": H100})


@pytest.fixture
def h100_queue(h100):
    return queue_create(name="h100-queue", flavors=[{"flavor": h100, "gpus": 8}])


def state(queue: Queue) -> tuple[str, str]:
    queue.refresh_from_db()
    return queue.kueue_state, queue.kueue_message


# --- REST ---------------------------------------------------------------------------------


def test_patch_a_flavor_reapplies_the_queues_using_it(
    admin_api, h100, h100_queue, eager, django_capture_on_commit_callbacks
):
    other = queue_create(name="cpu-queue", gpu_quota=0)  # default flavor: not affected
    Queue.objects.filter(id__in=[h100_queue.id, other.id]).update(kueue_state=Queue.KueueState.APPLIED)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_api.patch(
            "/api/v1/flavors/h100/", {"node_taints": [TAINT], "description": "H100 nodes"}, format="json"
        )
    assert response.status_code == 200, response.content
    assert response.json()["node_taints"] == [TAINT]
    assert ResourceFlavor.objects.get(name="h100").node_taints == [TAINT]
    # Marked Pending in the same transaction; one apply per dependent queue, after commit.
    assert state(h100_queue)[0] == Queue.KueueState.PENDING
    assert state(other)[0] == Queue.KueueState.APPLIED
    assert len(callbacks) == 1

    for callback in callbacks:
        callback()
    kueue_state, message = state(h100_queue)
    assert kueue_state == Queue.KueueState.NOT_APPLIED and "Kueue objects not applied" in message
    h100_queue.refresh_from_db()
    assert h100_queue.kueue_applied_at is not None
    # And what would be applied carries the taint.
    flavor_obj = next(o for o in queue_objects(h100_queue) if o["kind"] == "ResourceFlavor")
    assert flavor_obj["spec"]["nodeTaints"] == [TAINT]


def test_put_replaces_the_flavor(admin_api, h100):
    body = {
        "name": "h100",
        "description": "",
        "node_labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "node_taints": [],
    }
    response = admin_api.put("/api/v1/flavors/h100/", body, format="json")
    assert response.status_code == 200, response.content
    h100.refresh_from_db()
    assert h100.node_labels == body["node_labels"] and h100.tolerations == body["tolerations"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"node_taints": [{"key": "dedicated", "effect": "Sometimes"}]}, "node_taints", "effect 'Sometimes'"),
        ({"node_taints": "dedicated=h100:NoSchedule"}, "node_taints", "list"),
        ({"node_labels": {"bad key!": "x"}}, "node_labels", "not a valid node label key"),
        ({"tolerations": [{"key": "a", "operator": "Maybe"}]}, "tolerations", "Equal or Exists"),
        ({"name": "h200"}, "name", "Fixed once created"),
    ],
)
def test_bad_flavor_changes_are_400_with_the_field_and_change_nothing(
    admin_api, h100, h100_queue, body, field, words
):
    Queue.objects.filter(id=h100_queue.id).update(kueue_state=Queue.KueueState.APPLIED)
    response = admin_api.patch("/api/v1/flavors/h100/", body, format="json")
    assert response.status_code == 400, response.content
    assert words in " ".join(map(str, response.json()[field]))
    stored = ResourceFlavor.objects.get(id=h100.id)
    assert (stored.name, stored.node_labels, stored.node_taints, stored.tolerations) == (
        "h100",
        {"nvidia.com/gpu.product": H100},
        [],
        [],
    )
    assert state(h100_queue)[0] == Queue.KueueState.APPLIED  # no re-apply for a refused change


def test_only_staff_change_flavors(api, h100):
    assert api.patch("/api/v1/flavors/h100/", {"description": "mine"}, format="json").status_code == 403
    assert api.get("/api/v1/flavors/h100/").json()["node_taints"] == []


def test_priority_class_changes_reapply_every_queue(h100_queue, django_capture_on_commit_callbacks):
    other = queue_create(name="cpu-queue", gpu_quota=0)
    Queue.objects.update(kueue_state=Queue.KueueState.APPLIED)
    with django_capture_on_commit_callbacks(execute=False) as created:
        urgent = priority_class_create(name="urgent", value=1000)
    assert len(created) == 2
    Queue.objects.update(kueue_state=Queue.KueueState.APPLIED)
    with django_capture_on_commit_callbacks(execute=False) as changed:
        priority_class_update(priority_class=urgent, value=2000)
    assert len(changed) == 2
    assert {state(q)[0] for q in (h100_queue, other)} == {Queue.KueueState.PENDING}
    classes = [o for o in queue_objects(other) if o["kind"] == "WorkloadPriorityClass"]
    assert [(c["metadata"]["name"], c["value"]) for c in classes] == [("urgent", 2000)]


# --- the edit page ------------------------------------------------------------------------


def test_the_edit_page_shows_and_saves_taints(
    client, admin_user, h100, h100_queue, eager, django_capture_on_commit_callbacks
):
    client.force_login(admin_user)
    page = client.get("/queues/flavors/h100/edit/").content.decode()
    assert "nvidia.com/gpu.product=NVIDIA-H100" in page and 'data-testid="kueue-h100-queue"' in page

    bad = client.post(
        "/queues/flavors/h100/edit/",
        {"description": "", "node_labels": f"nvidia.com/gpu.product={H100}", "node_taints": "dedicated=h100"},
    )
    assert bad.status_code == 200
    assert "write key=value:Effect" in field_errors(bad.content.decode(), "node_taints")
    wrong_effect = client.post(
        "/queues/flavors/h100/edit/",
        {"node_labels": f"nvidia.com/gpu.product={H100}", "node_taints": "dedicated=h100:Sometimes"},
    )
    assert "must be NoSchedule, PreferNoSchedule or NoExecute" in field_errors(
        wrong_effect.content.decode(), "node_taints"
    )
    assert ResourceFlavor.objects.get(id=h100.id).node_taints == []

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/queues/flavors/h100/edit/",
            {"node_labels": f"nvidia.com/gpu.product={H100}", "node_taints": "dedicated=h100:NoSchedule"},
        )
    assert response.status_code == 302
    assert ResourceFlavor.objects.get(id=h100.id).node_taints == [TAINT]
    page = client.get(response["Location"]).content.decode()
    assert "dedicated=h100:NoSchedule" in page
    assert 'data-testid="kueue-state-h100-queue">Not applied (no Kueue)' in page  # eager apply ran
    assert "hx-trigger" not in page.split('id="flavor-queues"')[1].split(">")[0]  # done: no polling


def test_the_edit_page_polls_while_a_queue_is_being_applied(client, admin_user, h100, h100_queue):
    client.force_login(admin_user)
    Queue.objects.filter(id=h100_queue.id).update(kueue_state=Queue.KueueState.PENDING)
    partial = client.get("/queues/flavors/h100/queues/").content.decode()
    assert 'hx-trigger="every 2s"' in partial and ">Pending<" in partial


def test_users_cannot_edit_flavors(client, user, h100):
    client.force_login(user)
    response = client.post("/queues/flavors/h100/edit/", {"node_taints": "a:NoSchedule"})
    assert response.status_code == 302 and "/login" in response["Location"]
    assert ResourceFlavor.objects.get(id=h100.id).node_taints == []


# --- taints reach the service's pods --------------------------------------------------------


def test_a_service_on_a_tainted_flavor_tolerates_the_taint(api, h100, service_payload):
    h100.node_taints = [TAINT]
    h100.save()
    queue_create(name="tainted", flavors=[{"flavor": h100, "gpus": 8}])
    response = api.post("/api/v1/services/", {**service_payload, "queue": "tainted"}, format="json")
    assert response.status_code == 201, response.content
    service = InferenceService.objects.get(id=response.json()["id"])
    assert service.flavor == h100
    spec = service_spec(service)
    assert [(t.key, t.operator, t.value, t.effect) for t in spec.flavor_tolerations] == [
        ("dedicated", "Equal", "h100", "NoSchedule")
    ]


# --- LocalQueues per team namespace ---------------------------------------------------------


def test_local_queues_in_each_allowed_teams_namespace(settings, h100_queue):
    settings.SERVICE_NAMESPACE = "inference"
    other = queue_create(name="other", gpu_quota=1)
    Team.objects.create(name="nlp", namespace="team-nlp").queues.add(h100_queue)
    Team.objects.create(name="vision", namespace="team-vision").queues.add(other)
    Team.objects.create(name="platform", namespace="team-platform")  # no queues listed: every queue
    Team.objects.create(name="shared")  # no namespace: the services' namespace

    objects = queue_objects(h100_queue)
    expected = ["inference", "team-nlp", "team-platform"]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == expected
    assert all(o["metadata"]["labels"] == {NAMESPACE_LABEL: o["metadata"]["name"]} for o in objects[:3])
    assert [o["metadata"]["namespace"] for o in objects if o["kind"] == "LocalQueue"] == expected
    (cluster_queue,) = [o for o in objects if o["kind"] == "ClusterQueue"]
    assert cluster_queue["spec"]["namespaceSelector"] == {
        "matchExpressions": [{"key": NAMESPACE_LABEL, "operator": "In", "values": expected}]
    }


def test_a_bad_team_namespace_is_refused():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as raised:
        Team(name="nlp", namespace="Team_NLP").full_clean()
    assert "namespace" in raised.value.message_dict


# --- usage samples and the chart ------------------------------------------------------------


def test_usage_is_sampled_each_minute_and_pruned(
    api, h100, h100_queue, service_payload, settings, client, user
):
    for name, gpus in (("first", 6), ("second", 4)):  # 6 of 8 held; the second waits
        response = api.post(
            "/api/v1/services/", {**service_payload, "name": name, "queue": "h100-queue", "gpu_count": gpus},
            format="json",
        )  # fmt: skip
        assert response.status_code == 201, response.content
    assert InferenceService.objects.filter(phase=phases.QUEUED).count() == 1

    now = timezone.now().replace(second=0, microsecond=0)  # so that now + 1 s is the same minute
    assert sample_queue_usage(at=now) == 2  # one per queue and flavor: gpu-a100 and h100-queue
    sample_queue_usage(at=now + timedelta(seconds=1))  # same minute: no second row
    assert QueueUsageSample.objects.count() == 2
    (sample,) = QueueUsageSample.objects.filter(queue=h100_queue)
    assert (sample.gpus_used, sample.gpus_quota, sample.services_running, sample.services_queued) == (
        6,
        8,
        1,
        1,
    )
    assert sample.cpu_milli_used == 4000 and sample.memory_used == 30 * 2**30

    sample_queue_usage(at=now - timedelta(days=settings.QUEUE_USAGE_RETENTION_DAYS, minutes=1))
    assert QueueUsageSample.objects.filter(queue=h100_queue).count() == 2
    assert prune_usage_samples(now=now) == 2
    assert list(QueueUsageSample.objects.filter(queue=h100_queue).values_list("id", flat=True)) == [sample.id]

    client.force_login(user)
    page = client.get("/queues/h100-queue/").content.decode()
    assert 'data-testid="usage-history"' in page
    assert '<svg class="usage-chart"' in page and 'data-flavor="h100"' in page and "GPUs used 6 of 8" in page


def test_the_beat_schedule_samples_every_minute(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["sample-queue-usage"]
    assert (entry["task"], entry["schedule"]) == ("queues.tasks.sample_queue_usage", 60.0)
    assert "queues.tasks.sample_queue_usage" in celery_app.tasks


def test_changing_a_team_in_the_admin_reapplies_the_queues(
    client, admin_user, h100_queue, django_capture_on_commit_callbacks
):
    team = Team.objects.create(name="nlp")
    Queue.objects.update(kueue_state=Queue.KueueState.APPLIED)
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            f"/admin/queues/team/{team.id}/change/",
            {"name": "nlp", "namespace": "team-nlp", "queues": [h100_queue.id], "members": []},
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Team.objects.get(id=team.id).namespace == "team-nlp"
    assert state(h100_queue)[0] == Queue.KueueState.PENDING and len(callbacks) == 1
    assert "team-nlp" in [o["metadata"].get("namespace") for o in queue_objects(h100_queue)]

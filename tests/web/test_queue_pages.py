"""Queue and flavor pages: lists, staff-only create and edit forms with errors next to the fields,
the queue page's live usage and workloads, the create form's admission check (admitted now, must
wait with position, refused with the numbers) and a Queued service's position on its page."""

import html
import json
import re

import pytest

from deploy import clusters
from queues.actions import flavor_create, queue_create
from queues.models import FlavorQuota, PriorityClass, Queue, ResourceFlavor, Team
from services import phases
from services.actions import service_create
from services.models import InferenceService

pytestmark = pytest.mark.django_db

H100 = "NVIDIA-H100"
FIFO = Queue.Strategy.BEST_EFFORT_FIFO


def field_errors(page: str, field: str) -> str:
    """The text of the errors shown next to one field ("" when none)."""
    for chunk in page.split('<div class="field')[1:]:
        if f'id="field-{field}"' in chunk.split(">", 1)[0]:
            errors = re.search(r'<ul class="field-errors".*?</ul>', chunk, re.S)
            return html.unescape(re.sub(r"<[^>]+>", " ", errors.group(0))) if errors else ""
    raise AssertionError(f"no field {field} on the page")


@pytest.fixture
def h100(db):
    return flavor_create(name="h100", node_labels={"nvidia.com/gpu.product": H100})


@pytest.fixture
def h100_queue(h100):
    return queue_create(name="h100-queue", flavors=[{"flavor": h100, "gpus": 8}])


def check(client, queue, dataset, **values):
    """The admission partial as the create form asks for it (the form's own field names)."""
    params = {
        "queue": queue.id if queue else "",
        "dataset": dataset.id,
        "model_path": "THUDM/chatglm2-6b",
        "runtime": "vllm",
        "engine_args": "",
        "replicas": "1",
        "cpu": "4",
        "memory": "30Gi",
        "gpu_count": "1",
        "gpu_type": "",
        "affinity_mode": "auto",
        "tolerations": "",
        "node_rules": "",
        **{k: str(v) for k, v in values.items()},
    }
    response = client.get("/services/new/admission/", params)
    assert response.status_code == 200, response.content
    return " ".join(response.content.decode().split())


# --- pages ---------------------------------------------------------------------------------


def test_pages_render_for_a_user_and_staff(client, user, admin_user, h100_queue):
    client.force_login(user)
    for url in ("/queues/", "/queues/flavors/", "/queues/h100-queue/", "/queues/h100-queue/live/"):
        response = client.get(url)
        assert response.status_code == 200, url
    flavors = client.get("/queues/flavors/").content.decode()
    assert "nvidia.com/gpu.product=NVIDIA-H100" in flavors
    assert "gpu-node-1" in flavors  # the simulated node with the H100s
    assert 'href="/queues/h100-queue/"' in client.get("/queues/").content.decode()
    assert b">Flavors<" in client.get("/services/").content
    assert client.get("/queues/nope/").status_code == 404
    client.force_login(admin_user)
    for url in ("/queues/new/", "/queues/flavors/new/", "/queues/h100-queue/edit/"):
        assert client.get(url).status_code == 200, url


def test_only_staff_write_flavors_and_queues(client, user, h100_queue):
    client.force_login(user)
    for url, data in (
        ("/queues/flavors/new/", {"name": "a100"}),
        ("/queues/new/", {"name": "other", "gpu_quota": 8, "cpu_quota": 64, "memory_quota_gib": 512}),
        ("/queues/h100-queue/edit/", {"gpu_quota": 99, "cpu_quota": 64, "memory_quota_gib": 512}),
    ):
        for response in (client.get(url), client.post(url, data)):
            assert response.status_code == 302, url
            assert "/admin/login/" in response["Location"]
    assert list(ResourceFlavor.objects.values_list("name", flat=True)) == ["h100"]
    assert list(Queue.objects.values_list("name", flat=True)) == ["h100-queue"]
    assert FlavorQuota.objects.get().gpus == 8


# --- flavors ---------------------------------------------------------------------------------


def test_a_flavor_from_the_form_with_labels_and_tolerations(client, admin_user):
    client.force_login(admin_user)
    response = client.post(
        "/queues/flavors/new/",
        {
            "name": "h100",
            "description": "H100 nodes",
            "node_labels": f"nvidia.com/gpu.product={H100}\n\n pool = gpu \n",
            "tolerations": "nvidia.com/gpu:NoSchedule\ndedicated=inference:NoExecute",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/queues/flavors/"
    flavor = ResourceFlavor.objects.get(name="h100")
    assert flavor.node_labels == {"nvidia.com/gpu.product": H100, "pool": "gpu"}
    assert flavor.tolerations == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoExecute"},
    ]
    listed = client.get("/queues/flavors/").content.decode()
    assert "dedicated=inference:NoExecute" in listed and "nvidia.com/gpu:NoSchedule" in listed


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("node_labels", "bad key!=x", "is not a valid node label key"),
        ("node_labels", "nvidia.com/gpu.product", "Line 1: write key=value"),
        ("node_labels", "a=1\na=2", "Line 2: a is given twice"),
        ("node_labels", "pool=not ok", "is not a valid label value"),
        ("tolerations", "nvidia.com/gpu:Sometimes", "must be NoSchedule, PreferNoSchedule or NoExecute"),
    ],
)
def test_bad_flavor_input_is_shown_next_to_the_field(client, admin_user, field, text, message):
    client.force_login(admin_user)
    response = client.post("/queues/flavors/new/", {"name": "h100", field: text})
    assert response.status_code == 200
    page = response.content.decode()
    assert message in field_errors(page, field)
    assert html.escape(text.split("\n")[0]) in page  # what was typed is still there
    assert not ResourceFlavor.objects.exists()


def test_a_flavor_name_is_a_dns_label_and_unique(client, admin_user, h100):
    client.force_login(admin_user)
    page = client.post("/queues/flavors/new/", {"name": "H100"}).content.decode()
    assert "DNS-1123 label" in field_errors(page, "name")
    page = client.post("/queues/flavors/new/", {"name": "h100"}).content.decode()
    assert "already exists" in field_errors(page, "name")


# --- queues ----------------------------------------------------------------------------------


def test_a_queue_with_its_quota_on_a_flavor_from_the_form(client, admin_user, h100):
    client.force_login(admin_user)
    form = client.get("/queues/new/").content.decode()
    assert '<option value="h100">h100</option>' in form
    response = client.post(
        "/queues/new/",
        {
            "name": "h100-queue",
            "flavor": "h100",
            "gpu_quota": "8",
            "cpu_quota": "96",
            "memory_quota_gib": "1024",
            "cohort": "ml",
            "gpu_borrowing_limit": "4",
            "gpu_lending_limit": "2",
            "strategy": Queue.Strategy.STRICT_FIFO,
        },
    )
    assert response.status_code == 302 and response["Location"] == "/queues/"
    queue = Queue.objects.get(name="h100-queue")
    assert (queue.cohort, queue.strategy) == ("ml", Queue.Strategy.STRICT_FIFO)
    quota = queue.quotas.get()
    assert (quota.flavor, quota.gpus, quota.cpu, quota.memory_gib) == (h100, 8, 96, 1024)
    assert (quota.gpu_borrowing_limit, quota.gpu_lending_limit) == (4, 2)
    page = " ".join(client.get("/queues/h100-queue/").content.decode().split())
    assert 'data-testid="usage-h100-gpus"' in page and "0 of 8" in page and "0 of 96 cores" in page
    assert "borrows ≤ 4 GPUs; lends ≤ 2 GPUs" in page


def test_without_a_flavor_the_quota_is_on_the_default_flavor(client, admin_user):
    client.force_login(admin_user)
    response = client.post(
        "/queues/new/",
        {"name": "simple", "gpu_quota": "4", "cpu_quota": "32", "memory_quota_gib": "256", "strategy": FIFO},
    )
    assert response.status_code == 302
    quota = Queue.objects.get(name="simple").quotas.get()
    assert (quota.flavor.name, quota.gpus) == (ResourceFlavor.DEFAULT, 4)


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        (
            {"gpu_lending_limit": "9", "cohort": "ml"},
            "gpu_lending_limit",
            "cannot lend more GPUs than its quota",
        ),
        ({"gpu_borrowing_limit": "2"}, "gpu_borrowing_limit", "needs a cohort"),
        ({"cohort": "Not A Label"}, "cohort", "DNS-1123 label"),
        ({"name": "new"}, "name", "taken by the console's own pages"),
        ({"gpu_quota": "-1"}, "gpu_quota", "greater than or equal to 0"),
        ({"flavor": "nope"}, "flavor", "Select a valid choice"),
    ],
)
def test_bad_queue_input_is_shown_next_to_the_field(client, admin_user, h100, values, field, message):
    client.force_login(admin_user)
    data = {"name": "q", "flavor": "h100", "gpu_quota": "8", "cpu_quota": "64", "memory_quota_gib": "512"}
    data["strategy"] = FIFO
    response = client.post("/queues/new/", {**data, **values})
    assert response.status_code == 200
    assert message in field_errors(response.content.decode(), field)
    assert not Queue.objects.exists()


def test_editing_a_queue_changes_its_first_flavor_and_keeps_the_others(client, admin_user, h100):
    a100 = flavor_create(name="a100", node_labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})
    queue = queue_create(
        name="mixed", cohort="ml", flavors=[{"flavor": h100, "gpus": 8}, {"flavor": a100, "gpus": 4}]
    )
    client.force_login(admin_user)
    form = client.get("/queues/mixed/edit/").content.decode()
    assert '<option value="h100" selected>' in form and "Also kept as they are" in form
    data = {
        "name": "renamed",
        "flavor": "h100",
        "gpu_quota": "6",
        "cpu_quota": "64",
        "memory_quota_gib": "512",
    }
    data["strategy"] = FIFO
    response = client.post("/queues/mixed/edit/", {**data, "cohort": "ml", "gpu_lending_limit": "2"})
    assert response.status_code == 302 and response["Location"] == "/queues/mixed/"
    queue.refresh_from_db()
    assert queue.name == "mixed"  # fixed once created
    rows = [(q.flavor.name, q.gpus, q.gpu_lending_limit) for q in queue.quotas.order_by("position")]
    assert rows == [("h100", 6, 2), ("a100", 4, None)]
    # Moving the first quota onto a flavor the queue already has is an error next to the flavor.
    response = client.post("/queues/mixed/edit/", {**data, "flavor": "a100", "cohort": "ml"})
    assert "Flavor a100 is listed twice" in field_errors(response.content.decode(), "flavor")


def test_the_queue_page_shows_usage_and_workloads_and_polls(client, user, h100_queue, dataset):
    first = service_create(
        owner=user, name="first", queue=h100_queue, dataset=dataset, model_path="m", gpu_count=8
    )
    waiting = service_create(
        owner=user, name="second", queue=h100_queue, dataset=dataset, model_path="m", gpu_count=4
    )
    assert (first.phase, waiting.phase) == (phases.PENDING, phases.QUEUED)
    client.force_login(user)
    page = " ".join(client.get("/queues/h100-queue/").content.decode().split())
    assert 'hx-get="/queues/h100-queue/live/" hx-trigger="every 2s"' in page
    gpus = re.search(r'data-testid="usage-h100-gpus">(.*?)</td>', page).group(1)
    assert "8 of 8" in gpus
    assert 'data-testid="admitted-first"' in page and f'href="/services/{first.id}/"' in page
    row = re.search(r'data-testid="waiting-second">(.*?)</tr>', page).group(1)
    assert "<td>1</td>" in row
    assert "waiting for 4 nvidia.com/gpu in flavor h100: 8 of 8 in use by 1 service" in row
    live = client.get("/queues/h100-queue/live/").content.decode()
    assert live.lstrip().startswith('<div id="queue-live"') and "waiting-second" in live


# --- the create form's admission check ------------------------------------------------------------


def test_the_create_form_has_the_admission_check(client, user, h100_queue):
    client.force_login(user)
    page = client.get("/services/new/").content.decode()
    assert 'hx-get="/services/new/admission/"' in page
    assert "change from:#id_queue" in page and "input changed delay:500ms from:#id_gpu_count" in page
    assert 'id="id_team"' not in page and 'id="id_priority_class"' not in page  # nothing to pick
    PriorityClass.objects.create(name="urgent", value=1000)
    Team.objects.create(name="nlp").members.add(user)
    page = client.get("/services/new/").content.decode()
    assert 'id="id_team"' in page and 'id="id_priority_class"' in page
    assert "change from:#id_team" in page and "change from:#id_priority_class" in page


def test_the_check_counts_the_priority_class(client, user, h100_queue, dataset):
    urgent = PriorityClass.objects.create(name="urgent", value=1000)
    for name in ("first", "second"):
        service_create(owner=user, name=name, queue=h100_queue, dataset=dataset, model_path="m", gpu_count=8)
    client.force_login(user)
    assert "Must wait: position 2</strong>" in check(client, h100_queue, dataset, gpu_count=8)
    assert "Must wait: position 1</strong>" in check(
        client, h100_queue, dataset, gpu_count=8, priority_class=urgent.id
    )


def test_the_check_says_admitted_must_wait_or_refused(client, user, h100_queue, dataset):
    client.force_login(user)
    admitted = check(client, h100_queue, dataset, gpu_count=2, replicas=2)
    assert "Admitted now:</strong> holds 4 × NVIDIA-H100 for 2 replicas" in admitted
    assert "Fits in flavor h100 of queue h100-queue (4 of 8 nvidia.com/gpu in use with it)" in admitted
    assert "h100-queue</a>: h100 8 of 8" in admitted  # the free GPUs per flavor

    service_create(owner=user, name="first", queue=h100_queue, dataset=dataset, model_path="m", gpu_count=8)
    waits = check(client, h100_queue, dataset, gpu_count=4)
    assert (
        "Must wait: position 1</strong> — waiting for 4 nvidia.com/gpu in flavor h100: "
        "8 of 8 in use by 1 service" in waits
    )
    assert "will then hold 4 × NVIDIA-H100 for 1 replica" in waits
    assert "h100-queue</a>: h100 0 of 8" in waits
    service_create(owner=user, name="second", queue=h100_queue, dataset=dataset, model_path="m", gpu_count=4)
    assert "Must wait: position 2</strong>" in check(client, h100_queue, dataset, gpu_count=4)

    refused = check(client, h100_queue, dataset, gpu_count=8, replicas=2)
    assert (
        "Refused:</strong> needs 16 nvidia.com/gpu; queue h100-queue has at most 8 in flavor h100 "
        "(nominal 8, borrowing 0)" in refused
    )
    other_type = check(client, h100_queue, dataset, gpu_type="NVIDIA-A100-SXM4-80GB")
    assert "Refused:</strong> queue h100-queue has no NVIDIA-A100-SXM4-80GB flavor" in other_type
    assert "Change <strong>GPU type</strong>" in other_type
    assert InferenceService.objects.count() == 2  # the check creates nothing


def test_the_check_exact_admitted_text(client, user, h100_queue, dataset):
    client.force_login(user)
    assert "Admitted now:</strong> holds 8 × NVIDIA-H100 for 1 replica" in check(
        client, h100_queue, dataset, gpu_count=8
    )


def test_the_check_is_lenient_with_a_half_filled_form(client, user, h100_queue, dataset):
    client.force_login(user)
    assert "Choose a queue" in check(client, None, dataset)
    bad = check(client, h100_queue, dataset, gpu_count="many", cpu="")
    assert "Cannot check yet" in bad
    assert "<strong>GPU count</strong>: Enter a whole number." in bad
    assert "<strong>CPU</strong>: This field is required." in bad
    assert "Pick a dataset and a model path" in check(client, h100_queue, dataset, model_path="")
    # Fields the form did not send keep their defaults; an empty query string is no error either.
    assert client.get("/services/new/admission/").status_code == 200
    assert "Admitted now" in " ".join(
        client.get(
            "/services/new/admission/", {"queue": h100_queue.id, "dataset": dataset.id, "model_path": "m"}
        )
        .content.decode()
        .split()
    )


def test_the_check_shows_why_create_would_refuse(client, user, h100_queue, dataset):
    other = queue_create(name="other", gpu_quota=8)
    team = Team.objects.create(name="vision", max_gpus=4)
    team.members.add(user)
    team.queues.add(other)
    client.force_login(user)
    refused = check(client, h100_queue, dataset)
    assert "Not accepted" in refused
    assert "<strong>Queue</strong>: Team vision may use these queues: other." in refused
    # The capacity line lists only the team's queues.
    assert "other</a>: default 8 of 8" in refused and "h100-queue</a>:" not in refused
    over = check(client, other, dataset, gpu_count=8)
    assert "Refused:</strong> team vision holds 0 of its 4 GPUs; this service needs 8" in over


def test_the_check_counts_tolerations_in_the_custom_mode(client, user, dataset, settings, tmp_path):
    """A node whose taint the service must tolerate: refused without the toleration (the custom
    mode's tolerations are the service's), admitted with it."""
    nodes = tmp_path / "nodes.json"
    node = {
        "name": "tainted-h100",
        "labels": {"nvidia.com/gpu.product": H100},
        "capacity": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
        "taints": [{"key": "dedicated", "value": "inference", "effect": "NoSchedule"}],
    }
    nodes.write_text(json.dumps({"nodes": [node]}))
    settings.SIMULATED_CLUSTER_NODES = str(nodes)
    clusters._cluster_for.cache_clear()
    try:
        tainted = flavor_create(name="tainted", node_labels={"nvidia.com/gpu.product": H100})
        queue = queue_create(name="tq", flavors=[{"flavor": tainted, "gpus": 8}])
        client.force_login(user)
        refused = check(client, queue, dataset)
        assert "Refused:</strong> no flavor of queue tq can hold one replica" in refused
        assert "Change <strong>Tolerations</strong>" in refused
        custom = {"affinity_mode": "custom", "tolerations": "dedicated=inference:NoSchedule"}
        assert "Admitted now" in check(client, queue, dataset, **custom)
    finally:
        clusters._cluster_for.cache_clear()


# --- a Queued service's place in line -----------------------------------------------------------


def test_a_queued_service_shows_its_position_on_its_page(client, user, h100_queue, dataset):
    service_create(owner=user, name="first", queue=h100_queue, dataset=dataset, model_path="m", gpu_count=8)
    second = service_create(
        owner=user, name="second", queue=h100_queue, dataset=dataset, model_path="m", gpu_count=4
    )
    third = service_create(
        owner=user, name="third", queue=h100_queue, dataset=dataset, model_path="m", gpu_count=4
    )
    client.force_login(user)
    status = " ".join(client.get(f"/services/{third.id}/status/").content.decode().split())
    assert 'data-testid="phase">Queued<' in status
    assert f'hx-get="/services/{third.id}/position/" hx-trigger="load, every 2s" hx-target="this"' in status
    assert "waiting for 4 nvidia.com/gpu in flavor h100: 8 of 8 in use by 1 service" in status
    position = " ".join(client.get(f"/services/{third.id}/position/").content.decode().split())
    assert "Position 2 of 2</strong> in queue" in position
    assert "Position 1 of 2" in client.get(f"/services/{second.id}/position/").content.decode()
    detail = client.get(f"/services/{second.id}/").content.decode()
    assert 'id="queue-position"' in detail


def test_the_position_is_only_for_those_who_see_the_service(
    client, user, h100_queue, dataset, django_user_model
):
    service = service_create(owner=user, name="first", queue=h100_queue, dataset=dataset, model_path="m")
    bob = django_user_model.objects.create_user("bob", password="bob-password-1")
    client.force_login(bob)
    assert client.get(f"/services/{service.id}/position/").status_code == 404
    client.force_login(user)
    admitted = client.get(f"/services/{service.id}/position/").content.decode()
    assert "Position" not in admitted
    assert 'id="queue-position"' not in client.get(f"/services/{service.id}/status/").content.decode()

"""An admin creates a resource flavor and a queue with its quota on it; a user sees the pre-submit
admission check in the service form, creates a service that runs, and a second one that must wait
and is Queued with its position; the queue page shows both, live."""

import re

from playwright.sync_api import expect

from datasets.models import Dataset
from queues.models import Queue
from services import phases
from services.actions import service_create
from services.models import InferenceService
from tests.datasets.modeltrees import write_tiny_llama

H100 = "NVIDIA-H100"  # gpu-node-1 of the simulated cluster: 8 of them


def fill_service(page, live_server, name: str, *, gpu_count: int, replicas: int) -> None:
    page.goto(f"{live_server.url}/services/new/")
    page.fill("#id_name", name)
    page.select_option("#id_queue", label="h100-queue")
    page.select_option("#id_dataset", label="local-models")
    page.fill("#id_model_path", "org/llama")
    page.fill("#id_replicas", str(replicas))
    page.fill("#id_gpu_count", str(gpu_count))


def test_admin_creates_flavor_and_queue_and_a_user_sees_the_check_and_a_queued_service(
    page, live_server, admin_user, user, login, celery_worker, watcher, tmp_path
):
    write_tiny_llama(tmp_path / "models" / "org" / "llama")
    dataset = Dataset.objects.create(
        name="local-models",
        kind=Dataset.Kind.LOCAL,
        local_path=str(tmp_path / "models"),
        owner=admin_user,
        phase=Dataset.Phase.READY,
    )

    # The admin: a flavor for the H100 nodes, first with a label line that is not key=value.
    login("root", "root-password-1")
    page.click("nav >> text=Flavors")
    page.click("text=Create flavor")
    page.fill("#id_name", "h100")
    page.fill("#id_node_labels", "nvidia.com/gpu.product")
    page.click("button[type=submit]")
    expect(page.locator("#field-node_labels .field-errors")).to_contain_text("Line 1: write key=value")
    page.fill("#id_node_labels", f"nvidia.com/gpu.product={H100}")
    page.click("button[type=submit]")
    flavor = page.get_by_test_id("flavor-h100")
    expect(flavor).to_contain_text(f"nvidia.com/gpu.product={H100}")
    expect(flavor).to_contain_text("gpu-node-1")  # the node its labels pick

    # A queue with 8 GPUs on that flavor.
    page.goto(f"{live_server.url}/queues/new/")
    page.fill("#id_name", "h100-queue")
    page.select_option("#id_flavor", label="h100")
    page.fill("#id_gpu_quota", "8")
    page.click("button[type=submit]")
    expect(page.get_by_test_id("queue-h100-queue")).to_contain_text("h100: 8")
    page.get_by_role("link", name="h100-queue", exact=True).click()
    expect(page.get_by_test_id("usage-h100-gpus")).to_contain_text("0 of 8")

    # A user: the form's admission check answers before anything is created.
    page.click("text=Log out")
    login("alice", "alice-password-1")
    fill_service(page, live_server, "first", gpu_count=4, replicas=2)
    verdict = page.get_by_test_id("admission-verdict")
    expect(verdict).to_have_text("Admitted now: holds 8 × NVIDIA-H100 for 2 replicas")
    expect(page.get_by_test_id("queue-capacity")).to_contain_text("h100-queue: h100 8 of 8")
    page.fill("#id_replicas", "3")  # 12 GPUs: more than the queue can ever hold
    expect(verdict).to_contain_text("Refused: needs 12 nvidia.com/gpu; queue h100-queue has at most 8")
    page.fill("#id_replicas", "2")
    expect(verdict).to_contain_text("Admitted now")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/services/\d+/$"))
    expect(page.get_by_test_id("phase")).to_have_text("Running", timeout=30_000)

    # The queue page, open in another tab, follows what happens next without a reload.
    queue_page = page.context.new_page()
    queue_page.goto(f"{live_server.url}/queues/h100-queue/")
    expect(queue_page.get_by_test_id("usage-h100-gpus")).to_contain_text("8 of 8")
    expect(queue_page.get_by_test_id("admitted-first")).to_contain_text("Running")
    expect(queue_page.get_by_test_id("waiting")).to_contain_text("Nobody is waiting")

    # A second service fits the nodes but not the quota now: it may be created, and waits.
    fill_service(page, live_server, "second", gpu_count=4, replicas=1)
    expect(verdict).to_have_text(
        "Must wait: position 1 — waiting for 4 nvidia.com/gpu in flavor h100: 8 of 8 in use by 1 service"
    )
    expect(page.get_by_test_id("queue-capacity")).to_contain_text("h100-queue: h100 0 of 8")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/services/\d+/$"))
    expect(page.get_by_test_id("phase")).to_have_text("Queued")
    expect(page.get_by_test_id("reason")).to_have_text("WaitingForQuota")
    expect(page.get_by_test_id("queue-position")).to_have_text("Position 1 of 1 in queue h100-queue")
    expect(page.get_by_test_id("message")).to_have_text(
        "waiting for 4 nvidia.com/gpu in flavor h100: 8 of 8 in use by 1 service"
    )
    assert InferenceService.objects.get(name="second").phase == phases.QUEUED

    waiting = queue_page.get_by_test_id("waiting-second")
    expect(waiting).to_contain_text("waiting for 4 nvidia.com/gpu in flavor h100", timeout=10_000)
    expect(waiting.locator("td").first).to_have_text("1")

    # Someone else queues behind it: the position line follows, across the status polls.
    page.wait_for_timeout(2500)
    service_create(
        owner=admin_user, name="third", queue=Queue.objects.get(name="h100-queue"), dataset=dataset,
        model_path="org/llama", gpu_count=4,
    )  # fmt: skip
    expect(page.get_by_test_id("queue-position")).to_have_text("Position 1 of 2 in queue h100-queue")
    expect(page.get_by_test_id("phase")).to_have_text("Queued")
    expect(queue_page.get_by_test_id("waiting-third").locator("td").first).to_have_text("2")

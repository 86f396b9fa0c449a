"""An admin edits a resource flavor: a taint line without an effect is refused next to the field;
a good one is saved, and the page follows the re-apply of the queue using the flavor (through the
real worker) until it is done; the flavor list then shows the taint, and the queue page its
usage chart once a sample is taken."""

from playwright.sync_api import expect

from queues.actions import flavor_create, queue_create
from queues.models import Queue, ResourceFlavor
from queues.usage import sample_queue_usage

H100 = "NVIDIA-H100"


def test_admin_edits_a_flavors_taints_and_sees_its_queue_reapplied(
    page, live_server, admin_user, login, celery_worker
):
    flavor = flavor_create(name="h100", node_labels={"nvidia.com/gpu.product": H100})
    queue = queue_create(name="h100-queue", flavors=[{"flavor": flavor, "gpus": 8}])

    login("root", "root-password-1")
    page.goto(f"{live_server.url}/queues/flavors/")
    page.get_by_test_id("edit-h100").click()
    expect(page.locator("#id_node_labels")).to_have_value(f"nvidia.com/gpu.product={H100}")
    expect(page.locator("#id_name")).to_be_disabled()

    page.fill("#id_node_taints", "dedicated=h100")
    page.click("button[type=submit]")
    expect(page.locator("#field-node_taints .field-errors")).to_contain_text("write key=value:Effect")
    assert ResourceFlavor.objects.get(id=flavor.id).node_taints == []

    page.fill("#id_node_taints", "dedicated=h100:NoSchedule")
    page.click("button[type=submit]")
    expect(page.locator(".flash").first).to_contain_text("its queues are being re-applied")
    # The worker applies the queue's Kueue objects; the simulated cluster has no Kueue, which the
    # page says once the apply is done (it polls while the queue is Pending).
    expect(page.get_by_test_id("kueue-state-h100-queue")).to_have_text(
        "Not applied (no Kueue)", timeout=30_000
    )
    assert Queue.objects.get(id=queue.id).kueue_applied_at is not None
    assert ResourceFlavor.objects.get(id=flavor.id).node_taints == [
        {"key": "dedicated", "value": "h100", "effect": "NoSchedule"}
    ]

    page.goto(f"{live_server.url}/queues/flavors/")
    expect(page.get_by_test_id("flavor-h100")).to_contain_text("dedicated=h100:NoSchedule")

    # The queue page: no usage history yet, then a minute's sample (the beat task's work) as a chart.
    page.goto(f"{live_server.url}/queues/h100-queue/")
    expect(page.get_by_test_id("usage-history")).to_contain_text("No samples yet")
    sample_queue_usage()
    page.reload()
    chart = page.locator('[data-testid="usage-history"] svg.usage-chart[data-flavor="h100"]')
    expect(chart).to_be_visible()
    expect(chart).to_contain_text("h100: GPUs used 0 of 8")

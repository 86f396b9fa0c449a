"""A person creates a queue, a dataset and a service in the browser and watches it run."""

import re

from playwright.sync_api import expect

from services.models import InferenceService
from tests.datasets.modeltrees import write_tiny_llama


def test_admin_creates_queue_dataset_and_service_and_sees_it_run(
    page, live_server, admin_user, login, celery_worker, watcher, tmp_path
):
    export = tmp_path / "export"  # the simulated cluster's NFS server is this machine
    write_tiny_llama(export / "THUDM" / "chatglm2-6b")
    login("root", "root-password-1")
    expect(page.locator(".cluster")).to_have_text("Simulated cluster")

    # A queue with a GPU quota.
    page.goto(f"{live_server.url}/queues/new/")
    page.fill("#id_name", "gpu-a100")
    page.fill("#id_gpu_quota", "8")
    page.click("button[type=submit]")
    expect(page.locator("table")).to_contain_text("gpu-a100")

    # An NFS dataset, prewarmed into the cluster by a copier Job.
    page.goto(f"{live_server.url}/datasets/new/")
    page.fill("#id_name", "nfs-models")
    page.select_option("#id_kind", "nfs")
    page.fill("#id_nfs_server", "127.0.0.1")
    page.fill("#id_nfs_path", str(export))
    page.click("button[type=submit]")
    expect(page.get_by_test_id("dataset-phase")).to_have_text("Ready", timeout=30_000)  # after the copy
    page.reload()

    # The service form: first a bad name, which is refused next to the field.
    page.goto(f"{live_server.url}/services/new/")
    page.fill("#id_name", "Chat_GLM")
    page.select_option("#id_queue", label="gpu-a100")
    page.select_option("#id_dataset", label="nfs-models")
    page.fill("#id_model_path", "THUDM/chatglm2-6b")
    page.fill("#id_engine_args", "--dtype=half --max-model-len=4096")
    page.fill("#id_shm_size", "16Gi")
    page.click("button[type=submit]")
    name_errors = page.locator("#field-name .field-errors")
    expect(name_errors).to_contain_text("lowercase letters")
    assert not InferenceService.objects.exists()

    # Fix it; everything else the user typed is still there.
    expect(page.locator("#id_model_path")).to_have_value("THUDM/chatglm2-6b")
    page.fill("#id_name", "chatglm2")
    # Node rules and tolerations show in the custom affinity mode only; typed there and then
    # left for the automatic mode, they are not sent (the model would refuse them).
    expect(page.locator("#field-node_rules")).to_be_hidden()
    page.select_option("#id_affinity_mode", "custom")
    page.fill("#id_node_rules", "topology.kubernetes.io/zone In zone-a")
    page.fill("#id_tolerations", "dedicated=inference:NoSchedule")
    page.select_option("#id_affinity_mode", "auto")
    expect(page.locator("#field-tolerations")).to_be_hidden()
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/services/\d+/$"))

    # The status partial polls until Running, without a reload.
    expect(page.get_by_test_id("phase")).to_have_text("Running", timeout=30_000)
    expect(page.locator(".timeline")).to_contain_text("Deploying")
    expect(page.get_by_test_id("internal-url")).to_have_text(
        "http://chatglm2.inference.svc.cluster.local:8000"
    )
    expect(page.locator(".snippet").first).to_contain_text("/v1/chat/completions")

    page.click("text=Manifests")
    expect(page.get_by_test_id("manifest-yaml")).to_contain_text("kind: Deployment")
    expect(page.get_by_test_id("manifest-yaml")).to_contain_text("nvidia.com/gpu: '1'")
    page.go_back()

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button.danger")
    expect(page.get_by_test_id("phase")).to_have_text("Deleted", timeout=30_000)

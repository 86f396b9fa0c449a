"""A person adds an S3 dataset, watches its prewarm reach 100%, and picks the model path from
the dataset's files in the service form; against the S3 server on 127.0.0.1."""

import re

from playwright.sync_api import expect

from datasets.actions import dataset_prewarm
from datasets.models import Dataset
from services.actions import service_delete
from services.models import InferenceService
from tests.datasets.modeltrees import write_tiny_llama


def test_s3_dataset_prewarms_with_progress_and_the_picker_fills_the_model_path(
    page, live_server, admin_user, queue, login, celery_worker, watcher, s3_server, s3_bucket, tmp_path
):
    tree = write_tiny_llama(tmp_path / "llama", shards=2)
    for path in tree.rglob("*"):
        if path.is_file():
            s3_server.put_file(s3_bucket, f"models/org/llama/{path.relative_to(tree)}", path.read_bytes())
    login("root", "root-password-1")

    page.goto(f"{live_server.url}/datasets/new/")
    page.fill("#id_name", "s3-models")
    page.select_option("#id_kind", "s3")
    page.fill("#id_s3_endpoint", s3_server.endpoint_url)
    page.fill("#id_s3_bucket", s3_bucket)
    page.fill("#id_s3_prefix", "models")
    page.fill("#id_s3_region", "us-east-1")
    page.check("#id_s3_path_style")
    page.fill("#id_s3_access_key", s3_server.access_key)
    page.fill("#id_s3_secret_key", "wrong-secret")
    page.click("button[type=submit]")
    # Checked on save: the error is next to the secret, and the secret is not shown back.
    expect(page.locator("#field-s3_secret_key .field-errors")).not_to_be_empty()
    expect(page.locator("#id_s3_secret_key")).to_have_value("")
    expect(page.locator("#id_s3_access_key")).to_have_value("")
    expect(page.locator("#id_s3_bucket")).to_have_value(s3_bucket)
    assert not Dataset.objects.exists()

    page.fill("#id_s3_access_key", s3_server.access_key)  # neither key is shown back
    page.fill("#id_s3_secret_key", s3_server.secret_key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/datasets/\d+/$"))
    progress = page.get_by_test_id("prewarm-percent")
    expect(progress).to_have_attribute("data-percent", "100", timeout=30_000)
    expect(page.get_by_test_id("dataset-phase")).to_have_text("Ready")
    expect(page.get_by_test_id("prewarm-bytes")).to_contain_text(" of ")
    page.reload()  # the state is the run's row, not the page's
    expect(progress).to_have_attribute("data-percent", "100")
    expect(page.locator("body")).not_to_contain_text(s3_server.secret_key)
    # A prewarm started elsewhere (the API, another tab) shows on the open page, which still
    # polls every 15 s once a copy is done; it copies nothing (a cache hit).
    job = page.get_by_test_id("prewarm-job")
    first_job = job.inner_text()
    dataset_prewarm(dataset=Dataset.objects.get(name="s3-models"), actor=admin_user)
    expect(job).not_to_have_text(first_job, timeout=20_000)
    expect(progress).to_have_attribute("data-percent", "100", timeout=20_000)

    # The service form: browse the dataset, pick the folder, see the layout checked.
    page.goto(f"{live_server.url}/services/new/")
    page.select_option("#id_dataset", label="s3-models")
    page.locator("#model-browser button.entry", has_text="org/").click()
    page.locator("#model-browser button.entry", has_text="llama/").click()
    expect(page.get_by_test_id("browser-entries")).to_contain_text("config.json")
    page.locator("#model-browser button.use-path").click()
    expect(page.locator("#id_model_path")).to_have_value("org/llama")
    expect(page.get_by_test_id("check-layout")).to_contain_text("Layout OK")
    page.select_option("#id_runtime", "triton")
    expect(page.get_by_test_id("check-layout")).to_contain_text("Layout problem")
    page.select_option("#id_runtime", "vllm")
    expect(page.get_by_test_id("check-layout")).to_contain_text("Layout OK")

    page.fill("#id_name", "llama")
    page.select_option("#id_queue", label=queue.name)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/services/\d+/$"))
    # The page opens before the pod is up (the simulated pull and load take 8 s) ...
    expect(page.get_by_test_id("playground-closed")).to_be_visible()
    expect(page.get_by_test_id("phase")).to_have_text("Running", timeout=30_000)
    service = InferenceService.objects.get(name="llama")
    assert service.model_path == "org/llama"
    # ... and its other panels follow the phase without a reload: the playground opens and the
    # spec shows the revision applied.
    expect(page.locator("#playground form")).to_be_visible()
    expect(page.get_by_test_id("spec-revision")).to_have_text(service.applied_revision)
    # Deleted from elsewhere (the API, another tab): a Running page still polls, every 15 s, and
    # its Scale and Delete go with the phase.
    expect(page.locator("#service-actions button.danger")).to_be_visible()
    service_delete(service=service, actor=admin_user)
    expect(page.locator("#service-actions button.danger")).to_have_count(0, timeout=20_000)
    expect(page.get_by_test_id("phase")).not_to_have_text("Running")
    expect(page.locator("#service-actions")).not_to_contain_text("Scale")


def test_the_dataset_form_shows_the_fields_of_the_chosen_kind_only(page, live_server, admin_user, login):
    login("root", "root-password-1")
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    page.goto(f"{live_server.url}/datasets/new/")
    page.wait_for_load_state("networkidle")
    assert failed == []  # every script and style sheet loads
    # Browsers ask for /favicon.ico (a 404 in every log) unless the page names an icon.
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert icon and page.request.get(f"{live_server.url}{icon}").ok
    section = {
        name: page.get_by_test_id(f"section-{name}")
        for name in ("dataset", "nfs-export", "s3-bucket", "repository", "existing-pvc", "cluster-local-copy")
    }

    def shown() -> set[str]:
        return {name for name, locator in section.items() if locator.is_visible()}

    assert shown() == {"dataset", "nfs-export", "cluster-local-copy"}  # NFS, the default kind
    expect(page.locator("#field-nfs_server label")).to_have_text("NFS server")
    page.fill("#id_name", "switched")
    page.fill("#id_nfs_server", "bad host!")  # typed, then another kind is chosen: not sent
    page.select_option("#id_kind", "hf")
    expect(section["repository"]).to_be_visible()
    assert shown() == {"dataset", "repository", "cluster-local-copy"}
    page.select_option("#id_kind", "s3")
    expect(section["s3-bucket"]).to_be_visible()
    assert shown() == {"dataset", "s3-bucket", "cluster-local-copy"}
    page.select_option("#id_kind", "pvc")
    expect(section["existing-pvc"]).to_be_visible()
    assert shown() == {"dataset", "existing-pvc"}  # used in place: no copy to size

    page.click("button[type=submit]")
    expect(page.locator("#field-pvc_name .field-errors")).to_have_text(
        "Give the PVC name: a dataset of kind Existing PVC needs it."
    )
    assert shown() == {"dataset", "existing-pvc"}  # the page comes back on the kind chosen
    page.fill("#id_pvc_name", "team-models")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/datasets/\d+/$"))
    dataset = Dataset.objects.get(name="switched")
    assert (dataset.kind, dataset.pvc_name, dataset.nfs_server) == ("pvc", "team-models", "")


def test_a_dataset_is_deleted_from_its_page_once_no_service_uses_it(
    page, live_server, admin_user, queue, login, tmp_path
):
    from services.actions import service_create

    write_tiny_llama(tmp_path / "models/org/llama")
    used, unused = (
        Dataset.objects.create(
            name=name, kind=Dataset.Kind.LOCAL, local_path=str(tmp_path / "models"), owner=admin_user
        )
        for name in ("in-use", "spare")
    )
    service_create(owner=admin_user, name="chat", queue=queue, dataset=used, model_path="org/llama")
    login("root", "root-password-1")
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete the dataset ...?"

    page.goto(f"{live_server.url}/datasets/{used.pk}/")
    expect(page.get_by_test_id("used-by")).to_contain_text("chat")
    page.click("button.danger")
    expect(page.locator(".flash")).to_contain_text("Delete the services that use this dataset first.")
    assert Dataset.objects.filter(pk=used.pk).exists()

    page.goto(f"{live_server.url}/datasets/{unused.pk}/")
    expect(page.get_by_test_id("used-by")).to_contain_text("No service uses this dataset.")
    page.click("button.danger")
    page.wait_for_url(f"{live_server.url}/datasets/")
    expect(page.locator(".flash")).to_contain_text("Dataset spare deleted.")
    expect(page.locator("table")).not_to_contain_text("spare")
    assert not Dataset.objects.filter(pk=unused.pk).exists()

"""The model-path picker of the create-service form: the dataset browser and the live check
partials, read from a LOCAL dataset holding generated model trees (sparse safetensors files)."""

from pathlib import Path

import pytest

from console.templatetags.humanize_bytes import human_bytes
from datasets.models import Dataset
from tests.datasets.modeltrees import (
    write_broken_triton_repository,
    write_chatglm2_6b,
    write_gguf,
    write_tiny_llama,
    write_triton_repository,
)

pytestmark = pytest.mark.django_db

BROWSE = "/services/new/browse/"
CHECK = "/services/new/check/"
CHATGLM = "THUDM/chatglm2-6b"


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_chatglm2_6b(root / "THUDM" / "chatglm2-6b", shards=2)
    write_tiny_llama(root / "tiny" / "llama")
    write_broken_triton_repository(root / "triton-repo")
    write_triton_repository(root / "triton-good")
    write_gguf(root / "gguf" / "tiny-q4.gguf")
    return root


@pytest.fixture
def local_dataset(user, models_root: Path) -> Dataset:
    return Dataset.objects.create(
        name="local-models",
        kind=Dataset.Kind.LOCAL,
        local_path=str(models_root),
        owner=user,
        phase=Dataset.Phase.READY,
    )


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


def browse(client, dataset: Dataset, path: str = "") -> str:
    response = client.get(BROWSE, {"dataset": dataset.pk, "path": path})
    assert response.status_code == 200, response.content
    return response.content.decode()


def check(client, dataset: Dataset, model_path: str, **params) -> str:
    query = {"dataset": dataset.pk, "model_path": model_path, "runtime": "vllm", "gpu_count": "1"}
    response = client.get(CHECK, {**query, **params})
    assert response.status_code == 200, response.content
    return response.content.decode()


# --------------------------------------------------------------------------- the create page


def test_create_page_has_the_picker_hooks(logged_in):
    page = logged_in.get("/services/new/").content.decode()
    assert f'hx-get="{CHECK}"' in page
    assert f'hx-get="{BROWSE}"' in page
    assert 'id="model-check"' in page and 'id="model-browser"' in page
    # The check watches the form's own fields, which keep their names and ids.
    assert 'hx-include="#id_dataset, #id_model_path, #id_runtime, #id_gpu_count' in page
    for field in ("dataset", "model_path", "runtime", "gpu_count", "gpu_type", "engine_args"):
        assert f'id="id_{field}"' in page
        assert f'name="{field}"' in page


# --------------------------------------------------------------------------- browser


def test_browser_lists_folders_and_navigates_into_them(logged_in, local_dataset, models_root):
    root = browse(logged_in, local_dataset)
    for folder in ("THUDM/", "tiny/", "triton-good/", "triton-repo/", "gguf/"):
        assert folder in root
    assert f"dataset={local_dataset.pk}&amp;path=THUDM" in root
    assert "Use this folder" not in root  # the root itself is no model path

    thudm = browse(logged_in, local_dataset, "THUDM")
    assert f"path={CHATGLM}" in thudm  # the link into the model folder

    model = browse(logged_in, local_dataset, CHATGLM)
    folder = models_root / CHATGLM
    for name in ("config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json"):
        assert name in model
        assert human_bytes((folder / name).stat().st_size) in model
    assert "GiB" in model  # the sparse shards are gigabytes
    # Breadcrumb back to the root and to THUDM; the current folder is not a link.
    assert f'hx-get="{BROWSE}?dataset={local_dataset.pk}"' in model
    assert f"dataset={local_dataset.pk}&amp;path=THUDM" in model
    assert "<strong>chatglm2-6b</strong>" in model
    assert f'data-path="{CHATGLM}">Use this folder' in model
    # The browser sits inside the create form: none of its buttons may submit it.
    assert model.count("<button") == model.count('<button type="button"') > 0


def test_browser_offers_a_gguf_file_as_the_model_path(logged_in, local_dataset):
    page = browse(logged_in, local_dataset, "gguf")
    assert 'data-path="gguf/tiny-q4.gguf">Use this file' in page


def test_browser_shows_bad_paths_as_messages(logged_in, local_dataset):
    missing = browse(logged_in, local_dataset, "THUDM/nope")
    assert "There is no folder &#x27;THUDM/nope&#x27; in the dataset." in missing
    assert "Use this folder" not in missing
    assert "is not allowed" in browse(logged_in, local_dataset, "THUDM/../..")
    assert "NUL" in browse(logged_in, local_dataset, "a\x00b")


def test_browser_without_a_dataset_or_listing(logged_in, dataset):
    assert "Pick a dataset" in logged_in.get(BROWSE).content.decode()
    # The NFS export of the shared fixture is not a folder here and was never prewarmed.
    assert "listed after its first prewarm" in browse(logged_in, dataset)


# --------------------------------------------------------------------------- check


def test_check_shows_layout_ok_and_fit_for_vllm(logged_in, local_dataset):
    page = check(logged_in, local_dataset, CHATGLM, gpu_type="NVIDIA-A100-SXM4-80GB")
    assert "Layout OK" in page
    assert "Hugging Face layout" in page
    assert "config.json (ChatGLMModel" in page
    assert "2 safetensors file(s)" in page
    assert "Fits</span> Fits on 1 × 80 GiB GPU with ~" in page
    assert "GiB for KV cache" in page
    assert "NVIDIA-A100-SXM4-80GB" in page


def test_check_names_what_triton_misses(logged_in, local_dataset):
    hf_folder = check(logged_in, local_dataset, CHATGLM, runtime="triton")
    assert "Layout problem" in hf_folder
    assert "config.pbtxt" in hf_folder
    assert "This looks like a Hugging Face model folder, which vLLM serves." in hf_folder
    assert "fit estimate covers vLLM only" not in hf_folder

    repo = check(logged_in, local_dataset, "triton-repo", runtime="triton")
    assert "triton-repo/no-config has no config.pbtxt" in repo
    assert "triton-repo/no-version has no version folder" in repo


def test_check_a_path_that_does_not_exist(logged_in, local_dataset):
    page = check(logged_in, local_dataset, "THUDM/chatglm3-6b")
    assert "Layout problem" in page
    assert "THUDM/chatglm3-6b does not exist in the dataset." in page
    assert "check-fit" not in page


def test_check_a_6b_fp16_model_on_too_small_a_gpu(logged_in, local_dataset):
    page = check(logged_in, local_dataset, CHATGLM, gpu_type="Tesla-T4")  # 16 GiB
    assert "Does not fit" in page
    assert "Needs at least 2 GPUs of 16 GiB" in page
    assert "Create refuses this GPU count" in page
    assert "Override the fit check" not in page  # only admins may tick it
    # Two of them do.
    assert "Fits</span> Fits on 2 × 16 GiB GPUs" in check(
        logged_in, local_dataset, CHATGLM, gpu_type="Tesla-T4", gpu_count="2"
    )


def test_check_reads_engine_args(logged_in, local_dataset):
    # A shorter context leaves room for the KV cache of one sequence on one 16 GiB GPU.
    page = check(
        logged_in,
        local_dataset,
        CHATGLM,
        gpu_type="Tesla-T4",
        engine_args="--dtype=half --max-model-len=4096",
    )
    assert "Fits</span> Fits on 1 × 16 GiB GPU" in page
    assert "context 4096 tokens" in page


def test_check_notes_when_there_is_nothing_to_estimate(logged_in, local_dataset):
    unknown_gpu = check(logged_in, local_dataset, "tiny/llama", gpu_type="NVIDIA-Imaginary")
    assert "Layout OK" in unknown_gpu
    assert "No GPU memory size is known for this GPU type" in unknown_gpu
    assert "No GPUs requested" in check(logged_in, local_dataset, "tiny/llama", gpu_count="0")
    triton = check(logged_in, local_dataset, "triton-good", runtime="triton")
    assert "Layout OK" in triton
    assert "Triton model repository" in triton
    assert "fit estimate covers vLLM only" in triton


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"gpu_count": "many"}, "Give whole numbers for GPUs"),
        ({"gpu_count": ""}, "Give whole numbers for GPUs"),
        ({"runtime": "tgi"}, "Unknown runtime"),
        ({"model_path": "/etc/passwd"}, "no leading"),
        ({"model_path": "THUDM/../../etc"}, "no &#x27;..&#x27;"),
        ({"model_path": "a\x00b"}, "Give a relative path"),
    ],
)
def test_check_shows_bad_params_as_messages(logged_in, local_dataset, params, text):
    page = check(logged_in, local_dataset, params.pop("model_path", CHATGLM), **params)
    assert 'data-testid="check-errors"' in page
    assert text in page


def test_check_waits_for_a_dataset_and_a_path(logged_in, local_dataset):
    assert "Pick a dataset and a model path" in logged_in.get(CHECK).content.decode()
    assert "Pick a dataset and a model path" in check(logged_in, local_dataset, "")


# --------------------------------------------------------------------------- access


@pytest.mark.parametrize("url", [BROWSE, CHECK])
def test_unknown_or_hidden_datasets_are_404(logged_in, local_dataset, url):
    for dataset_id in ("999999", "abc", "99999999999999999999999"):
        assert logged_in.get(url, {"dataset": dataset_id, "model_path": CHATGLM}).status_code == 404
    # The create form does not offer failed datasets, so neither does the picker.
    Dataset.objects.filter(pk=local_dataset.pk).update(phase=Dataset.Phase.FAILED)
    assert logged_in.get(url, {"dataset": local_dataset.pk, "model_path": CHATGLM}).status_code == 404


@pytest.mark.parametrize("url", [BROWSE, CHECK])
def test_login_required_and_get_only(client, user, local_dataset, url):
    response = client.get(url, {"dataset": local_dataset.pk})
    assert response.status_code == 302
    assert "/login" in response["Location"]
    client.force_login(user)
    assert client.post(url, {"dataset": local_dataset.pk}).status_code == 405


def test_admins_are_told_about_the_fit_override(client, admin_user, local_dataset):
    client.force_login(admin_user)
    page = check(client, local_dataset, CHATGLM, gpu_type="Tesla-T4")
    assert "unless “Override the fit check” is ticked" in page

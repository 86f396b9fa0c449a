"""Hugging Face Hub datasets against the hub double on 127.0.0.1 (hubserver.py), through the real
client, huggingface_hub: browsing and inspecting a repo (HubStorage), the copier's hub source,
the check when a dataset is created through the REST API, and one prewarm through the
simulated cluster with a real Celery worker and the watcher."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from datasets.hubstorage import HubStorage
from datasets.inspect import check_layout, estimate_fit
from datasets.models import Dataset
from datasets.storage import FileEntry, Storage, StorageError
from tests.datasets import modeltrees as trees
from tests.datasets.hub_prewarm import check_hub_prewarm_end_to_end
from tests.datasets.hubserver import HubServer
from tests.datasets.test_copier import Copier, Run, leftovers, tree

MiB = 2**20
CHATGLM2_PARAMETERS = 6_243_584_032  # as in test_inspect.py


def repo_id(name: str = "model") -> str:
    """A repo of its own for each test: the hub double lives for the whole session."""
    return f"org-{uuid.uuid4().hex[:8]}/{name}"


def storage(hub: HubServer, repo: str, **overrides) -> HubStorage:
    options = {"revision": "main", "endpoint": hub.endpoint, "token": hub.token, **overrides}
    return HubStorage(repo, **options)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# =========================================================================== browse and inspect


@pytest.fixture
def chatglm(hub_server):
    """THUDM/chatglm2-6b as a private hub repo: 12.5 GB of sparse shards, a subfolder."""
    repo = repo_id("chatglm2-6b")
    folder = hub_server.repo(repo, private=True)
    trees.write_chatglm2_6b(folder)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "README.md").write_text("exported later\n")
    return repo, folder


def test_hub_storage_lists_folders_and_files_with_sizes(hub_server, chatglm, monkeypatch):
    repo, folder = chatglm
    monkeypatch.setattr(hub_server, "page_size", 4)  # the listing follows the Link pages
    hub = storage(hub_server, repo)
    assert isinstance(hub, Storage)

    root = hub.list_dir("")
    assert root.folders == ["onnx"]
    expected = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert [f.name for f in root.files] == expected and len(expected) == 11
    shard = "model-00001-of-00007.safetensors"
    assert root.size_of(shard) == (folder / shard).stat().st_size > 1_000_000_000
    assert hub.list_dir("onnx").files == [FileEntry("README.md", 15)]
    pages = [r for r in hub_server.requests if "/tree/" in r[1] and r[1].endswith(hub.commit)]
    assert len(pages) >= 3  # 12 entries, 4 a page

    assert hub.exists("config.json") and hub.exists("onnx") and hub.exists("")
    assert not hub.exists("nope.json")
    with pytest.raises(StorageError) as missing:
        hub.list_dir("nope")
    assert missing.value.reason == "NotFound"
    with pytest.raises(StorageError) as file:
        hub.list_dir("config.json")
    assert file.value.reason == "NotAFolder"
    with pytest.raises(StorageError) as climbing:
        hub.list_dir("../other")
    assert climbing.value.reason == "InvalidPath"


def test_hub_storage_reads_ranges_without_downloading_weights(hub_server, chatglm):
    repo, folder = chatglm
    hub = storage(hub_server, repo)
    config = (folder / "config.json").read_bytes()
    assert hub.read_bytes("config.json") == config
    assert hub.read_bytes("config.json", 2, 10) == config[2:12]
    assert hub.read_bytes("config.json", len(config) + 5, 10) == b""  # past the end, like a file
    shard = "model-00003-of-00007.safetensors"
    with (folder / shard).open("rb") as f:  # a sparse 1.8 GB file: read its head only
        assert hub.read_bytes(shard, 0, 8) == f.read(8)
    with pytest.raises(StorageError) as missing:
        hub.read_bytes("nope.bin", 0, 8)
    assert missing.value.reason == "NotFound"

    cdn = [r for r in hub_server.requests if r[1].startswith(f"/lfs/{repo}/")]
    assert cdn and all(status == 206 for _, _, status, _ in cdn)  # ranged reads only
    assert not any(auth for *_, auth in cdn)  # the token stays on the hub


def test_layout_and_fit_of_a_hub_repo_from_safetensors_headers(hub_server, chatglm):
    repo, _ = chatglm
    hub = storage(hub_server, repo)
    before = len(hub_server.requests)

    layout = check_layout(hub, "", "vllm")
    assert layout.ok, layout
    fit = estimate_fit(hub, "", gpu_memory_gib=80, gpu_count=1)
    assert fit.parameters == CHATGLM2_PARAMETERS
    assert fit.parameters_source == "safetensors headers"
    assert fit.fits and fit.min_gpus == 1
    assert not estimate_fit(hub, "", gpu_memory_gib=8, gpu_count=1).fits

    requests = hub_server.requests[before:]
    assert len([r for r in requests if "/revision/" in r[1]]) == 1  # the revision is resolved once
    assert all(status in (200, 206, 302) for _, _, status, _ in requests)
    assert not [r for r in requests if r[1].startswith("/lfs/") and r[2] != 206]  # no whole shard


def test_hub_storage_errors_name_the_cause(hub_server, chatglm):
    repo, _ = chatglm
    cases = {
        "AccessDenied": storage(hub_server, repo, token="hf_wrong"),
        "NoSuchRepo": storage(hub_server, repo_id("missing")),
        "NoSuchRevision": storage(hub_server, repo, revision="v9"),
    }
    for reason, hub in cases.items():
        with pytest.raises(StorageError) as error:
            hub.check()
        assert error.value.reason == reason, error.value.message
        assert "hf_wrong" not in error.value.message
    with pytest.raises(StorageError) as private:  # private, no token: the hub says 401
        storage(hub_server, repo, token=None).check()
    assert private.value.reason == "AccessDenied" and "without a token" in private.value.message

    started = time.monotonic()
    with pytest.raises(StorageError) as down:
        storage(hub_server, repo, endpoint=f"http://127.0.0.1:{closed_port()}").list_dir("")
    assert down.value.reason == "Unreachable"
    assert time.monotonic() - started < 5  # no retry loop inside a console request

    empty = repo_id("empty")
    hub_server.repo(empty)
    with pytest.raises(StorageError) as nothing:
        storage(hub_server, empty, token=None).check()
    assert nothing.value.reason == "EmptyRepo"


# =========================================================================== the copier


def hub_env(hub: HubServer, home: Path, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(home)  # nothing of this machine's hub cache or login
    if token:
        env["HF_TOKEN"] = token
    return env


def copy_hub(hub: HubServer, source: str, dest: Path, token: str | None = "", **more) -> Run:
    args = [f"--source=hf://{source}", f"--dest={dest}", f"--endpoint-url={hub.endpoint}"]
    env = hub_env(hub, dest.parent / "hf-home", hub.token if token == "" else token)
    return Copier(args + [f"--{k.replace('_', '-')}={v}" for k, v in more.items()], env).finish()


@pytest.fixture
def tiny(hub_server):
    """A private repo: a tiny Llama in two shards, a 20 MiB LFS file (redirected to the CDN)."""
    repo = repo_id("tiny-llama")
    folder = hub_server.repo(repo, private=True)
    trees.write_tiny_llama(folder, shards=2)
    (folder / "extra").mkdir()
    (folder / "extra" / "big.bin").write_bytes(os.urandom(20 * MiB + 12345))
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return repo, folder, files


def test_hub_copy_then_cache_hit_then_one_changed_file(hub_server, tiny, tmp_path):
    repo, folder, files = tiny
    dest = tmp_path / "cache"

    run = copy_hub(hub_server, repo, dest)
    assert run.returncode == 0, run.events
    assert run.kinds()[0] == "plan" and "progress" in run.kinds() and run.last["event"] == "done"
    plan = run.first("plan")
    assert (plan["files_total"], plan["bytes_total"]) == (len(files), sum(map(len, files.values())))
    assert tree(dest) == files
    assert leftovers(dest) == []  # the client's own .cache/huggingface went with the temporary folder
    listed = sorted(tuple(f) for e in run.events if e["event"] == "files" for f in e["files"])
    assert listed == sorted((path, len(data)) for path, data in files.items())
    assert hub_server.token not in json.dumps(run.events)
    downloads = [r for r in hub_server.requests if r[0] == "GET" and r[1].startswith(f"/lfs/{repo}/")]
    assert downloads and not any(auth for *_, auth in downloads)

    hit = copy_hub(hub_server, repo, dest)
    assert hit.returncode == 0, hit.events
    assert (hit.last["files_skipped"], hit.last["files_copied"]) == (len(files), 0)

    # The same files at the commit id: content ids match, nothing moves.
    pinned = copy_hub(hub_server, f"{repo}@{hub_server.commit(repo)}", dest)
    assert (pinned.returncode, pinned.last["files_copied"]) == (0, 0), pinned.events

    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "changed": true}')
    (folder / "tokenizer.json").unlink()
    changed = copy_hub(hub_server, repo, dest)
    assert changed.returncode == 0, changed.events
    assert (changed.last["files_copied"], changed.last["files_removed"]) == (1, 1)
    assert changed.last["files_skipped"] == len(files) - 2
    assert (dest / "config.json").read_bytes() == (folder / "config.json").read_bytes()
    assert not (dest / "tokenizer.json").exists()


def test_hub_copy_failures_say_why(hub_server, tiny, tmp_path):
    repo, _, _ = tiny
    cases = [
        (repo, "hf_wrong", "AccessDenied", "refused the token"),
        (repo, None, "AccessDenied", "without a token"),
        (repo_id("missing"), "", "NoSuchRepo", "no repository"),
        (f"{repo}@v9", "", "NoSuchRevision", "'v9'"),
        ("not-a-repo", "", "BadArguments", "hf://owner/name"),
    ]
    for i, (source, token, reason, words) in enumerate(cases):
        run = copy_hub(hub_server, source, tmp_path / f"cache-{i}", token=token)
        assert (run.returncode, run.last["event"], run.last["reason"]) == (2, "error", reason), run.events
        assert words in run.last["message"]
        assert "hf_wrong" not in run.last["message"] and hub_server.token not in json.dumps(run.events)

    started = time.monotonic()
    down = Copier(
        [
            f"--source=hf://{repo}",
            f"--dest={tmp_path / 'down'}",
            f"--endpoint-url=http://127.0.0.1:{closed_port()}",
        ],
        hub_env(hub_server, tmp_path / "hf-home", hub_server.token),
    ).finish()
    assert (down.returncode, down.last["reason"]) == (2, "SourceUnreachable"), down.events
    assert time.monotonic() - started < 15


def test_sigterm_stops_a_hub_download_at_once(hub_server, tmp_path):
    """Downloads run on daemon threads: the copier does not wait for a big file to finish."""
    repo = repo_id("big")
    folder = hub_server.repo(repo)
    (folder / "config.json").write_text("{}")
    with (folder / "model.safetensors").open("wb") as f:
        f.truncate(4 * 2**30)  # sparse: served as zeros, far longer to copy than this test waits
    dest = tmp_path / "cache"
    args = [f"--source=hf://{repo}", f"--dest={dest}", f"--endpoint-url={hub_server.endpoint}"]
    copier = Copier(args, hub_env(hub_server, tmp_path / "hf-home", None))
    deadline = time.monotonic() + 60
    while (event := copier.next_event(deadline)) is not None:
        if event["event"] == "progress" and event["bytes_done"] > 50 * MiB:
            break
    stopped = time.monotonic()
    copier.process.send_signal(signal.SIGTERM)
    run = copier.finish(timeout=30)
    assert time.monotonic() - stopped < 5
    assert (run.returncode, run.last["reason"]) == (2, "Interrupted"), run.events
    assert tree(dest) == {"config.json": b"{}"}  # the finished file stays, the big one is gone
    assert leftovers(dest) == []


# =========================================================================== the REST API


def hub_payload(hub: HubServer, repo: str, **overrides) -> dict:
    return {
        "name": "hub-models",
        "kind": "hf",
        "hub_repo": repo,
        "hub_revision": "main",
        "hub_endpoint": hub.endpoint,
        "hub_token": hub.token,
        **overrides,
    }


def test_a_hub_dataset_is_checked_when_created(api, hub_server, tiny):
    repo, _, _ = tiny

    def post(**overrides):
        return api.post("/api/v1/datasets/", hub_payload(hub_server, repo, **overrides), format="json")

    for overrides, field in (
        ({"hub_token": "hf_wrong"}, "hub_token"),
        ({"hub_token": ""}, "hub_token"),  # private: no token, no repo
        ({"hub_repo": repo_id("missing")}, "hub_repo"),
        ({"hub_repo": "no-owner"}, "hub_repo"),
        ({"hub_revision": "v9"}, "hub_revision"),
        ({"hub_repo": ""}, "hub_repo"),
        ({"hub_endpoint": f"http://127.0.0.1:{closed_port()}"}, "hub_endpoint"),
    ):
        response = post(**overrides)
        assert response.status_code == 400 and field in response.json(), (overrides, response.content)
        assert (
            "hf_wrong" not in response.content.decode() and hub_server.token not in response.content.decode()
        )
    assert not Dataset.objects.exists()  # nothing half-created

    created = post()
    assert created.status_code == 201, created.content
    body = created.json()
    assert hub_server.token not in json.dumps(body) and "hub_token" not in body
    assert body["has_credentials"] and body["location"] == f"hf://{repo}@main via {hub_server.endpoint}"
    stored = Dataset.objects.get(id=body["id"])
    assert stored.prewarmed and hub_server.token not in stored.credentials_encrypted
    assert stored.credentials() == {"hub_token": hub_server.token}
    fetched = api.get(f"/api/v1/datasets/{body['id']}/").json()
    assert hub_server.token not in json.dumps(fetched)


def test_the_create_form_checks_the_token_and_never_shows_it(client, user, hub_server, tiny):
    repo, _, _ = tiny
    client.force_login(user)
    form = {
        "name": "hub-form",
        "kind": "hf",
        "hub_repo": repo,
        "hub_revision": "main",
        "hub_endpoint": hub_server.endpoint,
        "hub_token": "hf_wrong",
    }
    page = client.get("/datasets/new/")
    assert page.status_code == 200 and 'name="hub_token"' in page.content.decode()
    refused = client.post("/datasets/new/", form)
    assert refused.status_code == 200 and "refused the token" in refused.content.decode()
    assert "hf_wrong" not in refused.content.decode()  # write-only: not rendered back
    created = client.post("/datasets/new/", {**form, "hub_token": hub_server.token})
    assert created.status_code == 302, created.content.decode()[-2000:]
    dataset = Dataset.objects.get(name="hub-form")
    detail = client.get(created["Location"]).content.decode()
    assert "Hugging Face Hub" in detail and "stored (encrypted)" in detail and hub_server.token not in detail
    edit = client.get(f"/datasets/{dataset.pk}/edit/").content.decode()
    assert "(stored; leave empty to keep)" in edit and hub_server.token not in edit


# =========================================================================== prewarm end to end


@pytest.mark.integration
def test_a_hub_dataset_is_prewarmed_through_the_cluster(api, hub_server, tiny, celery_worker, watcher):
    repo, _, files = tiny
    check_hub_prewarm_end_to_end(
        api,
        hub_payload(hub_server, repo),
        files,
        source=f"hf://{repo}@main",
        endpoint=hub_server.endpoint,
        token=hub_server.token,
        token_env="HF_TOKEN",
    )

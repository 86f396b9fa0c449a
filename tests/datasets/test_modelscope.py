"""ModelScope datasets against the ModelScope double on 127.0.0.1 (modelscopeserver.py), over HTTP:
browsing and inspecting a repo (ModelScopeStorage), the copier's ModelScope source (sha256
checked, incremental re-runs), the check when a dataset is created through the REST API and the
form, and one prewarm through the simulated cluster with a real Celery worker and the watcher."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from datasets.inspect import check_layout, estimate_fit
from datasets.models import Dataset
from datasets.modelscopestorage import ModelScopeStorage
from datasets.storage import FileEntry, LocalStorage, Storage, StorageError
from deploy.prewarm import PrewarmSpec, render_prewarm
from tests.datasets import modeltrees as trees
from tests.datasets.hub_prewarm import check_hub_prewarm_end_to_end
from tests.datasets.modelscopeserver import ModelScopeServer
from tests.datasets.test_copier import Copier, Run, leftovers, tree
from tests.unit.test_render import VERSIONS, validate

MiB = 2**20


def repo_id(name: str = "model") -> str:
    """A repo of its own for each test: the double lives for the whole session."""
    return f"org-{uuid.uuid4().hex[:8]}/{name}"


def storage(site: ModelScopeServer, repo: str, **overrides) -> ModelScopeStorage:
    options = {"revision": "master", "endpoint": site.endpoint, "token": site.token, **overrides}
    return ModelScopeStorage(repo, **options)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_since(site: ModelScopeServer, start: int):
    return site.requests[start:]


@pytest.fixture
def tiny(modelscope_server):
    """A private repo with a tag: a tiny Llama in two shards, a subfolder with a 3 MiB file."""
    repo = repo_id("tiny-llama")
    folder = modelscope_server.repo(repo, private=True, tags=("v1.0",))
    trees.write_tiny_llama(folder, shards=2)
    (folder / "extra").mkdir()
    (folder / "extra" / "big.bin").write_bytes(os.urandom(3 * MiB + 12345))
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return repo, folder, files


# =========================================================================== browse and inspect


def test_storage_lists_folders_and_files_with_sizes_from_one_listing(modelscope_server, tiny):
    repo, folder, files = tiny
    before = len(modelscope_server.requests)
    ms = storage(modelscope_server, repo)
    assert isinstance(ms, Storage)

    root = ms.list_dir("")
    assert root.folders == ["extra"]
    expected = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert [f.name for f in root.files] == expected  # .gitattributes is the repo's, not the model's
    assert ".gitattributes" not in root.file_names()
    for name in expected:
        assert root.size_of(name) == (folder / name).stat().st_size
    assert ms.list_dir("extra").files == [FileEntry("big.bin", len(files["extra/big.bin"]))]
    assert ms.exists("config.json") and ms.exists("extra") and ms.exists("")
    assert not ms.exists("nope.json")
    for path, reason in (("nope", "NotFound"), ("config.json", "NotAFolder"), ("../other", "InvalidPath")):
        with pytest.raises(StorageError) as error:
            ms.list_dir(path)
        assert error.value.reason == reason, path

    calls = [(r.method, r.path) for r in requests_since(modelscope_server, before)]
    listings = [r for r in requests_since(modelscope_server, before) if r.path.endswith("/repo/files")]
    assert calls[0] == ("POST", "/api/v1/login") and calls[1][1].endswith("/revisions")
    assert len(listings) == 1 and listings[0].query["Recursive"] == "True"
    assert listings[0].query["Revision"] == "master"
    # After the login the session cookie authenticates; the SDK token itself is never sent again.
    assert all(r.cookie.startswith("m_session_id=") for r in requests_since(modelscope_server, before)[1:])
    assert not any(modelscope_server.token in r.cookie for r in modelscope_server.requests)


def test_storage_reads_ranges_without_downloading_weights(modelscope_server, tiny):
    repo, _, files = tiny
    ms = storage(modelscope_server, repo)
    config = files["config.json"]
    assert ms.read_bytes("config.json") == config
    assert ms.read_bytes("config.json", 2, 10) == config[2:12]
    assert ms.read_bytes("config.json", len(config) + 5, 10) == b""  # past the end, like a file
    assert ms.read_bytes("extra/big.bin", 1000, 16) == files["extra/big.bin"][1000:1016]
    with pytest.raises(StorageError) as missing:
        ms.read_bytes("nope.bin", 0, 8)
    assert missing.value.reason == "NotFound"


def test_layout_and_fit_of_a_modelscope_repo_match_the_same_files_read_locally(modelscope_server, tiny):
    repo, folder, _ = tiny
    ms = storage(modelscope_server, repo)
    before = len(modelscope_server.requests)

    layout = check_layout(ms, "", "vllm")
    assert layout.ok, layout
    assert layout.as_dict() == check_layout(LocalStorage(folder), "", "vllm").as_dict()
    fit = estimate_fit(ms, "", gpu_memory_gib=80, gpu_count=1)
    assert fit.parameters_source == "safetensors headers" and fit.fits
    assert fit.as_dict() == estimate_fit(LocalStorage(folder), "", gpu_memory_gib=80, gpu_count=1).as_dict()

    reads = [r for r in requests_since(modelscope_server, before) if r.path.endswith("/repo")]
    shards = [r for r in reads if r.query["FilePath"].endswith(".safetensors")]
    assert shards and all(r.status == 206 for r in shards)  # headers only: ranged reads


def test_storage_errors_name_the_cause(modelscope_server, hub_server, tiny):
    repo, _, _ = tiny
    cases = {
        "AccessDenied": storage(modelscope_server, repo, token="ms-wrong"),
        "NoSuchRepo": storage(modelscope_server, repo_id("missing")),
        "NoSuchRevision": storage(modelscope_server, repo, revision="v9"),
    }
    messages = {}
    for reason, ms in cases.items():
        with pytest.raises(StorageError) as error:
            ms.check()
        assert error.value.reason == reason, error.value.message
        assert "ms-wrong" not in error.value.message and modelscope_server.token not in error.value.message
        messages[reason] = error.value.message
    assert "master, v1.0" in messages["NoSuchRevision"]  # names the revisions there are
    with pytest.raises(StorageError) as private:  # private, no token: the site says 403
        storage(modelscope_server, repo, token=None).check()
    assert private.value.reason == "AccessDenied" and "without a token" in private.value.message
    storage(modelscope_server, repo, revision="v1.0").check()  # a tag is a revision

    started = time.monotonic()
    with pytest.raises(StorageError) as down:
        storage(modelscope_server, repo, endpoint=f"http://127.0.0.1:{closed_port()}").list_dir("")
    assert down.value.reason == "Unreachable"
    assert time.monotonic() - started < 5  # no retry loop inside a console request

    with pytest.raises(StorageError) as elsewhere:  # a Hugging Face endpoint given for ModelScope
        storage(modelscope_server, repo, endpoint=hub_server.endpoint).check()
    assert elsewhere.value.reason == "NotTheApi", elsewhere.value.message

    empty = repo_id("empty")
    modelscope_server.repo(empty)
    with pytest.raises(StorageError) as nothing:
        storage(modelscope_server, empty, token=None).check()
    assert nothing.value.reason == "EmptyRepo"


# =========================================================================== the copier


def ms_env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSCOPE")}
    if token:
        env["MODELSCOPE_API_TOKEN"] = token
    return env


def copier(site: ModelScopeServer, source: str, dest: Path, token: str | None = "", **more) -> Copier:
    args = [f"--source=modelscope://{source}", f"--dest={dest}", f"--endpoint-url={site.endpoint}"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in more.items()]
    return Copier(args, ms_env(site.token if token == "" else token))


def copy_ms(site: ModelScopeServer, source: str, dest: Path, token: str | None = "", **more) -> Run:
    return copier(site, source, dest, token, **more).finish()


def test_copy_then_cache_hit_then_one_changed_file(modelscope_server, tiny, tmp_path):
    repo, folder, files = tiny
    dest = tmp_path / "cache"

    run = copy_ms(modelscope_server, repo, dest)
    assert run.returncode == 0, run.events
    assert run.kinds()[0] == "plan" and "progress" in run.kinds() and run.last["event"] == "done"
    plan = run.first("plan")
    assert (plan["files_total"], plan["bytes_total"]) == (len(files), sum(map(len, files.values())))
    assert tree(dest) == files
    assert leftovers(dest) == []
    listed = sorted(tuple(f) for e in run.events if e["event"] == "files" for f in e["files"])
    assert listed == sorted((path, len(data)) for path, data in files.items())
    assert modelscope_server.token not in json.dumps(run.events)

    hit = copy_ms(modelscope_server, repo, dest)
    assert hit.returncode == 0, hit.events
    assert (hit.last["files_skipped"], hit.last["files_copied"]) == (len(files), 0)

    # The tag points at the same files: the sha256s match, nothing moves.
    tagged = copy_ms(modelscope_server, f"{repo}@v1.0", dest)
    assert (tagged.returncode, tagged.last["files_copied"]) == (0, 0), tagged.events

    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "changed": true}')
    (folder / "tokenizer.json").unlink()
    changed = copy_ms(modelscope_server, repo, dest)
    assert changed.returncode == 0, changed.events
    assert (changed.last["files_copied"], changed.last["files_removed"]) == (1, 1)
    assert changed.last["files_skipped"] == len(files) - 2
    assert (dest / "config.json").read_bytes() == (folder / "config.json").read_bytes()
    assert not (dest / "tokenizer.json").exists()


def test_a_download_that_does_not_match_its_sha256_is_not_kept(modelscope_server, tiny, tmp_path):
    repo, _, files = tiny
    dest = tmp_path / "cache"
    modelscope_server.corrupt.add((repo, "extra/big.bin"))
    try:
        run = copy_ms(modelscope_server, repo, dest)
    finally:
        modelscope_server.corrupt.discard((repo, "extra/big.bin"))
    assert (run.returncode, run.last["reason"]) == (2, "CopyFailed"), run.events
    assert "extra/big.bin" in run.last["message"] and "sha256" in run.last["message"]
    assert not (dest / "extra" / "big.bin").exists()  # same size, wrong bytes: refused
    assert tree(dest) == {p: b for p, b in files.items() if p != "extra/big.bin"}

    again = copy_ms(modelscope_server, repo, dest)  # the rest is kept; the re-run copies the one file
    assert (again.returncode, again.last["files_copied"]) == (0, 1), again.events
    assert tree(dest) == files


def test_copy_failures_say_why(modelscope_server, tiny, tmp_path):
    repo, _, _ = tiny
    cases = [
        (repo, "ms-wrong", "AccessDenied", "refused the token"),
        (repo, None, "AccessDenied", "without a token"),
        (repo_id("missing"), "", "NoSuchRepo", "no repository"),
        (f"{repo}@v9", "", "NoSuchRevision", "'v9'"),
        ("not-a-repo", "", "BadArguments", "modelscope://owner/name"),
    ]
    for i, (source, token, reason, words) in enumerate(cases):
        run = copy_ms(modelscope_server, source, tmp_path / f"cache-{i}", token=token)
        assert (run.returncode, run.last["event"], run.last["reason"]) == (2, "error", reason), run.events
        assert words in run.last["message"]
        assert "ms-wrong" not in run.last["message"]
        assert modelscope_server.token not in json.dumps(run.events)

    started = time.monotonic()
    args = [f"--source=modelscope://{repo}", f"--dest={tmp_path / 'down'}"]
    down = Copier(
        [*args, f"--endpoint-url=http://127.0.0.1:{closed_port()}"], ms_env(modelscope_server.token)
    ).finish()
    assert (down.returncode, down.last["reason"]) == (2, "SourceUnreachable"), down.events
    assert time.monotonic() - started < 15


def test_sigterm_stops_a_modelscope_download_at_once(modelscope_server, tmp_path, monkeypatch):
    """Downloads run on daemon threads: the copier does not wait for a big file to finish."""
    repo = repo_id("big")
    folder = modelscope_server.repo(repo)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(os.urandom(64 * MiB))
    monkeypatch.setattr(modelscope_server, "rate", 8 * MiB)  # 8 s for the big file
    dest = tmp_path / "cache"
    running = copier(modelscope_server, repo, dest, token=None)
    deadline = time.monotonic() + 60
    while (event := running.next_event(deadline)) is not None:
        if event["event"] == "progress" and event["bytes_done"] > 4 * MiB:
            break
    stopped = time.monotonic()
    running.process.send_signal(signal.SIGTERM)
    run = running.finish(timeout=30)
    assert time.monotonic() - stopped < 5
    assert (run.returncode, run.last["reason"]) == (2, "Interrupted"), run.events
    assert tree(dest) == {"config.json": b"{}"}  # the finished file stays, the big one is gone
    assert leftovers(dest) == []


# =========================================================================== rendering the Job


MS_SPEC = PrewarmSpec(
    dataset="ms-models",
    namespace="inference",
    job_name="prewarm-ms-models-3",
    claim_name="dataset-ms-models",
    cache_size="100Gi",
    image="inference-console:latest",
    source="modelscope",
    hub_repo="ZhipuAI/chatglm2-6b",
    hub_revision="v1.0.0",
    hub_endpoint="https://www.modelscope.ai",
)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("credentials", [{"hub_token": "ms-very-secret"}, None])
def test_the_modelscope_prewarm_objects_pass_strict_schemas(credentials, version):
    for obj in render_prewarm(MS_SPEC, credentials=credentials):
        validate(obj, version)


def test_the_job_gets_the_modelscope_source_and_the_token_from_the_secret_only():
    spec = MS_SPEC
    secret, _claim, job = render_prewarm(
        spec, credentials={"hub_token": "ms-very-secret", "s3_secret_key": "x"}
    )
    assert secret["stringData"] == {"MODELSCOPE_API_TOKEN": "ms-very-secret"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "--source=modelscope://ZhipuAI/chatglm2-6b@v1.0.0" in container["args"]
    assert "--endpoint-url=https://www.modelscope.ai" in container["args"]
    assert "ms-very-secret" not in json.dumps(job)
    assert container["envFrom"] == [{"secretRef": {"name": "dataset-ms-models-credentials"}}]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    public = render_prewarm(spec, credentials={})
    assert [o["kind"] for o in public] == ["PersistentVolumeClaim", "Job"]


# =========================================================================== the REST API and the form


def ms_payload(site: ModelScopeServer, repo: str, **overrides) -> dict:
    return {
        "name": "ms-models",
        "kind": "modelscope",
        "hub_repo": repo,
        "hub_endpoint": site.endpoint,
        "hub_token": site.token,
        **overrides,
    }


def test_a_modelscope_dataset_is_checked_when_created(api, modelscope_server, hub_server, tiny):
    repo, _, _ = tiny

    def post(**overrides):
        return api.post("/api/v1/datasets/", ms_payload(modelscope_server, repo, **overrides), format="json")

    for overrides, field in (
        ({"hub_token": "ms-wrong"}, "hub_token"),
        ({"hub_token": ""}, "hub_token"),  # private: no token, no repo
        ({"hub_repo": repo_id("missing")}, "hub_repo"),
        ({"hub_repo": "no-owner"}, "hub_repo"),
        ({"hub_revision": "v9"}, "hub_revision"),
        ({"hub_revision": "-bad"}, "hub_revision"),
        ({"hub_repo": ""}, "hub_repo"),
        ({"hub_endpoint": f"http://127.0.0.1:{closed_port()}"}, "hub_endpoint"),
        ({"hub_endpoint": "not a url"}, "hub_endpoint"),
        ({"hub_endpoint": hub_server.endpoint}, "hub_endpoint"),  # a Hugging Face mirror, not ModelScope
    ):
        response = post(**overrides)
        assert response.status_code == 400 and field in response.json(), (overrides, response.content)
        text = response.content.decode()
        assert "ms-wrong" not in text and modelscope_server.token not in text
    assert not Dataset.objects.exists()  # nothing half-created

    created = post()
    assert created.status_code == 201, created.content
    body = created.json()
    assert modelscope_server.token not in json.dumps(body) and "hub_token" not in body
    assert body["hub_revision"] == "master"  # ModelScope's default branch, filled in
    assert body["location"] == f"modelscope://{repo}@master via {modelscope_server.endpoint}"
    assert body["has_credentials"]
    stored = Dataset.objects.get(id=body["id"])
    assert stored.prewarmed and modelscope_server.token not in stored.credentials_encrypted
    assert stored.credentials() == {"hub_token": modelscope_server.token}
    fetched = api.get(f"/api/v1/datasets/{body['id']}/").json()
    assert modelscope_server.token not in json.dumps(fetched)


def test_the_create_form_checks_the_token_and_never_shows_it(client, user, modelscope_server, tiny):
    repo, _, _ = tiny
    client.force_login(user)
    form = {
        "name": "ms-form",
        "kind": "modelscope",
        "hub_repo": repo,
        "hub_revision": "v1.0",
        "hub_endpoint": modelscope_server.endpoint,
        "hub_token": "ms-wrong",
    }
    page = client.get("/datasets/new/").content.decode()
    assert 'value="modelscope"' in page and 'name="hub_token"' in page
    refused = client.post("/datasets/new/", form)
    assert refused.status_code == 200 and "ModelScope refused the token" in refused.content.decode()
    assert "ms-wrong" not in refused.content.decode()  # write-only: not rendered back
    no_revision = client.post(
        "/datasets/new/", {**form, "hub_token": modelscope_server.token, "hub_revision": "v9"}
    )
    assert no_revision.status_code == 200 and "has no revision" in no_revision.content.decode()
    created = client.post("/datasets/new/", {**form, "hub_token": modelscope_server.token})
    assert created.status_code == 302, created.content.decode()[-2000:]
    dataset = Dataset.objects.get(name="ms-form")
    detail = client.get(created["Location"]).content.decode()
    assert "ModelScope" in detail and "stored (encrypted)" in detail and modelscope_server.token not in detail
    assert f"modelscope://{repo}@v1.0" in detail
    edit = client.get(f"/datasets/{dataset.pk}/edit/").content.decode()
    assert "(stored; leave empty to keep)" in edit and modelscope_server.token not in edit


# =========================================================================== prewarm end to end


@pytest.mark.integration
def test_a_modelscope_dataset_is_prewarmed_through_the_cluster(
    api, modelscope_server, tiny, celery_worker, watcher
):
    repo, _, files = tiny
    check_hub_prewarm_end_to_end(
        api,
        ms_payload(modelscope_server, repo),
        files,
        source=f"modelscope://{repo}@master",
        endpoint=modelscope_server.endpoint,
        token=modelscope_server.token,
        token_env="MODELSCOPE_API_TOKEN",
    )

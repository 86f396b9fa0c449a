"""The simulated cluster's stand-in servers: a Running service answers its runtime's protocol on
127.0.0.1, and its server goes when its pods go (delete, scale to 0, failure).

The cluster runs on a fake clock (no sleeps); the stand-ins are real detached processes
started through the same runner as Job pods, and every request goes over HTTP to 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import shutil
import struct
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.db import connection

from deploy.clusters.simulated import SimulatedCluster
from deploy.clusters.simulated import standins as standin_processes
from deploy.clusters.simulated.jobs import alive
from deploy.render import render_service
from deploy.spec import ModelVolume, ServiceSpec
from services import phases
from services.models import InferenceService
from tests.clock import FakeClock
from tests.stack import wait_for

NS = "inference"
PULL, LOAD = 3, 5


def make_cluster(clock: FakeClock, state_dir: Path, faults_file: Path) -> SimulatedCluster:
    return SimulatedCluster(
        nodes_file=str(Path(settings.BASE_DIR) / "deploy" / "simulated_nodes.json"),
        faults_file=str(faults_file),
        pull_seconds=PULL,
        load_seconds=LOAD,
        poll_seconds=0.05,
        state_dir=str(state_dir),
        clock=clock,
    )


@pytest.fixture
def cluster(clock, tmp_path):
    cluster = make_cluster(clock, tmp_path / "state", tmp_path / "faults.json")
    yield cluster
    # Whatever a test left running: stop it, as the watcher would once the pods are gone.
    standin_processes.sync_all(cluster.state, {})


def spec(runtime: str = "vllm", name: str = "chat", **changes: Any) -> ServiceSpec:
    values: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "runtime": runtime,
        "image": "vllm/vllm-openai:v0.11.0" if runtime == "vllm" else "nvcr.io/nvidia/tritonserver:25.01-py3",
        "model_volume": ModelVolume(kind="pvc", claim_name="models"),
        "model_path": "org/model",
        "served_model_name": "demo-model",
        "gpu_count": 1,
    }
    values.update(changes)
    return ServiceSpec(**values)


def call(url: str, body: Any = None, *, method: str = "", headers: dict[str, str] | None = None):
    """(status, headers, body bytes) of one request; error statuses are returned, not raised."""
    assert urlparse(url).hostname == "127.0.0.1"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method or ("POST" if data is not None else "GET"),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def running(cluster: SimulatedCluster, clock: FakeClock, the_spec: ServiceSpec) -> str:
    """Apply the service, let its pod become ready, return its endpoint."""
    cluster.apply(render_service(the_spec))
    assert cluster.service_endpoint(namespace=NS, name=the_spec.name) is None  # still pulling
    clock.advance(PULL + 1)
    assert cluster.service_endpoint(namespace=NS, name=the_spec.name) is None  # loading, not ready
    clock.advance(LOAD)
    url = cluster.service_endpoint(namespace=NS, name=the_spec.name)
    assert url and urlparse(url).hostname == "127.0.0.1"
    return url


def standin_pids(cluster: SimulatedCluster, name: str = "chat") -> list[int]:
    folder = standin_processes.service_folder(cluster.state, NS, name)
    if not folder.is_dir():
        return []
    return [int((pod / "pid").read_text()) for pod in folder.iterdir() if (pod / "pid").exists()]


def sse_events(body: bytes) -> list[Any]:
    events = []
    for block in body.decode().split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


pytestmark = [pytest.mark.django_db]


def test_vllm_standin_speaks_openai_and_is_gone_after_delete(cluster, clock):
    url = running(cluster, clock, spec())
    (pid,) = standin_pids(cluster)
    assert alive(pid)

    assert call(f"{url}/health")[0] == 200
    status, _, body = call(f"{url}/v1/models")
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["demo-model"]

    request = {"model": "demo-model", "messages": [{"role": "user", "content": "Hello there stand-in"}]}
    status, _, body = call(f"{url}/v1/chat/completions", request)
    reply = json.loads(body)
    assert status == 200 and reply["object"] == "chat.completion"
    text = reply["choices"][0]["message"]["content"]
    assert text.startswith("[simulated demo-model]") and "Hello there stand-in" in text
    assert reply["usage"]["prompt_tokens"] == 3
    assert reply["usage"]["completion_tokens"] == len(text.split())

    status, headers, body = call(
        f"{url}/v1/chat/completions",
        {**request, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk, _ = events
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == reply["usage"]

    # A request body streamed in chunks (as a proxy that does not buffer sends it) reads the same.
    payload = json.dumps(request).encode()
    connection = http.client.HTTPConnection(urlparse(url).hostname, urlparse(url).port, timeout=10)
    connection.request("POST", "/v1/chat/completions", body=iter([payload[:7], payload[7:]]))
    chunked = connection.getresponse()
    assert chunked.status == 200 and json.loads(chunked.read())["choices"][0]["message"]["content"] == text
    connection.close()

    # Without include_usage there is no usage chunk.
    _, _, body = call(f"{url}/v1/chat/completions", {**request, "stream": True})
    assert all("usage" not in e for e in sse_events(body)[:-1])

    status, _, body = call(
        f"{url}/v1/completions", {"model": "demo-model", "prompt": "one two", "max_tokens": 3}
    )
    completion = json.loads(body)
    assert status == 200 and completion["choices"][0]["finish_reason"] == "length"
    assert len(completion["choices"][0]["text"].split()) == 3 and completion["usage"]["prompt_tokens"] == 2
    _, _, body = call(f"{url}/v1/completions", {"model": "demo-model", "prompt": "one two", "stream": True})
    assert "".join(e["choices"][0]["text"] for e in sse_events(body)[:-1]).startswith("[simulated")

    status, _, body = call(f"{url}/v1/embeddings", {"model": "demo-model", "input": ["a b", "c"]})
    embeddings = json.loads(body)
    assert status == 200 and [len(d["embedding"]) for d in embeddings["data"]] == [16, 16]
    assert embeddings["usage"]["prompt_tokens"] == 3

    status, _, body = call(f"{url}/v1/chat/completions", {**request, "model": "other"})
    assert status == 404 and "does not exist" in json.loads(body)["message"]
    status, _, body = call(f"{url}/v1/chat/completions", b"{not json")
    assert status == 400 and json.loads(body)["type"] == "BadRequestError"

    cluster.delete_service(NS, "chat")
    assert not alive(pid)
    assert cluster.service_endpoint(namespace=NS, name="chat") is None
    assert not standin_processes.service_folder(cluster.state, NS, "chat").exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/health", timeout=2)


def triton_binary_body(values: list[float]) -> tuple[bytes, dict[str, str]]:
    """An infer request as tritonclient.http sends it with binary_data=True."""
    raw = struct.pack(f"<{len(values)}f", *values)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, len(values)],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return header + raw, headers


def test_triton_standin_speaks_kserve_v2(cluster, clock):
    url = running(cluster, clock, spec("triton", name="vision"))

    for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/demo-model/ready"):
        assert call(f"{url}{path}")[0] == 200, path
    status, _, body = call(f"{url}/v2/models/demo-model")
    assert status == 200 and json.loads(body)["name"] == "demo-model"
    assert call(f"{url}/v2/models/other/ready")[0] == 404

    request = {
        "id": "42",
        "inputs": [
            {"name": "TEXT", "shape": [1, 2], "datatype": "BYTES", "data": [["hello", "world"]]},
            {"name": "NUMBERS", "shape": [3], "datatype": "INT32", "data": [1, 2, 3]},
        ],
    }
    status, _, body = call(f"{url}/v2/models/demo-model/infer", request)
    reply = json.loads(body)
    assert status == 200 and reply["model_name"] == "demo-model" and reply["id"] == "42"
    assert reply["outputs"] == [
        {"name": "OUTPUT0", "datatype": "BYTES", "shape": [1, 2], "data": ["hello", "world"]},
        {"name": "OUTPUT1", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]},
    ]
    body, headers = triton_binary_body([0.5, 1.5])
    status, _, answer = call(f"{url}/v2/models/demo-model/versions/1/infer", body, headers=headers)
    assert status == 200 and json.loads(answer)["outputs"][0]["data"] == [0.5, 1.5]
    status, _, body = call(f"{url}/v2/models/demo-model/infer", {"inputs": [{"name": "x"}]})
    assert status == 400 and "shape" in json.loads(body)["error"]

    cluster.delete_service(NS, "vision")
    assert cluster.service_endpoint(namespace=NS, name="vision") is None


def test_scale_to_zero_and_failure_stop_the_standin(cluster, clock, tmp_path):
    the_spec = spec()
    running(cluster, clock, the_spec)
    (pid,) = standin_pids(cluster)

    cluster.apply(render_service(ServiceSpec(**{**the_spec.__dict__, "replicas": 0})))
    assert not alive(pid) and standin_pids(cluster) == []
    assert cluster.service_endpoint(namespace=NS, name="chat") is None

    cluster.apply(render_service(the_spec))
    clock.advance(PULL + LOAD + 1)
    assert cluster.service_endpoint(namespace=NS, name="chat")
    (pid,) = standin_pids(cluster)
    # The pod starts crash-looping: the next look at the service stops its stand-in.
    rules = [{"labels": {"inference.console/service": "chat"}, "fail": "CrashLoopBackOff"}]
    (tmp_path / "faults.json").write_text(json.dumps(rules))
    cluster.observe(NS, "chat")
    assert not alive(pid)
    assert cluster.service_endpoint(namespace=NS, name="chat") is None


def test_another_process_finds_the_same_standin(cluster, clock, tmp_path):
    url = running(cluster, clock, spec())
    (pid,) = standin_pids(cluster)
    # A second adapter over the same state (the web server next to the worker and the watcher).
    other = make_cluster(clock, cluster.state.root, tmp_path / "faults.json")
    assert other.service_endpoint(namespace=NS, name="chat") == url
    assert standin_pids(cluster) == [pid]


def test_watcher_loop_starts_and_stops_standins(cluster, clock):
    cluster.apply(render_service(spec()))
    clock.advance(PULL + LOAD + 1)
    # An orphan: a stand-in left from a pod that no longer exists (say the database was reset).
    wanted = [standin_processes.Wanted(pod="gone-pod", runtime="vllm", models=("m",))]
    assert standin_processes.sync_service(cluster.state, NS, "gone", wanted)
    (orphan,) = standin_pids(cluster, "gone")

    cluster.sync_standins()  # what the watcher does on every poll

    (pid,) = standin_pids(cluster)
    assert alive(pid) and not alive(orphan)
    assert not standin_processes.service_folder(cluster.state, NS, "gone").exists()


def test_standin_exits_when_its_folder_is_removed(cluster, clock):
    running(cluster, clock, spec())
    (pid,) = standin_pids(cluster)
    shutil.rmtree(standin_processes.service_folder(cluster.state, NS, "chat"))
    wait_for(lambda: not alive(pid), timeout=10, what="the orphaned stand-in to exit")


def test_bound_endpoint_wins_in_every_process_until_unbound(cluster, clock, tmp_path):
    cluster.bind_endpoint(namespace=NS, name="chat", url="http://127.0.0.1:9/upstream")
    other = make_cluster(clock, tmp_path / "other-state", tmp_path / "faults.json")
    assert other.service_endpoint(namespace=NS, name="chat") == "http://127.0.0.1:9/upstream"
    cluster.bind_endpoint(namespace=NS, name="chat", url="http://127.0.0.1:10")
    assert other.service_endpoint(namespace=NS, name="chat") == "http://127.0.0.1:10"
    cluster.unbind_endpoint(namespace=NS, name="chat")
    assert other.service_endpoint(namespace=NS, name="chat") is None  # no pods: no stand-in

    cluster.bind_endpoint(namespace=NS, name="chat", url="http://127.0.0.1:10")
    cluster.delete_service(NS, "chat")
    assert cluster.service_endpoint(namespace=NS, name="chat") is None


def _phase(service_id: int) -> str:
    connection.close()  # see the worker's commits
    return InferenceService.objects.get(id=service_id).phase


def test_the_watcher_backs_every_running_service_with_a_standin(
    api, service_payload, celery_worker, watcher, fast_cluster
):
    """The embedded default's loop: create through the API, the worker applies, the watcher sees
    Running and starts the stand-in by itself; deleting the service stops it."""
    service_id = api.post("/api/v1/services/", service_payload, format="json").json()["id"]
    wait_for(lambda: _phase(service_id) == phases.RUNNING, what="phase Running")
    folder = standin_processes.service_folder(fast_cluster.state, NS, service_payload["name"])
    wait_for(
        lambda: any((p / "url").exists() for p in folder.glob("*")), what="the watcher to start a stand-in"
    )
    url = fast_cluster.service_endpoint(namespace=NS, name=service_payload["name"])
    (pid,) = standin_pids(fast_cluster, service_payload["name"])
    status, _, body = call(f"{url}/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == service_payload["name"]

    assert api.delete(f"/api/v1/services/{service_id}/").status_code == 202
    wait_for(lambda: _phase(service_id) == phases.DELETED, what="phase Deleted")
    assert not alive(pid) and not folder.exists()

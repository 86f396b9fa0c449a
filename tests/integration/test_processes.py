"""The console's processes as they are started for real: `manage.py watch_cluster`, and the
README's `./run` on the embedded default (SQLite, filesystem broker, simulated cluster)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from django.conf import settings
from django.db import connection

from deploy.tasks import reconcile_service
from services import phases
from services.actions import service_create
from services.models import InferenceService
from tests.datasets.modeltrees import write_tiny_llama
from tests.stack import wait_for

ROOT = Path(__file__).resolve().parents[2]
# Variables that would switch the console away from its embedded default.
REAL_PARTS = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CLUSTER_BACKEND"}


def _stop(process: subprocess.Popen, timeout: float = 30) -> int:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("process group did not stop on SIGTERM")


def test_watch_cluster_command_records_phases(
    transactional_db, _require_real_parts, user, queue, dataset, tmp_path
):
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "SIMULATED_PULL_SECONDS": "0.5",
        "SIMULATED_LOAD_SECONDS": "1",
        "WATCH_POLL_SECONDS": "0.2",
    }
    watcher = subprocess.Popen(
        [sys.executable, "manage.py", "watch_cluster"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        service = service_create(owner=user, name="chat", queue=queue, dataset=dataset, model_path="m")
        reconcile_service(service.id)  # the worker's part, inline

        def running() -> bool:
            connection.close()
            return InferenceService.objects.get(id=service.id).phase == phases.RUNNING

        wait_for(running, timeout=30, what="the watcher process to record Running")
    finally:
        code = _stop(watcher)
    assert code == 0, watcher.stderr.read()
    assert "Watching Simulated cluster" in watcher.stderr.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # 127.0.0.1 only
        return response.status, json.loads(response.read() or b"{}")


def test_run_command_serves_the_embedded_default_end_to_end(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in REAL_PARTS}
    # The Procfile's gateway binds GATEWAY_PORT and GATEWAY_GRPC_PORT (default 8001, 8002): free
    # ones, so no other run collides.
    gateway_port, grpc_port = str(_free_port()), str(_free_port())
    env.update({"PORT": str(port), "CONSOLE_VAR_DIR": str(tmp_path / "var")})
    env.update({"GATEWAY_PORT": gateway_port, "GATEWAY_GRPC_PORT": grpc_port})
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen(
        ["./run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def login_page() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/login/", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(login_page, timeout=180, interval=0.5, what=f"./run to serve {base}")
        output = (tmp_path / "run.log").read_text()
        assert re.search(r"Log in as 'admin' with password \S+", output), output
        assert (tmp_path / "var" / "console.sqlite3").exists()

        token = subprocess.run(
            [str(ROOT / ".venv/bin/python"), "manage.py", "create_api_token", "admin"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert _api("POST", f"{base}/api/v1/queues/", token, {"name": "gpu-h100", "gpu_quota": 8})[0] == 201
        export = tmp_path / "export"  # the simulated cluster's NFS server is this machine
        write_tiny_llama(export / "THUDM" / "chatglm2-6b")
        dataset = {"name": "nfs-models", "kind": "nfs", "nfs_server": "127.0.0.1", "nfs_path": str(export)}
        status, created = _api("POST", f"{base}/api/v1/datasets/", token, dataset)
        assert status == 201, created
        spec = {
            "name": "chat",
            "queue": "gpu-h100",
            "dataset": "nfs-models",
            "model_path": "THUDM/chatglm2-6b",
        }
        status, body = _api("POST", f"{base}/api/v1/services/", token, spec)
        assert status == 201
        url = f"{base}/api/v1/services/{body['id']}/"

        seen: list[dict] = []

        def phase() -> str:
            seen.append(_api("GET", url, token)[1]["status"])
            return seen[-1]["phase"]

        # Generous: on a loaded 2-core machine every process start (copier, runner) takes seconds.
        try:
            wait_for(lambda: phase() == phases.RUNNING, timeout=240, interval=0.5, what="Running via ./run")
        except pytest.fail.Exception:
            pytest.fail(f"not Running via ./run; last statuses {seen[-3:]}; log in {tmp_path / 'run.log'}")
        progress = _api("GET", f"{base}/api/v1/datasets/{created['id']}/prewarm/", token)[1]
        assert progress["status"] == "Succeeded" and progress["bytes_done"] == progress["bytes_total"] > 0

        # The model answers through the gateway ./run started, at the address the API gives, with
        # a key made through the API: the simulated pod's stand-in server answers.
        gateway_url = _api("GET", url, token)[1]["access"]["gateway_url"]
        assert gateway_url == f"http://127.0.0.1:{gateway_port}/chat"
        key_spec = {"name": "e2e", "services": [body["id"]]}
        status, new_key = _api("POST", f"{base}/api/v1/keys/", token, key_spec)
        assert status == 201, new_key
        chat = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
        status, answer = _api("POST", f"{gateway_url}/v1/chat/completions", new_key["key"], chat)
        assert status == 200 and "[simulated chat]" in answer["choices"][0]["message"]["content"], answer
        # Its gRPC listener answers too: the key is checked, then vLLM has no gRPC to relay to.
        metadata = (("x-inference-service", "chat"), ("authorization", f"Bearer {new_key['key']}"))
        with (
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
            pytest.raises(grpc.RpcError) as refused,
        ):
            channel.unary_unary("/inference.GRPCInferenceService/ServerLive")(
                b"", metadata=metadata, timeout=30
            )
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, refused.value.details()
        assert _api("DELETE", url, token)[0] == 202
        wait_for(lambda: phase() == phases.DELETED, timeout=60, interval=0.5, what="Deleted via ./run")
    finally:
        _stop(run, timeout=60)
        log.close()

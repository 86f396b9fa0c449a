"""Fixtures for the gateway: `manage.py run_gateway` as a real process against this test's
PostgreSQL database and Redis, in front of a mock model server on 127.0.0.1 (upstream.py).
Registered for every tier by tests/conftest.py (the browser tier calls the gateway too)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings as django_settings
from django.db import connection

from auth.key_actions import inference_key_create
from console.audit import SYSTEM
from deploy.clusters import get_cluster
from services import phases
from services.models import InferenceService
from tests.gateway.upstream import MockUpstream, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class GatewayProcess:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def redis_prefix(settings):
    """A Redis namespace of this test's own (keys, channel, stream), shared with the gateway."""
    prefix = f"gwtest:{secrets.token_hex(4)}:"
    settings.GATEWAY_REDIS_PREFIX = prefix
    yield prefix
    if django_settings.REDIS_URL:
        client = redis.Redis.from_url(django_settings.REDIS_URL)
        names = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if names:
            client.delete(*names)


@pytest.fixture
def gateway_env(transactional_db, redis_prefix, tmp_path):
    """Environment for gateway processes: the test database (committed rows only, hence
    transactional_db), this test's Redis prefix, the same SECRET_KEY (CONSOLE_VAR_DIR)."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "SIMULATED_STATE_DIR": str(tmp_path / "simulated"),
        "CLUSTER_BACKEND": "simulated",
        "SECRET_KEY": django_settings.SECRET_KEY,
        "CREDENTIALS_KEY": django_settings.CREDENTIALS_KEY or "",
        "SERVICE_NAMESPACE": django_settings.SERVICE_NAMESPACE,
        "PYTHONUNBUFFERED": "1",
        "GATEWAY_GRPC_PORT": "0",  # gRPC only where a test asks for it (test_grpc.py)
    }
    return env


@pytest.fixture
def start_gateway(gateway_env, tmp_path):
    """Start `manage.py run_gateway` processes; all are stopped at the end of the test."""
    started: list[GatewayProcess] = []

    def start(**extra_env: str) -> GatewayProcess:
        port = free_port()
        log = tmp_path / f"gateway-{port}.log"
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_gateway", "--port", str(port)],
            cwd=ROOT,
            env={**gateway_env, **extra_env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        gateway = GatewayProcess(process, port, log)
        started.append(gateway)
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"run_gateway exited with {process.returncode}:\n{log.read_text()}")
            try:
                if requests.get(f"{gateway.url}/-/health", timeout=1).status_code == 200:
                    return gateway
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"run_gateway did not answer within 30 s:\n{log.read_text()}")
            time.sleep(0.05)

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def upstream():
    server = MockUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def make_service(user, queue, dataset):
    """A Running service bound (on the simulated cluster) to `url`, its gRPC port to `grpc`."""

    def make(name: str, url: str | None, grpc: str | None = None, **fields) -> InferenceService:
        fields.setdefault("phase", phases.RUNNING)
        service = InferenceService.objects.create(
            name=name,
            namespace=django_settings.SERVICE_NAMESPACE,
            owner=user,
            queue=queue,
            dataset=dataset,
            model_path="org/model",
            **fields,
        )
        if url is not None:
            get_cluster().bind_endpoint(namespace=service.namespace, name=service.name, url=url, grpc=grpc)
        return service

    return make


@pytest.fixture
def make_key(user):
    """A key made by the console's own action (shown once: the plaintext is returned)."""

    def make(services: list[InferenceService], name: str = "tests", **fields):
        return inference_key_create(
            owner=user, created_by=user, name=name, services=services, context=SYSTEM, **fields
        )

    return make

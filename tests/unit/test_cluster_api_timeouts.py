"""The adapter's discovery requests time out: a hung API server must not hang the console."""

from __future__ import annotations

import socket
import threading

from kubernetes import client

from deploy.clusters.base import TransientClusterError
from deploy.clusters.kubernetes import api
from deploy.clusters.kubernetes.api import ClusterApi


def test_discovery_against_an_api_server_that_never_answers_times_out(monkeypatch):
    # A listener on 127.0.0.1 that never accepts: the kernel completes the handshakes, then silence.
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setattr(api, "REQUEST_TIMEOUT", (1, 1))
        cluster_api = ClusterApi(client.ApiClient(configuration))
        outcome: list[BaseException] = []

        def discover() -> None:
            try:
                cluster_api.resource_for("apps/v1", "Deployment")
            except BaseException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=discover, daemon=True)  # a hang must not hang the suite
        caller.start()
        caller.join(timeout=15)
        assert not caller.is_alive(), "discovery still waiting for the API server after 15 s"
        assert len(outcome) == 1 and isinstance(outcome[0], TransientClusterError), outcome

"""The cluster tier: a real kube-apiserver (v1.20.2) from deploy/testenv with fake GPU nodes.

The session starts the harness with deploy/testenv/ensure.sh (built once into HARNESS_DIR,
default /var/cache/infer-console/k8s-harness: a cold build takes ~9 min, a warm start ~2 s)
and leaves it running for the next run. Stop it with:

    HARNESS_DIR=/var/cache/infer-console/k8s-harness deploy/testenv/stop.sh

Every test gets its own namespace (t-<random>), deleted afterwards. Tests talk only to
127.0.0.1; pod IPs and ClusterIPs in this cluster are data, never addresses.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from deploy.clusters.kubernetes import KubernetesCluster

ROOT = Path(__file__).resolve().parents[2]
ENSURE = ROOT / "deploy" / "testenv" / "ensure.sh"
DEFAULT_HARNESS_DIR = "/var/cache/infer-console/k8s-harness"
# setup.sh from nothing: ~6-9 min on 2 cores, more on a busy machine.
BUILD_TIMEOUT_SECONDS = 1800


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first cluster test sets up the session fixture, which may build the harness:
    give it the build's time budget instead of the project-wide 300 s test timeout."""
    for item in items:
        if item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_SECONDS + 120))
            return


@pytest.fixture(scope="session")
def harness_kubeconfig() -> str:
    """Start (building once) the harness; the path of its admin kubeconfig."""
    env = {**os.environ, "HARNESS_DIR": os.environ.get("HARNESS_DIR", DEFAULT_HARNESS_DIR)}
    started = time.monotonic()
    result = subprocess.run(
        [str(ENSURE)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, env=env, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{ENSURE} failed (exit {result.returncode}) after {time.monotonic() - started:.0f} s:\n"
            + "\n".join(result.stderr.splitlines()[-40:]),
            pytrace=False,
        )
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def kube_api_client(harness_kubeconfig: str) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=harness_kubeconfig)
    host = urlparse(api.configuration.host).hostname
    if host != "127.0.0.1":
        api.close()
        pytest.fail(f"refusing to run cluster tests against {api.configuration.host}: not 127.0.0.1")
    yield api
    api.close()  # the harness keeps running for the next session


@pytest.fixture(scope="session")
def cluster(kube_api_client: client.ApiClient) -> KubernetesCluster:
    return KubernetesCluster(kube_api_client)


@pytest.fixture
def namespace(kube_api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace name; the adapter's apply creates it. Deleted (with its content) afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        client.CoreV1Api(kube_api_client).delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def bound_volume(kube_api_client: client.ApiClient) -> Iterator[Callable[..., str]]:
    """bound_volume(namespace, claim, ...) creates a PersistentVolume reserved for that claim.

    The harness has no provisioner and no default StorageClass, so a PVC binds only to a PV
    someone created; claimRef pre-binds it, so no other test's claim can take it. The PV is
    cluster-scoped (the namespace's deletion does not remove it): deleted afterwards.
    """
    core = client.CoreV1Api(kube_api_client)
    created: list[str] = []

    def bind(
        namespace: str,
        claim: str,
        *,
        size: str = "100Gi",
        access_mode: str = "ReadWriteMany",
        storage_class: str = "",  # "" matches a claim without storageClassName here
    ) -> str:
        name = f"{namespace}-{claim}"[:253]
        core.create_persistent_volume(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": [access_mode],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": storage_class,
                    # Only data: no kubelet ever mounts it.
                    "hostPath": {"path": f"/var/lib/harness-volumes/{name}"},
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            }
        )
        created.append(name)
        return name

    yield bind
    for name in created:
        try:
            core.delete_persistent_volume(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

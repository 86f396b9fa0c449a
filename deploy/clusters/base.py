"""The interface every cluster adapter implements."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from deploy.observation import JobObservation, Observation

# Every object the console creates carries these labels; "service" selects one service.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "inference-console"
LABEL_SERVICE = "inference.console/service"
LABEL_SERVICE_UID = "inference.console/service-uid"


def service_selector(name: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SERVICE}={name}"


class ClusterError(Exception):
    """Something the cluster refused or could not do."""


class TransientClusterError(ClusterError):
    """Worth retrying with backoff: timeouts, connection errors, 429, 5xx, conflicts."""


class PermanentClusterError(ClusterError):
    """Retrying will not help: invalid object, kind not served, forbidden. Fails the service."""


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str]
    allocatable: dict[str, str]  # quantities as strings: {"nvidia.com/gpu": "8", "cpu": "64"}
    taints: tuple[dict[str, str], ...] = ()
    ready: bool = True


class Cluster(Protocol):
    """Apply objects, delete by label, observe a service, watch, read pod logs."""

    #: shown in the UI; the simulated cluster says so in its name.
    display_name: str
    simulated: bool

    def apply(self, objects: list[dict[str, Any]]) -> list[str]:
        """Server-side apply every object under the console's field manager.

        Returns a line per object ("Deployment inference/chat: configured"). Idempotent:
        applying the same objects twice changes nothing.
        """
        ...

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete every object carrying the service's labels (foreground is not required)."""
        ...

    def observe(self, namespace: str, name: str) -> Observation:
        """Read the Deployment, its Pods and the Events about them."""
        ...

    def watch(self, on_change: Callable[[str, str], None], stop: Callable[[], bool]) -> None:
        """Block, calling on_change(namespace, service_name) whenever a labelled object changes,
        until stop() returns True."""
        ...

    def pod_logs(self, namespace: str, pod: str, *, previous: bool = False, tail_lines: int = 200) -> str: ...

    def observe_job(self, namespace: str, name: str) -> JobObservation:
        """A Job (found False when absent), its Complete/Failed conditions and its newest pod."""
        ...

    def service_endpoint(self, *, namespace: str, name: str, port: str = "http") -> str | None:
        """Base URL of the service's port named `port` (`http`, or `grpc`: HTTP/2 cleartext) as
        the gateway reaches it, or None when the service has no ready backend or no such port.
        Kubernetes: the cluster DNS name (`http://<name>.<namespace>.svc.cluster.local:8000`);
        simulated: the local stand-in server on 127.0.0.1 that backs a Running service (HTTP
        only), or the upstream a test bound the service to."""
        ...

    def delete_labelled(self, namespace: str, labels: dict[str, str], kinds: tuple[str, ...]) -> None:
        """Delete objects of these kinds (Job, Secret, PersistentVolumeClaim, ...) carrying the labels;
        a Job's pods go with it."""
        ...

    def nodes(self) -> Iterable[NodeInfo]: ...

"""KubernetesCluster: the Cluster protocol over a real API server, with the official client.

Credentials come from a kubeconfig or the pod's service account. Objects are written by
server-side apply under one field manager; observe() does a few reads and leaves the mapping
to observe.py; watch() runs the streams of watch.py. Discovery and reads are in api.py, and
every failure is translated as errors.py says.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import urllib3
from django.conf import settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.resource import Resource

from deploy.clusters.base import (
    LABEL_MANAGED_BY,
    LABEL_SERVICE,
    MANAGED_BY,
    NodeInfo,
    PermanentClusterError,
    service_selector,
)
from deploy.clusters.kubernetes.api import (
    DEPLOYMENT,
    JOB,
    OTHER_KINDS,
    REQUEST_TIMEOUT,
    ClusterApi,
    as_dicts,
)
from deploy.clusters.kubernetes.errors import api_errors
from deploy.clusters.kubernetes.observe import (
    Obj,
    job_observation_from,
    node_info,
    observation_from,
    resource_version_of,
)
from deploy.clusters.kubernetes.watch import watch_services
from deploy.clusters.kubernetes.workloads import read_workloads, workload_observations
from deploy.observation import JobObservation, Observation

log = logging.getLogger(__package__)  # the adapter logs as deploy.clusters.kubernetes


def secret_data_from_string_data(obj: Obj) -> Obj:
    """A Secret's stringData moved into data (base64), as the API server would store it.

    stringData is write-only: the server folds it into data, so the live object never matches
    what was applied, every apply re-stamps the manager's managedFields time and rewrites the
    Secret (a new resourceVersion per apply in a new second, seen on 1.20), and a key dropped
    from stringData would stay in data, which nobody owns. Applying data makes it owned and
    the apply idempotent. Other objects are returned as they are; the input is not changed.
    """
    if obj.get("kind") != "Secret" or obj.get("apiVersion") != "v1" or not obj.get("stringData"):
        return obj
    converted = {key: value for key, value in obj.items() if key != "stringData"}
    # stringData wins over data for the same key, as on the server.
    converted["data"] = {
        **(obj.get("data") or {}),
        **{
            key: base64.b64encode(str(value).encode()).decode("ascii")
            for key, value in obj["stringData"].items()
        },
    }
    return converted


class KubernetesCluster(ClusterApi):
    """A real cluster: kubeconfig or in-cluster credentials, server-side apply, watch streams."""

    simulated = False

    def __init__(self, api_client: client.ApiClient, *, field_manager: str | None = None) -> None:
        super().__init__(api_client)
        self._field_manager = field_manager or settings.FIELD_MANAGER
        self._display_name: str | None = None

    @classmethod
    def from_settings(cls) -> KubernetesCluster:
        """settings.KUBECONFIG (and KUBE_CONTEXT) if set, else the pod's service account."""
        try:
            if settings.KUBECONFIG:
                api = config.new_client_from_config(
                    config_file=settings.KUBECONFIG, context=settings.KUBE_CONTEXT or None
                )
            else:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api = client.ApiClient(configuration)
        except (config.ConfigException, OSError, ValueError) as exc:
            where = settings.KUBECONFIG or "in-cluster service account"
            raise PermanentClusterError(f"cannot load the Kubernetes configuration ({where}): {exc}") from exc
        return cls(api, field_manager=settings.FIELD_MANAGER)

    @property
    def display_name(self) -> str:
        """Like "Kubernetes v1.20.2 at https://127.0.0.1:6443"; asks the server once."""
        if self._display_name is None:
            try:
                version = client.VersionApi(self._api).get_code(_request_timeout=REQUEST_TIMEOUT).git_version
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                return f"Kubernetes at {self.host}"  # not cached: try again next time
            self._display_name = f"Kubernetes {version} at {self.host}"
        return self._display_name

    @display_name.setter
    def display_name(self, value: str) -> None:
        self._display_name = value

    # --- apply --------------------------------------------------------------------------

    def apply(self, objects: list[Obj]) -> list[str]:
        """Server-side apply each object in order; one line per object."""
        ensured: set[str] = set()
        return [self._apply_one(obj, ensured) for obj in objects]

    def _apply_one(self, obj: Obj, ensured_namespaces: set[str]) -> str:
        api_version, kind = obj.get("apiVersion") or "", obj.get("kind") or ""
        metadata = obj.get("metadata") or {}
        name = metadata.get("name") or ""
        if not (api_version and kind and name):
            raise PermanentClusterError(
                "cannot apply an object without apiVersion, kind and metadata.name: "
                f"{api_version} {kind} {name}".strip()
            )
        resource = self.resource_for(api_version, kind)
        namespace = None
        if resource.namespaced:
            namespace = metadata.get("namespace")
            if not namespace:
                raise PermanentClusterError(f"cannot apply {kind} {name}: metadata.namespace is missing")
            if namespace not in ensured_namespaces:
                self._ensure_namespace(namespace)
                ensured_namespaces.add(namespace)
        label = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
        with api_errors(f"cannot apply {label}"):
            before = self.get_or_none(resource, name, namespace)
            after = self.dynamic.server_side_apply(
                resource,
                body=secret_data_from_string_data(obj),
                name=name,
                namespace=namespace,
                field_manager=self._field_manager,
                force_conflicts=True,  # the console owns these fields; kubectl edits are overwritten
                serializer=as_dicts,
                _request_timeout=REQUEST_TIMEOUT,
            )
        if before is None:
            return f"{label}: created"
        # A no-op apply leaves resourceVersion alone (controllers' status writes happen between
        # applies, not inside one, so the GET above is the right "before").
        unchanged = resource_version_of(before) == resource_version_of(after)
        return f"{label}: {'unchanged' if unchanged else 'configured'}"

    def _ensure_namespace(self, namespace: str) -> None:
        """Create the namespace (by server-side apply) when it does not exist yet."""
        resource = self.resource_for("v1", "Namespace")
        try:
            with api_errors(f"cannot read namespace {namespace}"):
                if self.get_or_none(resource, namespace, None) is not None:
                    return
        except PermanentClusterError as exc:
            # A console limited to its namespaces may not read Namespace objects at all; the
            # apply that follows tells whether the namespace is there.
            log.info("not checking namespace %s: %s", namespace, exc)
            return
        with api_errors(f"cannot create namespace {namespace}"):
            self.dynamic.server_side_apply(
                resource,
                body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                name=namespace,
                field_manager=self._field_manager,
                force_conflicts=True,
                serializer=as_dicts,
                _request_timeout=REQUEST_TIMEOUT,
            )
        log.info("created namespace %s", namespace)

    # --- delete ---------------------------------------------------------------------------

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete every labelled object of the service; the garbage collector takes the pods."""
        selector = service_selector(name)
        for api_version, kind in (DEPLOYMENT, *OTHER_KINDS):
            resource = self.resource_for(api_version, kind)
            with api_errors(f"cannot delete the {kind}s of service {namespace}/{name}"):
                self._delete_matching(resource, namespace, selector)

    def delete_labelled(self, namespace: str, labels: dict[str, str], kinds: tuple[str, ...]) -> None:
        """Delete the objects of these kinds carrying all the labels, in the order given.

        Background propagation: a Job's pods go with it (batch/v1 Jobs deleted through the API
        orphan their pods by default). Already gone is fine, so calling it twice is too.
        """
        if not labels:
            # An empty selector matches everything in the namespace: never what a caller means.
            raise ValueError("delete_labelled needs at least one label")
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        for kind in kinds:
            resource = self.resource_for_kind(kind)
            with api_errors(f"cannot delete the {kind}s labelled {selector} in {namespace}"):
                self._delete_matching(resource, namespace, selector)

    def _delete_matching(self, resource: Resource, namespace: str, selector: str) -> None:
        """List-then-delete rather than deletecollection: 1.20 does not serve deletecollection
        for Services. Raises the client's exceptions (callers wrap them in api_errors)."""
        for item in self.list_objects(resource, namespace, label_selector=selector):
            item_name = item["metadata"]["name"]
            if item["metadata"].get("deletionTimestamp"):
                continue  # already being deleted (a PVC waits for its pods, a Job for the GC)
            try:
                self.dynamic.delete(
                    resource,
                    name=item_name,
                    namespace=namespace,
                    body={"propagationPolicy": "Background"},
                    serializer=as_dicts,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except ApiException as exc:
                if exc.status != 404:  # already gone is what we wanted
                    raise
            log.info("deleted %s %s/%s", resource.kind, namespace, item_name)

    # --- observe --------------------------------------------------------------------------

    def observe(self, namespace: str, name: str) -> Observation:
        """The Deployment, its pods, the events about them and what else carries the labels."""
        deployments = self.resource_for(*DEPLOYMENT)
        pods_resource = self.resource_for("v1", "Pod")
        replica_sets = self.resource_for("apps/v1", "ReplicaSet")
        events_resource = self.resource_for("v1", "Event")
        service_label = f"{LABEL_SERVICE}={name}"
        with api_errors(f"cannot observe service {namespace}/{name}"):
            deployment = self.get_or_none(deployments, name, namespace)
            pods = self.list_objects(pods_resource, namespace, label_selector=service_label)
            involved = [("Deployment", name)]
            involved += [
                ("ReplicaSet", rs["metadata"]["name"])
                for rs in self.list_objects(replica_sets, namespace, label_selector=service_label)
            ]
            involved += [("Pod", pod["metadata"]["name"]) for pod in pods]
            # One small query per object: a namespace shared by many services can hold
            # thousands of events, and the field selector filters on the server.
            events: list[Obj] = []
            for kind, object_name in involved:
                events += self.list_objects(
                    events_resource,
                    namespace,
                    field_selector=f"involvedObject.kind={kind},involvedObject.name={object_name}",
                )
            other_objects = sum(
                len(
                    self.list_objects(
                        self.resource_for(*kind), namespace, label_selector=service_selector(name)
                    )
                )
                for kind in OTHER_KINDS
            )
            # Kueue's verdict on the pods, where Kueue is installed (workloads.py).
            workloads = workload_observations(read_workloads(self, namespace, pods), pods)
        return observation_from(
            deployment,
            pods,
            events,
            other_objects=other_objects,
            observed_at=datetime.now(UTC),
            workloads=workloads,
        )

    def observe_job(self, namespace: str, name: str) -> JobObservation:
        """The Job and its newest pod (the job controller labels its pods job-name=<name>)."""
        jobs, pods_resource = self.resource_for(*JOB), self.resource_for("v1", "Pod")
        with api_errors(f"cannot observe job {namespace}/{name}"):
            job = self.get_or_none(jobs, name, namespace)
            if job is None:
                return job_observation_from(None, [])
            pods = self.list_objects(pods_resource, namespace, label_selector=f"job-name={name}")
        return job_observation_from(job, pods)

    # --- where the gateway reaches a service -------------------------------------------

    def service_endpoint(self, *, namespace: str, name: str, port: str = "http") -> str | None:
        """`http://<name>.<namespace>.svc.<CLUSTER_DOMAIN>:<port>` when the console's Service
        object exists, else None. The port is read from the live Service (the one named `port`;
        for `http` the first if none is named so), so a runtime with another port still routes
        right."""
        with api_errors(f"cannot read service {namespace}/{name}"):
            service = self.get_or_none(self.resource_for("v1", "Service"), name, namespace)
        if service is None:
            return None
        labels = (service.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY or labels.get(LABEL_SERVICE) != name:
            return None  # a Service someone else made under that name is not ours to route to
        ports = (service.get("spec") or {}).get("ports") or []
        fallback = ports[0] if ports and port == "http" else None
        found = next((p for p in ports if p.get("name") == port), fallback)
        if found is None or not found.get("port"):
            return None
        return f"http://{name}.{namespace}.svc.{settings.CLUSTER_DOMAIN}:{found['port']}"

    # --- watch ----------------------------------------------------------------------------

    def watch(self, on_change: Callable[[str, str], None], stop: Callable[[], bool]) -> None:
        """Report changed services to on_change until stop(); see watch.watch_services."""
        watch_services(self, on_change, stop)

    # --- pod logs and nodes ---------------------------------------------------------------

    def pod_logs(self, namespace: str, pod: str, *, previous: bool = False, tail_lines: int = 200) -> str:
        which = "previous log" if previous else "log"
        with api_errors(f"cannot read the {which} of pod {namespace}/{pod}"):
            text = client.CoreV1Api(self._api).read_namespaced_pod_log(
                name=pod,
                namespace=namespace,
                previous=previous,
                tail_lines=tail_lines,
                _request_timeout=REQUEST_TIMEOUT,
            )
        return text if isinstance(text, str) else str(text or "")

    def nodes(self) -> list[NodeInfo]:
        resource = self.resource_for("v1", "Node")
        with api_errors("cannot list nodes"):
            items = self.list_objects(resource, None)
        return [node_info(item) for item in items]

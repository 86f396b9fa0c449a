"""The Cluster protocol over a real Kubernetes API server, with the official `kubernetes` client.

Sections:
- errors: every client/API failure becomes a TransientClusterError (worth retrying) or a
  PermanentClusterError (carrying the API server's own message);
- discovery and apply: server-side apply through `DynamicClient` under one field manager;
  discovery decides whether the cluster serves an object's apiVersion+kind;
- observe: a few reads, then pure functions from API dicts to an Observation (unit-tested
  without a cluster in tests/unit/test_kubernetes_observe.py);
- watch: one thread per watch stream (Deployments, Pods, Events) calling on_change;
- pod logs and nodes.

All reads go through the dynamic client and come back as plain API dicts (camelCase, as
`kubectl get -o json` shows them), so the mapping functions see exactly what the server sent.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import urllib3
from django.conf import settings
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource, ResourceList

from deploy.clusters.base import (
    LABEL_MANAGED_BY,
    LABEL_SERVICE,
    MANAGED_BY,
    ClusterError,
    NodeInfo,
    PermanentClusterError,
    TransientClusterError,
    service_selector,
)
from deploy.observation import ContainerObservation, EventObservation, Observation, PodObservation

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# (connect, read) seconds for ordinary requests: a hung API server must not hang a worker.
REQUEST_TIMEOUT = (5, 30)
# Server-side timeout of one watch request. Short so that watch() notices stop() within ~2 s;
# re-watching from the last resourceVersion is cheap (the API server serves it from its cache).
WATCH_TIMEOUT_SECONDS = 2
WATCH_MAX_BACKOFF_SECONDS = 30.0
MAX_EVENTS = 30
LIST_PAGE_SIZE = 500

# The kinds a service is made of besides its Deployment (what delete_service removes and
# what other_objects counts). Deployment first: deleting it stops new pods being made.
DEPLOYMENT = ("apps/v1", "Deployment")
OTHER_KINDS = (("v1", "Service"), ("v1", "ConfigMap"), ("v1", "Secret"))

# Kubernetes 1.20's server-side apply answers 500 to objects it cannot type-check (numeric
# quantities, Service ports without protocol, unknown fields): sending it again will not help.
TYPED_PATCH_FAILURE = "failed to create typed patch object"


# --- errors -------------------------------------------------------------------------------


def api_message(exc: ApiException) -> str:
    """The API server's own words: the `message` of the Status body, else whatever it sent."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if body:
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
        return str(body).strip()[:500]
    if exc.reason:
        return str(exc.reason).strip()
    return f"HTTP {exc.status}"


def _status_causes(exc: ApiException) -> set[str]:
    """The `details.causes[].reason` values of a Status body."""
    try:
        status = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return set()
    if not isinstance(status, dict):
        return set()
    causes = (status.get("details") or {}).get("causes") or []
    return {str(cause.get("reason", "")) for cause in causes if isinstance(cause, dict)}


def translate_error(exc: BaseException, context: str) -> ClusterError:
    """Map a client failure to the ClusterError the callers retry on (or not)."""
    if isinstance(exc, ClusterError):
        return exc
    if isinstance(exc, ApiException):
        status = exc.status or 0
        message = f"{context}: {api_message(exc)}"
        if status == 0:
            # Raised by the client itself for TLS failures: a bad CA will not fix itself.
            if "CERTIFICATE_VERIFY_FAILED" in message:
                return PermanentClusterError(message)
            return TransientClusterError(message)
        if status == 500 and TYPED_PATCH_FAILURE in message:
            return PermanentClusterError(message)
        if status in (409, 429) or 500 <= status <= 504:
            return TransientClusterError(message)
        if status == 403 and "NamespaceTerminating" in _status_causes(exc):
            # The namespace is being deleted; applying again once it is gone will work.
            return TransientClusterError(message)
        return PermanentClusterError(message)
    # urllib3 errors (MaxRetryError, ProtocolError, timeouts) and socket errors.
    return TransientClusterError(f"{context}: cannot reach the Kubernetes API server ({exc})")


@contextmanager
def api_errors(context: str) -> Iterator[None]:
    """Turn client exceptions raised inside the block into ClusterErrors; bugs pass through."""
    try:
        yield
    except ClusterError:
        raise
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate_error(exc, context) from exc


def _raw(_client: Any, data: Any) -> Any:
    """Serializer for DynamicClient calls: keep the response as plain dicts."""
    return data


# --- the adapter --------------------------------------------------------------------------


class KubernetesCluster:
    """A real cluster: kubeconfig or in-cluster credentials, server-side apply, watch streams."""

    simulated = False

    def __init__(self, api_client: client.ApiClient, *, field_manager: str | None = None) -> None:
        self._api = api_client
        self._field_manager = field_manager or settings.FIELD_MANAGER
        self._display_name: str | None = None
        self._dynamic_client: DynamicClient | None = None
        self._dynamic_lock = threading.Lock()
        # A private discovery cache: the library's default is one shared file per API host in
        # /tmp, written by every process (web, worker, watcher) at once.
        self._discovery_dir = tempfile.TemporaryDirectory(prefix="infer-console-discovery-")

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
    def host(self) -> str:
        return str(self._api.configuration.host)

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

    # --- discovery and apply ------------------------------------------------------------

    @property
    def _dynamic(self) -> DynamicClient:
        # Built on first use: DynamicClient's constructor already talks to the server.
        with self._dynamic_lock:
            if self._dynamic_client is None:
                with api_errors(f"cannot discover the API of {self.host}"):
                    self._dynamic_client = DynamicClient(
                        self._api, cache_file=f"{self._discovery_dir.name}/discovery.json"
                    )
            return self._dynamic_client

    def resource_for(self, api_version: str, kind: str) -> Resource:
        """The served resource for apiVersion+kind, or a PermanentClusterError saying what is served."""
        group, _, version = api_version.rpartition("/")
        prefix = "apis" if group else "api"
        with api_errors(f"cannot discover {api_version} {kind}"):
            found = self._search(prefix=prefix, group=group or None, api_version=version, kind=kind)
            exact = [r for r in found if r.group_version == api_version]
            if exact:
                return exact[0]
            other_versions = self._search(prefix=prefix, group=group or None, kind=kind)
            served = sorted({r.group_version for r in other_versions})
        if served:
            raise PermanentClusterError(
                f"this cluster does not serve {api_version} {kind} (served: {', '.join(served)})"
            )
        where = f"API group {group}" if group else "the core API"
        raise PermanentClusterError(
            f"this cluster does not serve {api_version} {kind}: no version of {kind} in {where} "
            "(is its CustomResourceDefinition or operator installed?)"
        )

    def _search(self, **query: Any) -> list[Resource]:
        try:
            results = self._dynamic.resources.search(**query)
        except ResourceNotFoundError:  # a group version listed in /apis but gone by now
            return []
        return [r for r in results if not isinstance(r, ResourceList)]

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
            before = self._get_or_none(resource, name, namespace)
            after = self._dynamic.server_side_apply(
                resource,
                body=obj,
                name=name,
                namespace=namespace,
                field_manager=self._field_manager,
                force_conflicts=True,  # the console owns these fields; kubectl edits are overwritten
                serializer=_raw,
                _request_timeout=REQUEST_TIMEOUT,
            )
        if before is None:
            return f"{label}: created"
        # A no-op apply leaves resourceVersion alone (controllers' status writes happen between
        # applies, not inside one, so the GET above is the right "before").
        unchanged = _resource_version(before) == _resource_version(after)
        return f"{label}: {'unchanged' if unchanged else 'configured'}"

    def _ensure_namespace(self, namespace: str) -> None:
        """Create the namespace (by server-side apply) when it does not exist yet."""
        resource = self.resource_for("v1", "Namespace")
        try:
            with api_errors(f"cannot read namespace {namespace}"):
                if self._get_or_none(resource, namespace, None) is not None:
                    return
        except PermanentClusterError as exc:
            # A console limited to its namespaces may not read Namespace objects at all; the
            # apply that follows tells whether the namespace is there.
            log.info("not checking namespace %s: %s", namespace, exc)
            return
        with api_errors(f"cannot create namespace {namespace}"):
            self._dynamic.server_side_apply(
                resource,
                body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                name=namespace,
                field_manager=self._field_manager,
                force_conflicts=True,
                serializer=_raw,
                _request_timeout=REQUEST_TIMEOUT,
            )
        log.info("created namespace %s", namespace)

    def _get_or_none(self, resource: Resource, name: str, namespace: str | None) -> Obj | None:
        try:
            return self._dynamic.get(
                resource, name=name, namespace=namespace, serializer=_raw, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _list(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        return self._list_with_version(
            resource, namespace, label_selector=label_selector, field_selector=field_selector
        )[0]

    def _list_with_version(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        """Every matching object (page by page) and the list's resourceVersion."""
        items: list[Obj] = []
        token: str | None = None
        while True:
            page = self._dynamic.get(
                resource,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=LIST_PAGE_SIZE,
                _continue=token,
                serializer=_raw,
                _request_timeout=REQUEST_TIMEOUT,
            )
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return items, str(metadata.get("resourceVersion", ""))

    # --- delete ---------------------------------------------------------------------------

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete every labelled object of the service; the garbage collector takes the pods.

        List-then-delete rather than deletecollection: 1.20 does not serve deletecollection
        for Services.
        """
        selector = service_selector(name)
        for api_version, kind in (DEPLOYMENT, *OTHER_KINDS):
            resource = self.resource_for(api_version, kind)
            with api_errors(f"cannot delete the {kind}s of service {namespace}/{name}"):
                for item in self._list(resource, namespace, label_selector=selector):
                    item_name = item["metadata"]["name"]
                    try:
                        self._dynamic.delete(
                            resource,
                            name=item_name,
                            namespace=namespace,
                            body={"propagationPolicy": "Background"},
                            serializer=_raw,
                            _request_timeout=REQUEST_TIMEOUT,
                        )
                    except ApiException as exc:
                        if exc.status != 404:  # already gone is what we wanted
                            raise
                    log.info("deleted %s %s/%s", kind, namespace, item_name)

    # --- observe --------------------------------------------------------------------------

    def observe(self, namespace: str, name: str) -> Observation:
        """The Deployment, its pods, the events about them and what else carries the labels."""
        deployments = self.resource_for(*DEPLOYMENT)
        pods_resource = self.resource_for("v1", "Pod")
        replica_sets = self.resource_for("apps/v1", "ReplicaSet")
        events_resource = self.resource_for("v1", "Event")
        service_label = f"{LABEL_SERVICE}={name}"
        with api_errors(f"cannot observe service {namespace}/{name}"):
            deployment = self._get_or_none(deployments, name, namespace)
            pods = self._list(pods_resource, namespace, label_selector=service_label)
            involved = [("Deployment", name)]
            involved += [
                ("ReplicaSet", rs["metadata"]["name"])
                for rs in self._list(replica_sets, namespace, label_selector=service_label)
            ]
            involved += [("Pod", pod["metadata"]["name"]) for pod in pods]
            # One small query per object: a namespace shared by many services can hold
            # thousands of events, and the field selector filters on the server.
            events: list[Obj] = []
            for kind, object_name in involved:
                events += self._list(
                    events_resource,
                    namespace,
                    field_selector=f"involvedObject.kind={kind},involvedObject.name={object_name}",
                )
            other_objects = sum(
                len(self._list(self.resource_for(*kind), namespace, label_selector=service_selector(name)))
                for kind in OTHER_KINDS
            )
        return observation_from(
            deployment, pods, events, other_objects=other_objects, observed_at=datetime.now(UTC)
        )

    # --- watch ----------------------------------------------------------------------------

    def watch(self, on_change: Callable[[str, str], None], stop: Callable[[], bool]) -> None:
        """Follow Deployments, Pods (console labels, all namespaces) and Events until stop().

        One thread per stream feeds a set of changed services; on_change runs on the calling
        thread, one call at a time (Django database connections stay on that thread), and
        the changes of a burst that arrive during a call collapse into one more call. Its
        exceptions are logged, not raised. A (re)list reports every listed service, so nothing
        that changed while a stream was down is missed. Streams recover from errors by
        themselves; only a failed discovery at the start raises (a ClusterError).
        """
        pending: dict[tuple[str, str], None] = {}  # an ordered set
        wake = threading.Condition()

        def notify(namespace: str, service: str) -> None:
            with wake:
                pending[(namespace, service)] = None
                wake.notify()

        tracker = _ServiceTracker()
        labelled = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        streams = [
            _Stream("deployments", self.resource_for(*DEPLOYMENT), labelled, tracker.deployment_seen),
            _Stream("pods", self.resource_for("v1", "Pod"), labelled, tracker.pod_seen),
            _Stream("events", self.resource_for("v1", "Event"), None, tracker.event_seen, relist=False),
        ]
        stopping = threading.Event()
        threads = [
            threading.Thread(
                target=self._follow,
                args=(stream, notify, stopping),
                name=f"k8s-watch-{stream.name}",
                daemon=True,
            )
            for stream in streams
        ]
        for thread in threads:
            thread.start()
        try:
            while not stop():
                with wake:
                    if not pending:
                        wake.wait(0.2)
                    batch = list(pending)
                    pending.clear()
                for namespace, service in batch:
                    if stop():
                        break
                    try:
                        on_change(namespace, service)
                    except Exception:
                        log.exception("watch callback failed for %s/%s", namespace, service)
        finally:
            stopping.set()
            for thread in threads:
                thread.join(timeout=WATCH_TIMEOUT_SECONDS + REQUEST_TIMEOUT[0] + 1)

    def _follow(self, stream: _Stream, notify: Callable[[str, str], None], stopping: threading.Event) -> None:
        """List, then watch from the list's resourceVersion; relist on 410 Gone; back off on errors."""
        resource_version: str | None = None
        backoff = 1.0
        while not stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._relist(stream, notify)
                resource_version = self._watch_once(stream, resource_version, notify, stopping)
                backoff = 1.0
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: relist and carry on
                    log.info("watch %s expired (%s); relisting", stream.name, api_message(exc))
                    resource_version = None
                    continue
                log.warning("watch %s failed: %s; retrying in %.0f s", stream.name, api_message(exc), backoff)
                resource_version = None
            except Exception as exc:
                log.warning("watch %s failed: %s; retrying in %.0f s", stream.name, exc, backoff)
            stopping.wait(backoff)
            backoff = min(backoff * 2, WATCH_MAX_BACKOFF_SECONDS)

    def _relist(self, stream: _Stream, notify: Callable[[str, str], None]) -> str:
        """List the stream's objects; returns the resourceVersion to watch from."""
        if not stream.relist:
            # Events: no history replay, only the current resourceVersion (one item is enough).
            page = self._dynamic.get(
                stream.resource, limit=1, serializer=_raw, _request_timeout=REQUEST_TIMEOUT
            )
            return str(page["metadata"]["resourceVersion"])
        items, resource_version = self._list_with_version(
            stream.resource, None, label_selector=stream.label_selector
        )
        # "SYNCED" replaces what the tracker knew of this kind (objects deleted during a gap).
        stream.handle("SYNCED", {})
        changed = {stream.handle("ADDED", item) for item in items} - {None}
        for namespace, service in sorted(changed):
            notify(namespace, service)
        return resource_version

    def _watch_once(
        self,
        stream: _Stream,
        resource_version: str,
        notify: Callable[[str, str], None],
        stopping: threading.Event,
    ) -> str:
        """One watch request (ends after WATCH_TIMEOUT_SECONDS); returns the last resourceVersion."""
        watcher = watch.Watch()
        events = watcher.stream(
            stream.resource.get,
            label_selector=stream.label_selector,
            resource_version=resource_version,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            allow_watch_bookmarks=True,
            serialize=False,
            _request_timeout=(REQUEST_TIMEOUT[0], WATCH_TIMEOUT_SECONDS + 10),
        )
        for event in events:
            obj = event.get("raw_object") or {}
            resource_version = (obj.get("metadata") or {}).get("resourceVersion") or resource_version
            if event.get("type") != "BOOKMARK":
                target = stream.handle(str(event.get("type")), obj)
                if target is not None:
                    notify(*target)
            if stopping.is_set():
                watcher.stop()
                break
        return resource_version

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
            items = self._list(resource, None)
        return [node_info(item) for item in items]


# --- watch helpers ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stream:
    name: str
    resource: Resource
    label_selector: str | None
    # (event type, API dict) -> (namespace, service) to report, or None
    handle: Callable[[str, Obj], tuple[str, str] | None]
    relist: bool = True  # report every listed object after a (re)list


class _ServiceTracker:
    """Which service a pod or Deployment belongs to, for mapping Events back to services.

    Events carry no labels, only the involved object's kind and name. Pods are known from
    the pod stream; a ReplicaSet is `<deployment>-<hash>` and a pod `<deployment>-<hash>-<x>`,
    which covers events that arrive before their pod does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deployments: dict[tuple[str, str], str] = {}
        self._pods: dict[tuple[str, str], str] = {}

    def deployment_seen(self, event_type: str, obj: Obj) -> tuple[str, str] | None:
        return self._seen(self._deployments, event_type, obj)

    def pod_seen(self, event_type: str, obj: Obj) -> tuple[str, str] | None:
        return self._seen(self._pods, event_type, obj)

    def _seen(self, known: dict[tuple[str, str], str], event_type: str, obj: Obj) -> tuple[str, str] | None:
        if event_type == "SYNCED":  # a relist follows: forget what may have gone meanwhile
            with self._lock:
                known.clear()
            return None
        metadata = obj.get("metadata") or {}
        namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
        service = (metadata.get("labels") or {}).get(LABEL_SERVICE)
        if not (namespace and name and service):
            return None
        with self._lock:
            if event_type == "DELETED":
                known.pop((namespace, name), None)
            else:
                known[(namespace, name)] = service
        return namespace, service

    def event_seen(self, _event_type: str, obj: Obj) -> tuple[str, str] | None:
        involved = obj.get("involvedObject") or {}
        namespace = involved.get("namespace") or (obj.get("metadata") or {}).get("namespace") or ""
        kind, name = involved.get("kind", ""), involved.get("name", "")
        service = self.service_for(namespace, kind, name)
        return (namespace, service) if service else None

    def service_for(self, namespace: str, kind: str, name: str) -> str | None:
        with self._lock:
            if kind == "Pod":
                if (namespace, name) in self._pods:
                    return self._pods[(namespace, name)]
                return self._deployments.get((namespace, name.rsplit("-", 2)[0]))
            if kind == "ReplicaSet":
                return self._deployments.get((namespace, name.rsplit("-", 1)[0]))
            if kind == "Deployment":
                return self._deployments.get((namespace, name))
        return None


# --- mapping API dicts to observations (pure) ---------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 from the API ("2026-11-22T05:00:00Z", microseconds in eventTime)."""
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _resource_version(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion", ""))


def _condition(obj: Obj, condition_type: str) -> Obj | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == condition_type:
            return condition
    return None


def container_observation(name: str, status: Obj | None) -> ContainerObservation:
    """One entry of status.containerStatuses (None: no status reported yet)."""
    if not status:
        return ContainerObservation(name=name)
    states = status.get("state") or {}
    state, detail = "waiting", {}
    for key in ("terminated", "running", "waiting"):
        if key in states and states[key] is not None:
            state, detail = key, states[key] or {}
            break
    last = (status.get("lastState") or {}).get("terminated") or {}
    return ContainerObservation(
        name=name,
        ready=bool(status.get("ready")),
        state=state,
        reason=str(detail.get("reason") or ""),
        message=str(detail.get("message") or ""),
        restart_count=int(status.get("restartCount") or 0),
        last_terminated_reason=str(last.get("reason") or ""),
        last_exit_code=int(last["exitCode"]) if last.get("exitCode") is not None else None,
    )


def pod_observation(pod: Obj) -> PodObservation:
    metadata, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    scheduled_condition = _condition(pod, "PodScheduled")
    ready_condition = _condition(pod, "Ready")
    containers: list[ContainerObservation] = []
    # Init containers only while they matter: one that finished cleanly says nothing.
    init_statuses = {s.get("name"): s for s in status.get("initContainerStatuses") or []}
    for container in spec.get("initContainers") or []:
        init = container_observation(container["name"], init_statuses.get(container["name"]))
        if not (init.state == "terminated" and init.reason == "Completed"):
            containers.append(init)
    statuses = {s.get("name"): s for s in status.get("containerStatuses") or []}
    for container in spec.get("containers") or []:
        containers.append(container_observation(container["name"], statuses.get(container["name"])))
    return PodObservation(
        name=str(metadata.get("name", "")),
        phase=str(status.get("phase") or "Pending"),
        node=str(spec.get("nodeName") or ""),
        ready=bool(ready_condition and ready_condition.get("status") == "True"),
        scheduled=None if scheduled_condition is None else scheduled_condition.get("status") == "True",
        scheduling_reason=str((scheduled_condition or {}).get("reason") or ""),
        scheduling_message=str((scheduled_condition or {}).get("message") or ""),
        containers=tuple(containers),
        created_at=parse_time(metadata.get("creationTimestamp")),
        terminating=bool(metadata.get("deletionTimestamp")),
    )


def _event_time(event: Obj) -> datetime | None:
    return (
        parse_time(event.get("lastTimestamp"))
        or parse_time(event.get("eventTime"))
        or parse_time((event.get("series") or {}).get("lastObservedTime"))
        or parse_time(event.get("firstTimestamp"))
        or parse_time((event.get("metadata") or {}).get("creationTimestamp"))
    )


def _event_order(event: Obj) -> tuple[datetime, int]:
    # Most event times have whole seconds only; within a second the resourceVersion (an etcd
    # revision on every server we know, else 0) keeps the order they were written in.
    version = _resource_version(event)
    return (
        _event_time(event) or datetime.min.replace(tzinfo=UTC),
        int(version) if version.isdigit() else 0,
    )


def event_observation(event: Obj) -> EventObservation:
    involved = event.get("involvedObject") or {}
    count = event.get("count") or (event.get("series") or {}).get("count") or 1
    return EventObservation(
        type=str(event.get("type") or "Normal"),
        reason=str(event.get("reason") or ""),
        message=str(event.get("message") or "").strip(),
        object_kind=str(involved.get("kind") or ""),
        object_name=str(involved.get("name") or ""),
        count=int(count),
        last_seen=_event_time(event),
    )


def observation_from(
    deployment: Obj | None,
    pods: list[Obj],
    events: list[Obj],
    *,
    other_objects: int = 0,
    observed_at: datetime | None = None,
) -> Observation:
    """Build the Observation from the API dicts read for one service."""
    pod_list = sorted(
        (pod_observation(p) for p in pods),
        key=lambda p: (p.created_at or datetime.min.replace(tzinfo=UTC), p.name),
    )
    unique_events = {(e.get("metadata") or {}).get("uid") or id(e): e for e in events}.values()
    # Oldest first, newest last; keep the newest MAX_EVENTS.
    event_list = [event_observation(e) for e in sorted(unique_events, key=_event_order)][-MAX_EVENTS:]
    common = {
        "pods": tuple(pod_list),
        "events": tuple(event_list),
        "other_objects": other_objects,
        "observed_at": observed_at,
    }
    if deployment is None:
        return Observation(found=False, **common)
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    replicas = spec.get("replicas")
    return Observation(
        found=True,
        desired_replicas=int(1 if replicas is None else replicas),  # the API's default is 1
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        conditions={
            str(c.get("type")): (
                str(c.get("status") or ""),
                str(c.get("reason") or ""),
                str(c.get("message") or ""),
            )
            for c in status.get("conditions") or []
        },
        **common,
    )


def node_info(node: Obj) -> NodeInfo:
    metadata, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    ready = _condition(node, "Ready")
    return NodeInfo(
        name=str(metadata.get("name", "")),
        labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
        allocatable={str(k): str(v) for k, v in (status.get("allocatable") or {}).items()},
        taints=tuple(
            {key: str(value) for key, value in taint.items() if key in ("key", "value", "effect") and value}
            for taint in spec.get("taints") or []
        ),
        ready=bool(ready and ready.get("status") == "True"),
    )

"""Watch streams: Deployments, Pods (console labels, all namespaces), Events and, where Kueue is
installed, Kueue's Workloads, one thread each.

Each stream lists, then watches from the list's resourceVersion, and maps every event to the
service it concerns; Events and Workloads carry no console labels, so _ServiceTracker remembers
which service each pod, Deployment and Workload belongs to. watch_services() calls on_change
once per changed service.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.resource import Resource

from deploy.clusters.base import LABEL_MANAGED_BY, LABEL_SERVICE, MANAGED_BY, ClusterError
from deploy.clusters.kubernetes.api import DEPLOYMENT, REQUEST_TIMEOUT, ClusterApi, as_dicts
from deploy.clusters.kubernetes.errors import api_message
from deploy.clusters.kubernetes.observe import Obj
from deploy.clusters.kubernetes.workloads import DISCOVERY_TTL_SECONDS, JOB_UID_LABEL, workload_resource

log = logging.getLogger(__package__)  # the adapter logs as deploy.clusters.kubernetes

# Server-side timeout of one watch request. Short so that watch_services() notices stop() within ~2 s;
# re-watching from the last resourceVersion is cheap (the API server serves it from its cache).
WATCH_TIMEOUT_SECONDS = 2
WATCH_MAX_BACKOFF_SECONDS = 30.0


def watch_services(api: ClusterApi, on_change: Callable[[str, str], None], stop: Callable[[], bool]) -> None:
    """Follow Deployments, Pods (console labels, all namespaces), Events and Kueue's Workloads
    until stop().

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
        _Stream("deployments", api.resource_for(*DEPLOYMENT), labelled, tracker.deployment_seen),
        _Stream("pods", api.resource_for("v1", "Pod"), labelled, tracker.pod_seen),
        _Stream("events", api.resource_for("v1", "Event"), None, tracker.event_seen, relist=False),
    ]
    stopping = threading.Event()
    threads = [
        threading.Thread(
            target=_follow,
            args=(api, stream, notify, stopping),
            name=f"k8s-watch-{stream.name}",
            daemon=True,
        )
        for stream in streams
    ]
    # Kueue's verdict on a pod (quota short, admitted, evicted) changes the Workload, not the pod.
    threads.append(
        threading.Thread(
            target=follow_workloads,
            args=(api, tracker, notify, stopping),
            name="k8s-watch-workloads",
            daemon=True,
        )
    )
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


def _follow(
    api: ClusterApi, stream: _Stream, notify: Callable[[str, str], None], stopping: threading.Event
) -> None:
    """List, then watch from the list's resourceVersion; relist on 410 Gone; back off on errors."""
    resource_version: str | None = None
    backoff = 1.0
    while not stopping.is_set():
        try:
            if resource_version is None:
                resource_version = _relist(api, stream, notify)
            resource_version = _watch_once(stream, resource_version, notify, stopping)
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


def follow_workloads(
    api: ClusterApi, tracker: _ServiceTracker, notify: Callable[[str, str], None], stopping: threading.Event
) -> None:
    """Kueue's Workloads of pods (pod integration), once the cluster serves the kind: discovery
    is asked again every DISCOVERY_TTL_SECONDS, so installing Kueue later needs no restart."""
    while not stopping.is_set():
        try:
            resource = workload_resource(api)
        except ClusterError as exc:  # the API server is unreachable for now: ask again later
            log.warning(
                "watch workloads: discovery failed: %s; retrying in %.0f s", exc, WATCH_MAX_BACKOFF_SECONDS
            )
            stopping.wait(WATCH_MAX_BACKOFF_SECONDS)
            continue
        if resource is not None:
            stream = _Stream("workloads", resource, JOB_UID_LABEL, tracker.workload_seen)
            _follow(api, stream, notify, stopping)
            return
        stopping.wait(DISCOVERY_TTL_SECONDS)


def _relist(api: ClusterApi, stream: _Stream, notify: Callable[[str, str], None]) -> str:
    """List the stream's objects; returns the resourceVersion to watch from."""
    if not stream.relist:
        # Events: no history replay, only the current resourceVersion (one item is enough).
        page = api.dynamic.get(
            stream.resource, limit=1, serializer=as_dicts, _request_timeout=REQUEST_TIMEOUT
        )
        return str(page["metadata"]["resourceVersion"])
    items, resource_version = api.list_with_version(
        stream.resource, None, label_selector=stream.label_selector
    )
    # "SYNCED" replaces what the tracker knew of this kind (objects deleted during a gap).
    stream.handle("SYNCED", {})
    changed = {stream.handle("ADDED", item) for item in items} - {None}
    for namespace, service in sorted(changed):
        notify(namespace, service)
    return resource_version


def _watch_once(
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
        self._workloads: dict[tuple[str, str], str] = {}

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

    def workload_seen(self, event_type: str, obj: Obj) -> tuple[str, str] | None:
        """A Workload of Kueue's pod integration belongs to the service of the pod that owns it."""
        if event_type == "SYNCED":
            with self._lock:
                self._workloads.clear()
            return None
        metadata = obj.get("metadata") or {}
        namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
        owners = [o.get("name", "") for o in metadata.get("ownerReferences") or [] if o.get("kind") == "Pod"]
        service = self.service_for(namespace, "Pod", owners[0]) if owners else None
        service = service or self.service_for(namespace, "Workload", name)
        if not (namespace and name and service):
            return None
        with self._lock:
            if event_type == "DELETED":
                self._workloads.pop((namespace, name), None)
            else:
                self._workloads[(namespace, name)] = service
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
            if kind == "Workload":  # Kueue's events about a pod's Workload
                return self._workloads.get((namespace, name))
        return None

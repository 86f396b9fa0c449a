"""SimulatedCluster, the adapter: the Cluster protocol over database rows.

The web server, the Celery worker and the watcher are separate processes, so everything the
cluster holds (applied objects, pods and their node bindings) is in the database
(deploy.models). What is not stored (pod status, events, logs) every process computes from
the same rows and the clock (see pods.py), so they all report the same.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from deploy.clusters.base import LABEL_SERVICE, NodeInfo, PermanentClusterError, TransientClusterError
from deploy.clusters.simulated import jobs, standins
from deploy.clusters.simulated.apply import apply_one, prepare
from deploy.clusters.simulated.deployments import Obj, deployment_conditions, template_hash
from deploy.clusters.simulated.faults import FaultRule, Faults, load_fault_rules, pod_faults
from deploy.clusters.simulated.nodes import load_nodes
from deploy.clusters.simulated.pods import PodState, compute_pod_state, pod_events, pod_log_lines
from deploy.clusters.simulated.scheduler import add_usage, needs_of, pick_node
from deploy.models import SimulatedObject, SimulatedPod
from deploy.observation import EventObservation, JobObservation, Observation, PodObservation
from deploy.render import ANNOTATION_MODEL_NAME, LABEL_RUNTIME

log = logging.getLogger(__package__)  # the simulated cluster logs as deploy.clusters.simulated

# What Observation.other_objects counts: what is left of a service besides its Deployment.
OTHER_KINDS = ("Service", "ConfigMap", "Secret", "NetworkPolicy")
# A test's binding of a service to an upstream URL (bind_endpoint): simulated-only, so its own kind.
ENDPOINT_BINDING_KIND = "EndpointBinding"
ENDPOINT_BINDING_API_VERSION = "simulated.inference.console/v1"
WATCH_STOP_CHECK_SECONDS = 0.2


@dataclass(frozen=True)
class _PodView:
    """A pod with its computed state at one moment."""

    pod: SimulatedPod
    faults: Faults
    state: PodState
    scheduling_message: str

    def observation(self) -> PodObservation:
        bound = bool(self.pod.node)
        attempted = bound or bool(self.scheduling_message)
        return PodObservation(
            name=self.pod.name,
            phase=self.state.phase,
            node=self.pod.node,
            ready=self.state.ready,
            scheduled=bound if attempted else None,
            scheduling_reason="" if bound or not attempted else "Unschedulable",
            scheduling_message="" if bound else self.scheduling_message,
            containers=self.state.containers,
            created_at=self.pod.created_at,
        )

    def fingerprint(self) -> tuple[Any, ...]:
        """What the watcher would see change: phase, readiness, container reasons, restarts."""
        containers = tuple(
            (c.name, c.state, c.reason, c.ready, c.restart_count) for c in self.state.containers
        )
        return (
            "pod",
            self.pod.name,
            self.pod.node,
            self.state.phase,
            self.state.ready,
            containers,
            self.scheduling_message,
        )


# Any constant works; it only has to be the same in every process.
_SCHEDULER_LOCK_ID = 0x51_4D_43_4C  # "SMCL"


def _lock_scheduler() -> None:
    """Serialise binding, so two processes cannot hand the same free GPUs to two pods.

    SQLite's IMMEDIATE transactions (settings) already allow one writer at a time."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEDULER_LOCK_ID])


class SimulatedCluster:
    """The Cluster protocol over database rows: a tiny API server, scheduler and kubelet."""

    display_name = "Simulated cluster"
    simulated = True

    def __init__(
        self,
        *,
        nodes_file: str,
        faults_file: str,
        pull_seconds: float,
        load_seconds: float,
        poll_seconds: float,
        state_dir: str = "",
        clock: Callable[[], datetime] | None = None,
    ):
        self.nodes_file = str(nodes_file)
        self.faults_file = str(faults_file)
        self.pull_seconds = float(pull_seconds)
        self.load_seconds = float(load_seconds)
        self.poll_seconds = float(poll_seconds)
        # Volumes and Job pod processes (jobs.py).
        self.state = jobs.StateDir(state_dir or settings.SIMULATED_STATE_DIR)
        self.clock = clock or timezone.now

    @classmethod
    def from_settings(cls) -> SimulatedCluster:
        return cls(
            nodes_file=settings.SIMULATED_CLUSTER_NODES,
            faults_file=settings.SIMULATED_CLUSTER_FAULTS,
            pull_seconds=settings.SIMULATED_PULL_SECONDS,
            load_seconds=settings.SIMULATED_LOAD_SECONDS,
            poll_seconds=settings.WATCH_POLL_SECONDS,
            state_dir=settings.SIMULATED_STATE_DIR,
        )

    # --- Cluster protocol -------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        return list(load_nodes(self.nodes_file))

    def apply(self, objects: list[Obj]) -> list[str]:
        # Check every object first: a bad one fails the apply before anything changed.
        prepared = [prepare(obj) for obj in objects]
        lines = []
        for item in prepared:
            try:
                with transaction.atomic():
                    lines.append(apply_one(item, self.clock(), self.state))
            except IntegrityError:
                # Another process created the same object at the same moment (a 409 Conflict).
                raise TransientClusterError(
                    f"conflict applying {item.kind} {item.display}; try again"
                ) from None
        self._schedule_pending()
        jobs.start_bound_pods(self.state, self.clock())
        for item in prepared:
            if item.kind == "Deployment" and item.labels.get(LABEL_SERVICE):
                self._stop_unserved_standins(item.namespace, item.labels[LABEL_SERVICE])
        return lines

    def delete_service(self, namespace: str, name: str) -> None:
        with transaction.atomic():
            deployments = list(
                SimulatedObject.objects.filter(
                    namespace=namespace, service=name, kind="Deployment"
                ).values_list("name", flat=True)
            )
            # Pods go at once (no grace period), so their GPUs are free for the next pod.
            SimulatedPod.objects.filter(
                Q(service=name) | Q(deployment__in=deployments), namespace=namespace
            ).delete()
            SimulatedObject.objects.filter(namespace=namespace, service=name).delete()
            SimulatedObject.objects.filter(
                kind=ENDPOINT_BINDING_KIND, namespace=namespace, name=name
            ).delete()
        standins.stop_service(self.state, namespace, name)
        self._schedule_pending()

    def observe(self, namespace: str, name: str) -> Observation:
        messages = self._schedule_pending()
        now = self.clock()
        rules = load_fault_rules(self.faults_file)
        deployment = SimulatedObject.objects.filter(kind="Deployment", namespace=namespace, name=name).first()
        pods = SimulatedPod.objects.filter(namespace=namespace, service=name).order_by("created_at", "name")
        views = [self._view(pod, now, rules, messages) for pod in pods]
        other = SimulatedObject.objects.filter(
            namespace=namespace, service=name, kind__in=OTHER_KINDS
        ).count()
        events = [event for view in views for event in self._events(view, now)]
        events.sort(key=lambda e: e.last_seen or now)
        # A pod that is gone or no longer ready stops being served at once.
        self._stop_unserved_standins(namespace, name, views)
        common = {
            "pods": tuple(view.observation() for view in views),
            "events": tuple(events),
            "other_objects": other,
            "observed_at": now,
        }
        if deployment is None:
            return Observation(found=False, **common)
        spec = deployment.body.get("spec") or {}
        current_hash = template_hash(spec.get("template") or {})
        owned = [view for view in views if view.pod.deployment == name]
        updated = sum(1 for view in owned if view.pod.template_hash == current_hash)
        ready = sum(1 for view in owned if view.state.ready)
        conditions = deployment_conditions(
            spec,
            rs_name=f"{name}-{current_hash}",
            updated=updated,
            available=ready,
            total=len(owned),
            seconds_since_update=(now - deployment.updated_at).total_seconds(),
        )
        return Observation(
            found=True,
            desired_replicas=int(spec.get("replicas", 1)),
            ready_replicas=ready,
            updated_replicas=updated,
            available_replicas=ready,  # minReadySeconds is 0: ready pods are available
            conditions=conditions,
            **common,
        )

    def watch(self, on_change: Callable[[str, str], None], stop: Callable[[], bool]) -> None:
        """Poll every poll_seconds and report services whose fingerprint changed.

        The first loop reports every existing service, as a Kubernetes watch starts with an
        ADDED event per object; a service that disappears is reported once more."""
        seen: dict[tuple[str, str], tuple[Any, ...]] = {}
        while not stop():
            if not connection.in_atomic_block:
                close_old_connections()  # a long-running loop must not keep a dead connection
            try:
                current, serving_views = self._fingerprints()
            except DatabaseError:
                log.warning("simulated cluster: watch poll failed; retrying", exc_info=True)
                current = None
            if current is not None:
                try:
                    self.sync_standins(serving_views)
                except (DatabaseError, OSError):
                    log.warning("simulated cluster: syncing stand-in servers failed", exc_info=True)
                for key in sorted(seen.keys() | current.keys()):
                    if seen.get(key) != current.get(key):
                        on_change(*key)
                seen = current
            deadline = time.monotonic() + self.poll_seconds
            while not stop() and (left := deadline - time.monotonic()) > 0:
                time.sleep(min(WATCH_STOP_CHECK_SECONDS, left))

    def pod_logs(self, namespace: str, pod: str, *, previous: bool = False, tail_lines: int = 200) -> str:
        row = SimulatedPod.objects.filter(namespace=namespace, name=pod).first()
        if row is None:
            raise PermanentClusterError(f'pods "{pod}" not found')
        if row.job:
            # A Job pod is never restarted in place (retries are new pods): no previous log.
            return "" if previous else jobs.read_log(row, self.state, tail_lines)
        view = self._view(row, self.clock(), load_fault_rules(self.faults_file), {})
        lines = pod_log_lines(row, view.state, view.faults, previous=previous)
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines > 0 else []
        return "".join(f"{line}\n" for line in lines)

    def observe_job(self, namespace: str, name: str) -> JobObservation:
        messages = self._schedule_pending()
        jobs.start_bound_pods(self.state, self.clock())
        with transaction.atomic():
            job = (
                SimulatedObject.objects.select_for_update()
                .filter(kind="Job", namespace=namespace, name=name)
                .first()
            )
            if job is None:
                return JobObservation(found=False)
            # Under the Job's row lock: two processes observing at once create one retry pod.
            return jobs.observe_job(job, self.state, self.clock(), messages)

    def service_endpoint(self, *, namespace: str, name: str, port: str = "http") -> str | None:
        """The URL a test bound the service's port to (bind_endpoint), else, for `http`, the
        stand-in server of its first ready pod on 127.0.0.1 (started now if it is not running),
        else None. The stand-ins speak HTTP only."""
        binding = SimulatedObject.objects.filter(
            kind=ENDPOINT_BINDING_KIND, namespace=namespace, name=name
        ).first()
        if binding is not None:
            return str(binding.body.get("url" if port == "http" else port) or "") or None
        if port != "http":
            return None
        views = self._service_views(namespace, name)
        urls = standins.sync_service(self.state, namespace, name, self._wanted(namespace, name, views))
        return urls[min(urls)] if urls else None

    def bind_endpoint(self, *, namespace: str, name: str, url: str, grpc: str | None = None) -> None:
        """Route the service to `url` (a test's upstream on 127.0.0.1; its gRPC port to `grpc`)
        in every process, whatever its pods do, until unbind_endpoint or delete_service."""
        now = self.clock()
        SimulatedObject.objects.update_or_create(
            kind=ENDPOINT_BINDING_KIND,
            namespace=namespace,
            name=name,
            defaults={
                "api_version": ENDPOINT_BINDING_API_VERSION,
                "body": {"url": url, "grpc": grpc},
                "created_at": now,
                "updated_at": now,
            },
        )

    def unbind_endpoint(self, *, namespace: str, name: str) -> None:
        SimulatedObject.objects.filter(kind=ENDPOINT_BINDING_KIND, namespace=namespace, name=name).delete()

    def sync_standins(self, views: dict[tuple[str, str], list[_PodView]] | None = None) -> None:
        """Start a stand-in for every ready pod and stop the others' (the watcher's loop, which
        passes the views of the services' scheduled pods it has just built)."""
        if views is None:
            now = self.clock()
            rules = load_fault_rules(self.faults_file)
            views = defaultdict(list)
            for pod in SimulatedPod.objects.filter(job="").exclude(service="").exclude(node=""):
                views[(pod.namespace, pod.service)].append(self._view(pod, now, rules, {}))
        bodies = self._deployment_bodies([view.pod for pods in views.values() for view in pods])
        standins.sync_all(self.state, {key: self._wanted(*key, pods, bodies) for key, pods in views.items()})

    def delete_labelled(self, namespace: str, labels: dict[str, str], kinds: tuple[str, ...]) -> None:
        rows = [
            row
            for row in SimulatedObject.objects.filter(namespace=namespace, kind__in=kinds)
            if all(row.labels.get(k) == v for k, v in labels.items())
        ]
        job_names = [row.name for row in rows if row.kind == "Job"]
        pods = list(SimulatedPod.objects.filter(namespace=namespace, job__in=job_names))
        # Stop the processes first: a copier still running would keep writing into the claim.
        jobs.stop_pods(pods, self.state)
        with transaction.atomic():
            SimulatedPod.objects.filter(pk__in=[pod.pk for pod in pods]).delete()
            SimulatedObject.objects.filter(pk__in=[row.pk for row in rows]).delete()
        for row in rows:
            if row.kind == "PersistentVolumeClaim":
                shutil.rmtree(self.state.claim(namespace, row.name), ignore_errors=True)
        self._schedule_pending()

    # --- stand-in servers ---------------------------------------------------------------

    def _service_views(self, namespace: str, name: str) -> list[_PodView]:
        now = self.clock()
        rules = load_fault_rules(self.faults_file)
        pods = SimulatedPod.objects.filter(namespace=namespace, service=name, job="").exclude(node="")
        return [self._view(pod, now, rules, {}) for pod in pods]

    def _deployment_bodies(self, pods: list[SimulatedPod]) -> dict[tuple[str, str], Obj]:
        """The Deployments of these pods by (namespace, name), in one query."""
        names = {pod.deployment for pod in pods if pod.deployment}
        if not names:
            return {}
        rows = SimulatedObject.objects.filter(kind="Deployment", name__in=names)
        return {(row.namespace, row.name): row.body for row in rows}

    def _wanted(
        self,
        namespace: str,
        name: str,
        views: list[_PodView],
        bodies: dict[tuple[str, str], Obj] | None = None,
    ) -> list[standins.Wanted]:
        """The ready pods of the service's Deployment, each with its runtime and model name."""
        ready = [view.pod for view in views if view.state.ready and view.pod.deployment]
        if not ready:
            return []
        if bodies is None:
            bodies = self._deployment_bodies(ready)
        wanted = []
        for pod in ready:
            body = bodies.get((namespace, pod.deployment))
            if body is not None:
                runtime, model = _served(body, default_name=name)
                wanted.append(standins.Wanted(pod=pod.name, runtime=runtime, models=(model,)))
        return wanted

    def _stop_unserved_standins(self, namespace: str, name: str, views: list[_PodView] | None = None) -> None:
        """Stop stand-ins whose pods are gone or not ready; never starts one (cheap when none run)."""
        folder = standins.service_folder(self.state, namespace, name)
        if not folder.is_dir():
            return
        if views is None:
            views = self._service_views(namespace, name)
        ready = {view.pod.name for view in views if view.state.ready}
        try:
            served = [pod.name for pod in folder.iterdir() if pod.is_dir()]
        except FileNotFoundError:
            return  # another process stopped them in the meantime
        if any(pod not in ready for pod in served):
            keep = [w for w in self._wanted(namespace, name, views) if (folder / w.pod).is_dir()]
            standins.sync_service(self.state, namespace, name, keep)

    # --- scheduling -------------------------------------------------------------------

    def _schedule_pending(self) -> dict[int, str]:
        """Bind pending pods, oldest first; return {pod id: scheduler message} for the rest."""
        if not SimulatedPod.objects.filter(node="").exists():
            return {}  # the common case, kept to one cheap read
        nodes = self.nodes()
        messages: dict[int, str] = {}
        with transaction.atomic():
            _lock_scheduler()
            usage: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for node, requests in SimulatedPod.objects.exclude(node="").values_list("node", "requests"):
                add_usage(usage[node], requests)
            now = self.clock()
            for pod in SimulatedPod.objects.filter(node="").order_by("created_at", "name"):
                chosen, message = pick_node(nodes, needs_of(pod), usage)
                if chosen is None:
                    messages[pod.pk] = message
                    continue
                SimulatedPod.objects.filter(pk=pod.pk, node="").update(node=chosen, scheduled_at=now)
                add_usage(usage[chosen], pod.requests)
        return messages

    # --- pod state ----------------------------------------------------------------------

    def _view(
        self, pod: SimulatedPod, now: datetime, rules: Iterable[FaultRule], messages: Mapping[int, str]
    ) -> _PodView:
        faults = pod_faults(pod, rules)
        elapsed = None
        if pod.node and pod.scheduled_at is not None:
            elapsed = max(0.0, (now - pod.scheduled_at).total_seconds())
        state = compute_pod_state(
            elapsed,
            pod.containers,
            faults,
            restart_policy=pod.restart_policy,
            pull_seconds=self.pull_seconds,
            load_seconds=self.load_seconds,
            pod_ref=f"{pod.name}_{pod.namespace}",
        )
        return _PodView(pod=pod, faults=faults, state=state, scheduling_message=messages.get(pod.pk, ""))

    def _events(self, view: _PodView, now: datetime) -> list[EventObservation]:
        return pod_events(
            view.pod,
            view.state,
            view.faults,
            scheduling_message=view.scheduling_message,
            now=now,
            load_seconds=self.load_seconds,
        )

    def _fingerprints(
        self,
    ) -> tuple[dict[tuple[str, str], tuple[Any, ...]], dict[tuple[str, str], list[_PodView]]]:
        """A cheap summary per service (namespace, name) of what observe() would report, and the
        views of the services' scheduled pods (what the stand-ins follow)."""
        messages = self._schedule_pending()
        now = self.clock()
        rules = load_fault_rules(self.faults_file)
        parts: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
        objects = (
            SimulatedObject.objects.exclude(service="")
            .exclude(namespace="")
            .values_list(
                "namespace",
                "service",
                "kind",
                "name",
                "generation",
                "updated_at",
                "body__spec__progressDeadlineSeconds",
            )
        )
        for namespace, service, kind, name, generation, updated_at, deadline in objects:
            entry: tuple[Any, ...] = ("object", kind, name, generation)
            if kind == "Deployment":
                # The Progressing condition turns False with time alone: report that moment too.
                limit = 600 if deadline is None else int(deadline)
                entry += ((now - updated_at).total_seconds() > limit,)
            parts[(namespace, service)].append(entry)
        serving: dict[tuple[str, str], list[_PodView]] = defaultdict(list)
        for pod in SimulatedPod.objects.exclude(service=""):
            view = self._view(pod, now, rules, messages)
            parts[(pod.namespace, pod.service)].append(view.fingerprint())
            if not pod.job and pod.node:
                serving[(pod.namespace, pod.service)].append(view)
        return {key: tuple(sorted(value, key=repr)) for key, value in parts.items()}, serving


def _served(deployment: Obj, *, default_name: str) -> tuple[str, str]:
    """(runtime, served model name) of a Deployment as deploy.render writes it."""
    metadata = deployment.get("metadata") or {}
    runtime = (metadata.get("labels") or {}).get(LABEL_RUNTIME, "vllm")
    model = (metadata.get("annotations") or {}).get(ANNOTATION_MODEL_NAME, "")
    template = (deployment.get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    for arg in (containers[0].get("args") or []) if containers else []:
        if str(arg).startswith("--served-model-name="):
            model = model or str(arg).split("=", 1)[1]
    return ("triton" if runtime == "triton" else "vllm"), model or default_name

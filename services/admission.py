"""Admission of services to their queue's quota: the console's own check (queues/admission.py),
fed from the database under row locks, so that two services racing for the last GPUs cannot both
be admitted. A service that fits is admitted to a flavor; one that must wait is Queued with its
position; one that can never fit is refused. Queued services are admitted in order when quota
frees up (admit_queued), on delete and by repair_drift."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from deploy.clusters import ClusterError, get_cluster
from deploy.clusters.base import NodeInfo
from queues.admission import Amounts, Decision, Request, check_admission
from queues.models import Queue, ResourceFlavor
from queues.selectors import cohort_of, queue_states, queued_ahead, team_state
from services import phases
from services.models import InferenceService


def cluster_nodes() -> list[NodeInfo] | None:
    """The nodes, read before any transaction opens (a cluster call); None if unreadable, and then
    the node fit is left to the scheduler."""
    try:
        return list(get_cluster().nodes())
    except ClusterError:
        return None


def lock_queues(queue: Queue) -> list[Queue]:
    """Lock the queue and its cohort (in id order, so that concurrent locks never deadlock)."""
    ids = [q.id for q in cohort_of(queue)]
    return list(Queue.objects.select_for_update().filter(id__in=ids).order_by("id"))


def request_of(service: InferenceService) -> Request:
    return Request(
        per_replica=Amounts(gpu=service.gpu_count, cpu_milli=service.cpu_milli, memory=service.memory_bytes),
        replicas=service.replicas,
        gpu_type=service.gpu_type,
        tolerations=tuple(service.tolerations or ()),
    )


def decide(service: InferenceService, *, nodes: Iterable[NodeInfo] | None, locked: list[Queue]) -> Decision:
    """The admission decision for a service (new or changed) against the locked queues' usage."""
    exclude = service.id
    states = queue_states(locked, exclude_service_id=exclude)
    own = states[service.queue_id]
    cohort = [state for queue_id, state in states.items() if queue_id != service.queue_id]
    ahead = 0
    if service.id is None or service.phase == phases.QUEUED:  # an admitted service waits for nobody
        ahead = queued_ahead(
            service.queue_id,
            priority=service.priority_class.value if service.priority_class_id else 0,
            created_at=service.created_at or timezone.now(),  # a new service goes behind its equals
            exclude_service_id=exclude,
        )
    return check_admission(
        request_of(service),
        own,
        cohort=cohort,
        team=team_state(service.team, exclude_service_id=exclude),
        nodes=nodes if nodes is not None else (),
        queued_ahead=ahead,
        check_nodes=nodes is not None,
    )


def flavor_named(name: str) -> ResourceFlavor | None:
    return ResourceFlavor.objects.filter(name=name).first()


def admit_queued(queue_id: int) -> list[int]:
    """Admit the queue's waiting services that fit now, in order (priority, then age); refresh
    the position and reason of the rest. Returns the ids admitted (reconcile runs after commit)."""
    from services.actions import service_transition

    queue = Queue.objects.filter(id=queue_id).first()
    if queue is None:
        return []
    nodes = cluster_nodes()
    admitted = []
    with transaction.atomic():
        locked = lock_queues(queue)
        waiting = list(
            InferenceService.objects.select_related("priority_class", "team")
            # Only the console's own waiting list: a service Kueue holds is applied already and
            # waits for Kueue's admission, not ours.
            .filter(queue_id=queue_id, phase=phases.QUEUED, applied_revision="")
            .alias(priority_value=Coalesce("priority_class__value", 0))
            .order_by("-priority_value", "created_at", "id")
        )
        for service in waiting:
            decision = decide(service, nodes=nodes, locked=locked)
            if decision.verdict == "admit":
                InferenceService.objects.filter(id=service.id, phase=phases.QUEUED).update(
                    flavor=flavor_named(decision.flavor)
                )
                if service_transition(
                    service_id=service.id,
                    to_phase=phases.PENDING,
                    reason="Admitted",
                    message=f"Admitted to flavor {decision.flavor}: holds {decision.holds}.",
                    from_phases={phases.QUEUED},
                ):
                    admitted.append(service.id)
            else:
                reason = "WaitingForQuota" if decision.verdict == "queue" else "QuotaExceeded"
                service_transition(
                    service_id=service.id,
                    to_phase=phases.QUEUED,
                    reason=reason,
                    message=decision.message,
                    from_phases={phases.QUEUED},
                )
                if queue.strict_fifo:
                    break  # nobody overtakes the head of a strict FIFO queue
        for service_id in admitted:
            _enqueue(service_id)
    return admitted


def _enqueue(service_id: int) -> None:
    from deploy.tasks import reconcile_service

    transaction.on_commit(lambda: reconcile_service.delay(service_id))

"""Bring one service's row in line with the cluster: apply its spec, observe it, delete it.

Plain functions called by the Celery tasks, the watcher and the tests. No database
transaction is held across a cluster call.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone

from deploy.clusters import PermanentClusterError, get_cluster
from deploy.render import render_service, revision_hash
from deploy.status import KUEUE_WAITING_REASONS, derive_status
from services import phases
from services.actions import service_record_applied, service_record_observation, service_transition
from services.models import InferenceService
from services.spec import service_spec

log = logging.getLogger(__name__)


def apply_service(service: InferenceService) -> None:
    """Render and apply the desired spec; raises TransientClusterError for the caller to retry."""
    if not service.dataset.is_ready:
        service_transition(
            service_id=service.id,
            to_phase=phases.PREWARMING,
            reason="WaitingForDataset",
            message=f"Waiting for dataset {service.dataset.name} to be prewarmed "
            f"({service.dataset.phase.lower()}).",
            from_phases={phases.PENDING, phases.PREWARMING},
        )
        return
    objects = render_service(service_spec(service), cluster_domain=settings.CLUSTER_DOMAIN)
    revision = revision_hash(objects)
    try:
        lines = get_cluster().apply(objects)
    except PermanentClusterError as exc:
        service_transition(
            service_id=service.id,
            to_phase=phases.FAILED,
            reason="ApplyFailed",
            message=f"The cluster refused the service: {exc}",
            exclude_phases={phases.DELETING, phases.DELETED},
        )
        return
    service_record_applied(service_id=service.id, revision=revision, lines=lines)
    # From Failed too: a new apply after a refused one starts over.
    service_transition(
        service_id=service.id,
        to_phase=phases.DEPLOYING,
        reason="WaitingForPods",
        message=f"Revision {revision} applied; waiting for pods.",
        from_phases={phases.PENDING, phases.PREWARMING, phases.FAILED},
    )
    observe_service(InferenceService.objects.get(id=service.id))


def observe_service(service: InferenceService) -> None:
    """Ask the cluster about the service and record the phase its answer implies."""
    observation = get_cluster().observe(service.namespace, service.name)
    status = derive_status(observation, desired_replicas=service.replicas)
    service_record_observation(service=service, observed=observation.to_json(), status=status)


def delete_service_objects(service: InferenceService) -> None:
    get_cluster().delete_service(service.namespace, service.name)
    observe_service(service)


def observe_by_name(namespace: str, name: str) -> None:
    """The watcher's callback: a labelled object of this service changed."""
    service = (
        InferenceService.objects.select_related("dataset", "queue")
        .filter(namespace=namespace, name=name)
        .exclude(phase=phases.DELETED)
        .first()
    )
    if service is not None:
        observe_service(service)


def fail_if_stuck(service: InferenceService) -> bool:
    """Fail a service that has not become Running within the start deadline of its last apply."""
    if service.phase not in {phases.DEPLOYING, phases.STARTING} or service.applied_at is None:
        return False
    if service.reason in KUEUE_WAITING_REASONS:
        return False  # waiting in Kueue's queue for quota is not failing to start
    age = (timezone.now() - service.applied_at).total_seconds()
    if age < settings.SERVICE_START_DEADLINE_SECONDS:
        return False
    return service_transition(
        service_id=service.id,
        to_phase=phases.FAILED,
        reason="StartTimeout",
        message=f"Not running {int(age // 60)} minutes after the last deploy ({service.message}).",
        from_phases={phases.DEPLOYING, phases.STARTING},
    )

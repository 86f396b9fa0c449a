"""Celery tasks: take ids, fetch, call a function. Idempotent, acks_late, retried on transient errors."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from deploy import sync
from deploy.clusters import TransientClusterError
from deploy.retry import RETRY_TRANSIENT
from services import phases
from services.models import InferenceService

log = logging.getLogger(__name__)


def _service(service_id: int) -> InferenceService | None:
    return InferenceService.objects.select_related("dataset", "queue").filter(id=service_id).first()


@shared_task(**RETRY_TRANSIENT)
def reconcile_service(service_id: int) -> None:
    """Make the cluster match the service's desired spec (apply), or remove it when deleting."""
    service = _service(service_id)
    if service is None or service.phase == phases.DELETED:
        return
    if service.phase == phases.DELETING:
        sync.delete_service_objects(service)
        return
    if service.phase == phases.QUEUED and not service.applied_revision:
        return  # nothing is applied before admission (services.admission.admit_queued)
    sync.apply_service(service)


@shared_task(**RETRY_TRANSIENT)
def delete_service(service_id: int) -> None:
    service = _service(service_id)
    if service is not None and service.phase == phases.DELETING:
        sync.delete_service_objects(service)


@shared_task(acks_late=True)
def repair_drift() -> None:
    """Periodic safety net for missed watch events and lost tasks."""
    from datasets.prewarm import sync_running_prewarms
    from services.admission import admit_queued

    sync_running_prewarms()
    # Quota freed by services that stopped or went away: admit who waits, in order.
    for queue_id in set(
        InferenceService.objects.filter(phase=phases.QUEUED).values_list("queue_id", flat=True)
    ):
        admit_queued(queue_id)
    now = timezone.now()
    stale = now - timedelta(seconds=60)
    live = InferenceService.objects.select_related("dataset", "queue").exclude(phase=phases.DELETED)
    for service in live:
        try:
            if service.phase == phases.PENDING and service.created_at < stale:
                reconcile_service.delay(service.id)  # its task was lost
            elif service.phase in phases.OBSERVED | {phases.DELETING} and service.applied_revision:
                sync.observe_service(service)
                service.refresh_from_db()
                if service.phase in phases.OBSERVED and not service.observed.get("found"):
                    reconcile_service.delay(service.id)  # objects vanished: apply again
                sync.fail_if_stuck(service)
            elif service.phase == phases.DELETING:
                delete_service.delay(service.id)
        except TransientClusterError as exc:
            log.warning("repair_drift: %s/%s: %s", service.namespace, service.name, exc)

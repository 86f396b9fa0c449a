"""Every write to an inference service: one function each, side effects after commit."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from deploy.status import DerivedStatus
from queues.models import Queue
from services import phases
from services.model_checks import check_model_files
from services.models import InferenceService, ServiceEvent
from services.quota import check_queue_quota

# What a user may set when creating a service (everything else is the console's).
SPEC_FIELDS = (
    "name", "description", "queue", "runtime", "image", "dataset", "model_path", "served_model_name",
    "engine_args", "env", "replicas", "cpu", "memory", "gpu_count", "gpu_type", "shm_size",
    "auth_policy", "affinity_mode", "node_rules", "tolerations", "fit_override",
)  # fmt: skip
NAME_TAKEN = "A service with this name already exists in namespace {namespace}."


def _enqueue_reconcile(service_id: int) -> None:
    from deploy.tasks import reconcile_service

    transaction.on_commit(lambda: reconcile_service.delay(service_id))


def _record(service: InferenceService, *, kind: str, reason: str, message: str, actor: str = "") -> None:
    ServiceEvent.objects.create(
        service=service, kind=kind, phase=service.phase, reason=reason, message=message, actor=actor
    )


def _check_name_free(service: InferenceService) -> None:
    taken = (
        InferenceService.objects.filter(namespace=service.namespace, name=service.name)
        .exclude(phase=phases.DELETED)
        .exclude(id=service.id)
        .exists()
    )
    if taken:
        raise ValidationError({"name": NAME_TAKEN.format(namespace=service.namespace)})


def service_create(*, owner: AbstractBaseUser, **fields: Any) -> InferenceService:
    """Validate and save a new service as Pending; reconcile starts after commit.

    Raises django ValidationError with field names; nothing is saved then.
    """
    unknown = set(fields) - set(SPEC_FIELDS)
    if unknown:
        raise ValidationError({name: "Unknown field." for name in sorted(unknown)})
    service = InferenceService(owner=owner, namespace=settings.SERVICE_NAMESPACE, **fields)
    service.full_clean(validate_constraints=False)
    if service.fit_override and not owner.is_staff:
        raise ValidationError({"fit_override": "Only admins may override the fit check."})
    # Reads the dataset's files (S3, a mounted folder): before any transaction opens.
    check_model_files(service)
    try:
        with transaction.atomic():
            if service.queue_id is not None:
                # Lock the queue row so two creates racing for its last GPUs see each other.
                Queue.objects.select_for_update().filter(id=service.queue_id).first()
            _check_name_free(service)
            check_queue_quota(
                queue=service.queue,
                gpu_count=service.gpu_count,
                replicas=service.replicas,
                cpu=service.cpu,
                memory=service.memory,
                exclude_id=None,
            )
            service.save()
            _record(
                service,
                kind=ServiceEvent.Kind.ACTION,
                reason="Created",
                message=f"Created by {owner}: {service.runtime_info.label}, {service.replicas} × "
                f"{service.gpu_count} GPU, model {service.dataset.name}/{service.model_path}.",
                actor=str(owner),
            )
            _enqueue_reconcile(service.id)
    except IntegrityError:
        # Lost a race for the name against a concurrent create.
        raise ValidationError({"name": NAME_TAKEN.format(namespace=service.namespace)}) from None
    return service


def service_update(
    *,
    service: InferenceService,
    actor: AbstractBaseUser,
    replicas: int | None = None,
    description: str | None = None,
) -> InferenceService:
    """Change replicas (scale, 0 stops) or the description; a new spec goes through reconcile."""
    if service.phase in {phases.DELETING, phases.DELETED}:
        raise ValidationError({"replicas": f"The service is {service.phase.lower()}."})
    with transaction.atomic():
        service = InferenceService.objects.select_for_update().get(id=service.id)
        Queue.objects.select_for_update().filter(id=service.queue_id).first()
        changes = []
        if description is not None and description != service.description:
            service.description = description
            changes.append("description")
        if replicas is not None and replicas != service.replicas:
            old = service.replicas
            service.replicas = replicas
            service.full_clean(validate_constraints=False)
            check_queue_quota(
                queue=service.queue,
                gpu_count=service.gpu_count,
                replicas=replicas,
                cpu=service.cpu,
                memory=service.memory,
                exclude_id=service.id,
            )
            changes.append("replicas")
            _record(
                service,
                kind=ServiceEvent.Kind.ACTION,
                reason="Scaled",
                message=f"Replicas {old} → {replicas} by {actor}.",
                actor=str(actor),
            )
        if changes:
            service.save(update_fields=[*changes, "updated_at"])
        if "replicas" in changes:
            _enqueue_reconcile(service.id)
    return service


def service_delete(*, service: InferenceService, actor: AbstractBaseUser) -> None:
    """Mark the service Deleting; the worker removes its objects and then marks it Deleted."""
    with transaction.atomic():
        changed = service_transition(
            service_id=service.id,
            to_phase=phases.DELETING,
            reason="DeleteRequested",
            message=f"Delete requested by {actor}.",
            exclude_phases={phases.DELETING, phases.DELETED},
            actor=str(actor),
        )
        if changed:
            from deploy.tasks import delete_service

            transaction.on_commit(lambda: delete_service.delay(service.id))


def service_transition(
    *,
    service_id: int,
    to_phase: str,
    reason: str,
    message: str,
    from_phases: set[str] | None = None,
    exclude_phases: set[str] | None = None,
    ready_replicas: int | None = None,
    actor: str = "",
) -> bool:
    """Move a service to a phase with a conditional update; record an event if anything changed.

    Returns False when the service was not in an allowed phase (someone else moved it first).
    """
    with transaction.atomic():
        rows = InferenceService.objects.filter(id=service_id)
        if from_phases is not None:
            rows = rows.filter(phase__in=from_phases)
        if exclude_phases:
            rows = rows.exclude(phase__in=exclude_phases)
        current = rows.values("phase", "reason", "message", "ready_replicas").first()
        if current is None:
            return False
        updates: dict[str, Any] = {"reason": reason, "message": message}
        if ready_replicas is not None:
            updates["ready_replicas"] = ready_replicas
        if current["phase"] != to_phase:
            updates["phase_changed_at"] = timezone.now()
        unchanged = current["phase"] == to_phase and all(current.get(k) == v for k, v in updates.items())
        if unchanged:
            return False
        # Conditional on what we just read: a concurrent writer makes this a no-op, not a lost update.
        updated = rows.filter(
            phase=current["phase"], reason=current["reason"], message=current["message"]
        ).update(phase=to_phase, **updates)
        if not updated:
            return False
        if current["phase"] != to_phase or current["reason"] != reason:
            ServiceEvent.objects.create(
                service_id=service_id,
                kind=ServiceEvent.Kind.PHASE,
                phase=to_phase,
                reason=reason,
                message=message,
                actor=actor,
            )
        return True


def service_record_applied(*, service_id: int, revision: str, lines: list[str]) -> None:
    InferenceService.objects.filter(id=service_id).update(
        applied_revision=revision, applied_at=timezone.now()
    )
    ServiceEvent.objects.create(
        service_id=service_id,
        kind=ServiceEvent.Kind.CLUSTER,
        reason="Applied",
        message=f"Applied revision {revision}: " + "; ".join(lines),
    )


def service_record_observation(
    *, service: InferenceService, observed: dict[str, Any], status: DerivedStatus
) -> bool:
    """Store what the cluster reported and follow the phase it implies. Returns True on a change."""
    InferenceService.objects.filter(id=service.id).update(observed=observed, observed_at=timezone.now())
    if service.phase == phases.DELETING:
        if observed.get("found") or observed.get("pods") or observed.get("other_objects"):
            return False
        return service_transition(
            service_id=service.id,
            to_phase=phases.DELETED,
            reason="Deleted",
            message="All objects were removed from the cluster.",
            from_phases={phases.DELETING},
            ready_replicas=0,
        )
    if not service.applied_revision or service.phase not in phases.OBSERVED:
        return False
    if service.phase == phases.FAILED and service.reason in phases.STICKY_FAILURE_REASONS:
        return False
    return service_transition(
        service_id=service.id,
        to_phase=status.phase,
        reason=status.reason,
        message=status.message,
        from_phases=phases.OBSERVED,
        ready_replicas=status.ready_replicas,
    )

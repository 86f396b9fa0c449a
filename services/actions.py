"""Every write to an inference service: one function each, side effects after commit."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from console.validators import parse_quantity
from deploy.status import DerivedStatus
from queues.selectors import cohort_of
from services import phases
from services.admission import admit_queued, cluster_nodes, decide, flavor_named, lock_queues
from services.model_checks import check_model_files
from services.models import InferenceService, ServiceEvent

# What a user may set when creating a service (everything else is the console's).
SPEC_FIELDS = (
    "name", "description", "queue", "runtime", "image", "dataset", "model_path", "served_model_name",
    "engine_args", "env", "replicas", "cpu", "memory", "gpu_count", "gpu_type", "shm_size",
    "auth_policy", "affinity_mode", "node_rules", "tolerations", "fit_override", "team", "priority_class",
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


def _prepare(owner: AbstractBaseUser, fields: dict[str, Any]) -> tuple[InferenceService, list | None]:
    """A new service checked as far as it can be without the queue's lock: fields, team, model
    files; and the cluster's nodes for the admission check. Nothing is saved."""
    unknown = set(fields) - set(SPEC_FIELDS)
    if unknown:
        raise ValidationError({name: "Unknown field." for name in sorted(unknown)})
    service = InferenceService(owner=owner, namespace=settings.SERVICE_NAMESPACE, **fields)
    if fields.get("team") is None:  # not given, or left empty in the form
        service.team = _only_team(owner)
    service.full_clean(validate_constraints=False)
    if service.fit_override and not owner.is_staff:
        raise ValidationError({"fit_override": "Only admins may override the fit check."})
    _check_team(service, owner)
    _set_amounts(service)
    # Reads the dataset's files (S3, a mounted folder) and the cluster's nodes: before any
    # transaction opens.
    check_model_files(service)
    return service, cluster_nodes()


def service_check(*, owner: AbstractBaseUser, **fields: Any) -> dict[str, Any]:
    """The pre-submit check: everything service_create would decide, without creating anything.

    Raises ValidationError for bad input, like service_create; over quota is a verdict here."""
    service, nodes = _prepare(owner, fields)
    decision = decide(service, nodes=nodes, locked=cohort_of(service.queue))  # a read: no locks
    return {
        "verdict": decision.verdict,
        "field": decision.field,
        "message": decision.message,
        "flavor": decision.flavor,
        "holds": decision.holds,
        "position": decision.position,
        "flavors": [
            {"flavor": f.flavor, "outcome": f.outcome, "free_gpus": f.free.gpu, "reason": f.reason}
            for f in decision.flavors
        ],
    }


def service_create(*, owner: AbstractBaseUser, **fields: Any) -> InferenceService:
    """Validate and save a new service as Pending; reconcile starts after commit.

    Raises django ValidationError with field names; nothing is saved then.
    """
    service, nodes = _prepare(owner, fields)
    try:
        with transaction.atomic():
            # Lock the queue (and its cohort) so two creates racing for its last GPUs see each other.
            locked = lock_queues(service.queue)
            _check_name_free(service)
            decision = decide(service, nodes=nodes, locked=locked)
            if decision.verdict == "refuse":
                raise ValidationError({decision.field or "queue": decision.message})
            if decision.verdict == "admit":
                service.flavor = flavor_named(decision.flavor)
            else:
                service.phase, service.reason, service.message = (
                    phases.QUEUED,
                    "WaitingForQuota",
                    decision.message,
                )
            service.save()
            _record(
                service,
                kind=ServiceEvent.Kind.ACTION,
                reason="Created",
                message=f"Created by {owner}: {service.runtime_info.label}, {service.replicas} × "
                f"{service.gpu_count} GPU, model {service.dataset.name}/{service.model_path}; "
                + (
                    f"admitted to flavor {decision.flavor}, holds {decision.holds}."
                    if service.flavor_id
                    else f"queued: {decision.message}"
                ),
                actor=str(owner),
            )
            if service.phase == phases.PENDING:
                _enqueue_reconcile(service.id)
    except IntegrityError:
        # Lost a race for the name against a concurrent create.
        raise ValidationError({"name": NAME_TAKEN.format(namespace=service.namespace)}) from None
    return service


def _only_team(owner: AbstractBaseUser):
    """A user in exactly one team counts against it without choosing; in several, they choose."""
    teams = list(owner.teams.all()[:2]) if owner.pk else []
    return teams[0] if len(teams) == 1 else None


def _check_team(service: InferenceService, owner: AbstractBaseUser) -> None:
    team = service.team
    if team is None:
        if owner.pk and owner.teams.count() > 1:
            raise ValidationError(
                {"team": "You are in several teams: choose the one this service counts against."}
            )
        return
    if not team.members.filter(pk=owner.pk).exists():
        raise ValidationError({"team": f"You are not a member of team {team.name}."})
    if team.queues.exists() and not team.queues.filter(pk=service.queue_id).exists():
        allowed = ", ".join(team.queues.values_list("name", flat=True))
        raise ValidationError({"queue": f"Team {team.name} may use these queues: {allowed}."})


def _set_amounts(service: InferenceService) -> None:
    """The numeric twins of cpu and memory that queue accounting sums in SQL."""
    service.cpu_milli = round(parse_quantity(service.cpu) * 1000)
    service.memory_bytes = round(parse_quantity(service.memory))


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
    nodes = cluster_nodes()
    with transaction.atomic():
        locked = lock_queues(service.queue)
        service = InferenceService.objects.select_for_update().get(id=service.id)
        changes = []
        if description is not None and description != service.description:
            service.description = description
            changes.append("description")
        if replicas is not None and replicas != service.replicas:
            old = service.replicas
            service.replicas = replicas
            service.full_clean(validate_constraints=False)
            if service.phase != phases.QUEUED and replicas > old:
                # More replicas must fit now, in the flavor the service already holds.
                decision = decide(service, nodes=nodes, locked=locked)
                if decision.verdict != "admit" or (service.flavor and decision.flavor != service.flavor.name):
                    raise ValidationError(
                        {"replicas": decision.message or "More replicas do not fit the quota now."}
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
            # Its quota is free at once: the next waiting services may go.
            transaction.on_commit(lambda: admit_queued(service.queue_id))


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

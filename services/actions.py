"""Every write to an inference service: one function each, side effects after commit."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from auth.invalidation import announce_service_changed
from console.audit import AuditContext, audit_record, changes_between
from console.validators import parse_quantity
from deploy.status import DerivedStatus
from queues.selectors import cohort_of
from services import phases
from services.admission import admit_queued, cluster_nodes, decide, flavor_named, lock_queues
from services.auth_policy import (
    auth_header_problems,
    cidr_problems,
    encrypt_params,
    fill_kept_values,
    normalize_cidrs,
    param_names,
    param_problems,
    stored_params_differ,
)
from services.model_checks import check_model_files
from services.models import InferenceService, ServiceEvent

# What a user may set when creating a service (everything else is the console's).
SPEC_FIELDS = (
    "name", "description", "queue", "runtime", "image", "dataset", "model_path", "served_model_name",
    "engine_args", "env", "replicas", "cpu", "memory", "gpu_count", "gpu_type", "shm_size",
    "auth_policy", "auth_header", "allowed_cidrs", "affinity_mode", "node_rules", "tolerations",
    "fit_override", "team", "priority_class",
)  # fmt: skip
# The gateway's view of a service, changeable after create; `auth_params` is not a model field:
# it is stored encrypted in auth_params_encrypted and never shown back.
POLICY_FIELDS = ("auth_policy", "auth_header", "allowed_cidrs", "auth_params")
NAME_TAKEN = "A service with this name already exists in namespace {namespace}."
NO_AUTH_FOR_STAFF_ONLY = (
    "Only admins may turn off key checks: with no auth policy anyone who reaches the gateway can "
    "call the model. Choose API key."
)
SERVICE_OBJECT_TYPE = "service"


def _audit_snapshot(service: InferenceService) -> dict[str, Any]:
    """What an audit reader may see of a service. Names only for env and extra auth parameters
    (their values may be secrets), and no engine_args (it may hold --api-key)."""
    return {
        "name": service.name,
        "namespace": service.namespace,
        "queue": service.queue.name if service.queue_id else None,
        "runtime": service.runtime,
        "image": service.image,
        "dataset": service.dataset.name if service.dataset_id else None,
        "model_path": service.model_path,
        "replicas": service.replicas,
        "cpu": service.cpu,
        "memory": service.memory,
        "gpu_count": service.gpu_count,
        "gpu_type": service.gpu_type,
        "env": sorted(item["name"] for item in service.env if isinstance(item, dict) and "name" in item),
        "description": service.description,
        "auth_policy": service.auth_policy,
        "auth_header": service.auth_header,
        "allowed_cidrs": list(service.allowed_cidrs),
        "auth_params": [f"{p['in']} {p['name']}" for p in param_names(service.auth_params_encrypted)],
    }


def _context(context: AuditContext | None, actor: AbstractBaseUser) -> AuditContext:
    return context if context is not None else AuditContext(actor=actor)


def _apply_auth_params(service: InferenceService, params: list | None) -> None:
    """Check the extra parameters and store them encrypted; a parameter re-sent without a value
    keeps the stored one."""
    if params is None:
        return
    params = fill_kept_values(params, service.auth_params_encrypted) if isinstance(params, list) else params
    problems = param_problems(params, auth_header=service.key_header)
    if problems:
        raise ValidationError({"auth_params": problems})
    service.auth_params_encrypted = encrypt_params(params)


def _check_policy_allowed(service: InferenceService, actor: AbstractBaseUser) -> None:
    if service.auth_policy == InferenceService.AuthPolicy.NONE and not actor.is_staff:
        raise ValidationError({"auth_policy": NO_AUTH_FOR_STAFF_ONLY})


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
    fields = dict(fields)
    auth_params = fields.pop("auth_params", None)
    unknown = set(fields) - set(SPEC_FIELDS)
    if unknown:
        raise ValidationError({name: "Unknown field." for name in sorted(unknown)})
    service = InferenceService(owner=owner, namespace=settings.SERVICE_NAMESPACE, **fields)
    if fields.get("team") is None:  # not given, or left empty in the form
        service.team = _only_team(owner)
    service.full_clean(validate_constraints=False)
    if service.fit_override and not owner.is_staff:
        raise ValidationError({"fit_override": "Only admins may override the fit check."})
    _check_policy_allowed(service, owner)
    _apply_auth_params(service, auth_params)
    service.allowed_cidrs = normalize_cidrs(service.allowed_cidrs)
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


def service_create(
    *, owner: AbstractBaseUser, context: AuditContext | None = None, **fields: Any
) -> InferenceService:
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
            audit_record(
                context=_context(context, owner),
                action="create",
                obj=service,
                object_type=SERVICE_OBJECT_TYPE,
                changes=changes_between({}, _audit_snapshot(service)),
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
    auth_policy: str | None = None,
    auth_header: str | None = None,
    allowed_cidrs: list[str] | None = None,
    auth_params: list[dict[str, Any]] | None = None,
    context: AuditContext | None = None,
) -> InferenceService:
    """Change replicas (scale, 0 stops), the description or the auth policy (only what is given).

    A new spec goes through reconcile; a new policy only needs the gateways to reload it."""
    if service.phase in {phases.DELETING, phases.DELETED}:
        raise ValidationError({"replicas": f"The service is {service.phase.lower()}."})
    nodes = cluster_nodes()
    with transaction.atomic():
        locked = lock_queues(service.queue)
        service = InferenceService.objects.select_for_update().get(id=service.id)
        before = _audit_snapshot(service)
        changes = _update_policy(
            service,
            actor=actor,
            auth_policy=auth_policy,
            auth_header=auth_header,
            allowed_cidrs=allowed_cidrs,
            auth_params=auth_params,
        )
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
            audit_record(
                context=_context(context, actor),
                action="update",
                obj=service,
                object_type=SERVICE_OBJECT_TYPE,
                changes=changes_between(before, _audit_snapshot(service)),
            )
        if set(changes) & {"auth_policy", "auth_header", "allowed_cidrs", "auth_params_encrypted"}:
            announce_service_changed(namespace=service.namespace, name=service.name)
        if "replicas" in changes:
            _enqueue_reconcile(service.id)
    return service


def _update_policy(
    service: InferenceService,
    *,
    actor: AbstractBaseUser,
    auth_policy: str | None,
    auth_header: str | None,
    allowed_cidrs: list[str] | None,
    auth_params: list[dict[str, Any]] | None,
) -> list[str]:
    """Apply the given policy fields to the locked service with the model's checks; returns the
    names of the model fields that changed. Raises ValidationError keyed by field."""
    changed = []
    for field, value in (("auth_policy", auth_policy), ("auth_header", auth_header)):
        if value is not None and value != getattr(service, field):
            setattr(service, field, value)
            changed.append(field)
    errors: dict[str, list[str]] = {}
    if "auth_policy" in changed:
        if service.auth_policy not in InferenceService.AuthPolicy.values:
            errors["auth_policy"] = [f"{service.auth_policy!r} is not one of: none, api_key."]
        elif service.auth_policy == InferenceService.AuthPolicy.NONE and not actor.is_staff:
            errors["auth_policy"] = [NO_AUTH_FOR_STAFF_ONLY]
    if "auth_header" in changed and (problems := auth_header_problems(service.auth_header)):
        errors["auth_header"] = problems
    if allowed_cidrs is not None:
        problems = cidr_problems(allowed_cidrs)
        if problems:
            errors["allowed_cidrs"] = problems
        elif normalize_cidrs(allowed_cidrs) != service.allowed_cidrs:
            service.allowed_cidrs = normalize_cidrs(allowed_cidrs)
            changed.append("allowed_cidrs")
    if errors:
        raise ValidationError(errors)
    if auth_params is not None:
        stored = service.auth_params_encrypted
        _apply_auth_params(service, auth_params)
        # Fernet tokens differ on every encryption: compare what they hold.
        if stored_params_differ(stored, service.auth_params_encrypted):
            changed.append("auth_params_encrypted")
        else:
            service.auth_params_encrypted = stored
    return changed


def service_delete(
    *, service: InferenceService, actor: AbstractBaseUser, context: AuditContext | None = None
) -> None:
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
            audit_record(
                context=_context(context, actor),
                action="delete",
                obj=service,
                object_type=SERVICE_OBJECT_TYPE,
                changes={"phase": [service.phase, phases.DELETING]},
            )
            announce_service_changed(namespace=service.namespace, name=service.name)
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
        current = rows.values("phase", "reason", "message", "ready_replicas", "namespace", "name").first()
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
        if current["phase"] != to_phase and phases.SERVING & {current["phase"], to_phase}:
            # The gateway routes only serving services: drop its cached route now, not at its TTL.
            announce_service_changed(namespace=current["namespace"], name=current["name"])
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

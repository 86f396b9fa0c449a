"""Every write to an inference key: create, update, rotate, revoke, disable when unused.

Each runs in one transaction, writes an audit row (never the plaintext or the digest) and, after
commit, tells the gateways to drop what they cached about the key.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from auth import invalidation
from auth.key_rules import ACTIVE, LIMIT_FIELDS, expiry_problem, grace_hours_problem
from auth.key_selectors import KEY_OBJECT_TYPE
from auth.models import InferenceKey
from auth.tokens import inference_key_digest, new_inference_key
from console.audit import SYSTEM, AuditContext, audit_record, changes_between
from services import phases
from services.models import InferenceService
from services.selectors import services_visible_to


class _Unset:
    """Marks an argument that was not given (None is a value: no expiry, no limit)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _announce(prefix: str) -> None:
    # Sent after the transaction commits (the invalidation module defers it itself).
    invalidation.announce_key_changed(prefix=prefix)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _snapshot(key: InferenceKey, services: list[InferenceService]) -> dict[str, Any]:
    """What an audit reader may see of a key: never the plaintext or the digest."""
    return {
        "name": key.name,
        "user": key.user.get_username(),
        "services": sorted(s.name for s in services),
        "expires_at": _iso(key.expires_at),
        **{field: getattr(key, field) for field in LIMIT_FIELDS},
    }


def _check_scope(*, actor: AbstractBaseUser | None, services: list[InferenceService]) -> None:
    """A key may only call services its creator can see (staff see all); deleted ones are gone."""
    if not services:
        raise ValidationError({"services": "Choose at least one service the key may call."})
    visible = services_visible_to(actor) if actor is not None else InferenceService.objects.all()
    usable = set(
        visible.exclude(phase=phases.DELETED)
        .filter(id__in=[s.id for s in services])
        .values_list("id", flat=True)
    )
    refused = sorted(s.name for s in services if s.id not in usable)
    if refused:
        raise ValidationError({"services": f"You cannot scope a key to: {', '.join(refused)}."})


@transaction.atomic
def inference_key_create(
    *,
    owner: AbstractBaseUser,
    created_by: AbstractBaseUser,
    name: str,
    services: list[InferenceService],
    expires_at: datetime | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    daily_token_budget: int | None = None,
    monthly_token_budget: int | None = None,
    context: AuditContext,
) -> tuple[InferenceKey, str]:
    """Create a key scoped to `services`; the plaintext is returned once and never stored or logged.

    Raises ValidationError with field names; nothing is saved then."""
    services = list(services)
    errors: dict[str, list[str]] = {}
    if owner.pk != created_by.pk and not created_by.is_staff:
        errors["user"] = ["Only admins may create keys for other users."]
    try:
        _check_scope(actor=created_by, services=services)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    plaintext, prefix = new_inference_key()
    key = InferenceKey(
        user=owner,
        created_by=created_by,
        name=(name or "").strip(),
        prefix=prefix,
        digest=inference_key_digest(plaintext),
        expires_at=expires_at,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        daily_token_budget=daily_token_budget,
        monthly_token_budget=monthly_token_budget,
    )
    try:
        key.full_clean()
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}  # every problem at once, on its field
    if errors:
        raise ValidationError(errors)
    key.save()
    key.services.set(services)
    audit_record(
        context=context,
        action="create",
        obj=key,
        object_type=KEY_OBJECT_TYPE,
        changes=changes_between({}, {"prefix": prefix, **_snapshot(key, services)}),
    )
    _announce(prefix)
    return key, plaintext


def inference_key_update(
    *,
    key: InferenceKey,
    context: AuditContext,
    name: str | _Unset = UNSET,
    services: list[InferenceService] | _Unset = UNSET,
    expires_at: datetime | None | _Unset = UNSET,
    rpm_limit: int | None | _Unset = UNSET,
    tpm_limit: int | None | _Unset = UNSET,
    daily_token_budget: int | None | _Unset = UNSET,
    monthly_token_budget: int | None | _Unset = UNSET,
) -> InferenceKey:
    """Change a key's name, scope, expiry or limits (only what is given)."""
    given = {
        field: value
        for field, value in {
            "name": name,
            "expires_at": expires_at,
            "rpm_limit": rpm_limit,
            "tpm_limit": tpm_limit,
            "daily_token_budget": daily_token_budget,
            "monthly_token_budget": monthly_token_budget,
        }.items()
        if value is not UNSET
    }
    with transaction.atomic():
        key = InferenceKey.objects.select_for_update().select_related("user").get(id=key.id)
        if key.revoked_at is not None:
            raise ValidationError("This key is revoked; it cannot be changed.")
        old_services = list(key.services.all())
        before = _snapshot(key, old_services)
        old_expires_at = key.expires_at
        if isinstance(given.get("name"), str):
            given["name"] = given["name"].strip()
        for field, value in given.items():
            setattr(key, field, value)
        new_services = old_services
        if services is not UNSET:
            new_services = list(services)
            if {s.id for s in new_services} != {s.id for s in old_services}:
                _check_scope(actor=context.actor, services=new_services)
        key.full_clean()
        if key.expires_at != old_expires_at:
            if key.replaced_by_id is not None:
                # Its expiry is the end of the rotation's grace period: moving it would keep the
                # old key alive after its replacement (or forever).
                raise ValidationError(
                    {"expires_at": "This key was rotated; it stops at the end of its grace period."}
                )
            # Only a new expiry must be in the future; an expired key may still be renamed.
            problem = expiry_problem(key.expires_at, now=timezone.now())
            if problem:
                raise ValidationError({"expires_at": problem})
        after = _snapshot(key, new_services)
        changes = changes_between(before, after)
        if not changes:
            return key
        key.save(update_fields=list(given))
        if changes.get("services"):
            key.services.set(new_services)
        audit_record(context=context, action="update", obj=key, object_type=KEY_OBJECT_TYPE, changes=changes)
        _announce(key.prefix)
    return key


def inference_key_rotate(
    *, key: InferenceKey, grace_hours: int, context: AuditContext
) -> tuple[InferenceKey, str]:
    """A new key with the same owner, scope, expiry and limits; the old one keeps working for
    `grace_hours` (0: it stops at once) and points to its replacement. Returns (new key, plaintext)."""
    problem = grace_hours_problem(grace_hours)
    if problem:
        raise ValidationError({"grace_hours": problem})
    now = timezone.now()
    with transaction.atomic():
        old = InferenceKey.objects.select_for_update().select_related("user").get(id=key.id)
        if old.state != ACTIVE:
            raise ValidationError(f"Only an active key can be rotated; this one is {old.state}.")
        services = list(old.services.all())
        plaintext, prefix = new_inference_key()
        new = InferenceKey.objects.create(
            user=old.user,
            created_by=context.actor or old.created_by,
            name=old.name,
            prefix=prefix,
            digest=inference_key_digest(plaintext),
            expires_at=old.expires_at,
            **{field: getattr(old, field) for field in LIMIT_FIELDS},
        )
        new.services.set(services)
        grace_end = now + timedelta(hours=grace_hours)
        old_end = min(old.expires_at, grace_end) if old.expires_at else grace_end
        # Conditional on the state read under the lock: a concurrent rotate or revoke wins.
        updated = InferenceKey.objects.filter(
            id=old.id, replaced_by__isnull=True, revoked_at__isnull=True, disabled_at__isnull=True
        ).update(replaced_by=new, expires_at=old_end)
        if not updated:
            raise ValidationError("The key changed while rotating it; reload and try again.")
        audit_record(
            context=context,
            action="create",
            obj=new,
            object_type=KEY_OBJECT_TYPE,
            changes=changes_between(
                {}, {"prefix": prefix, "rotated_from": old.prefix, **_snapshot(new, services)}
            ),
        )
        audit_record(
            context=context,
            action="rotate",
            obj=old,
            object_type=KEY_OBJECT_TYPE,
            changes={
                "replaced_by": [None, prefix],
                "expires_at": [_iso(old.expires_at), _iso(old_end)],
                "grace_hours": [None, grace_hours],
            },
        )
        _announce(old.prefix)
        _announce(prefix)
    return new, plaintext


def inference_key_revoke(*, key: InferenceKey, context: AuditContext) -> bool:
    """Revoke a key; True if this call revoked it, False if it already was (idempotent)."""
    now = timezone.now()
    with transaction.atomic():
        revoked = InferenceKey.objects.filter(id=key.id, revoked_at__isnull=True).update(revoked_at=now)
        if revoked:
            audit_record(
                context=context,
                action="revoke",
                obj=key,
                object_type=KEY_OBJECT_TYPE,
                changes={"revoked_at": [None, _iso(now)]},
            )
            _announce(key.prefix)
    return bool(revoked)


def inference_keys_disable_unused(*, now: datetime) -> int:
    """Disable keys unused for INFERENCE_KEY_DISABLE_AFTER_DAYS: never used and created before
    then, or last used before then. Returns how many were disabled."""
    cutoff = now - timedelta(days=settings.INFERENCE_KEY_DISABLE_AFTER_DAYS)
    unused = Q(last_used_at__isnull=True, created_at__lt=cutoff) | Q(last_used_at__lt=cutoff)
    disabled = 0
    with transaction.atomic():
        candidates = list(
            InferenceKey.objects.filter(unused, revoked_at__isnull=True, disabled_at__isnull=True)
            .select_for_update(skip_locked=True)
            .only("id", "prefix", "name", "last_used_at")
        )
        for key in candidates:
            # Conditional: a key used since the read (last_used_at moved) stays enabled.
            if not InferenceKey.objects.filter(unused, id=key.id, disabled_at__isnull=True).update(
                disabled_at=now
            ):
                continue
            disabled += 1
            audit_record(
                context=SYSTEM,
                action="disable",
                obj=key,
                object_type=KEY_OBJECT_TYPE,
                changes={"disabled_at": [None, _iso(now)]},
            )
            _announce(key.prefix)
    return disabled

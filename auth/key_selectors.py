"""Reads of inference keys, scoped to what a user may see: their own keys; staff see all."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Case, CharField, Q, QuerySet, Value, When
from django.utils import timezone

from auth.key_rules import ACTIVE, DISABLED, EXPIRED, REVOKED, ROTATED
from auth.models import InferenceKey
from console.models import AuditEvent

KEY_OBJECT_TYPE = "inference_key"


def _state_annotation(now: datetime) -> Case:
    # The same precedence as auth.key_rules.key_state, in SQL, so the list can filter on it.
    return Case(
        When(revoked_at__isnull=False, then=Value(REVOKED)),
        When(disabled_at__isnull=False, then=Value(DISABLED)),
        When(expires_at__lte=now, then=Value(EXPIRED)),
        When(replaced_by__isnull=False, then=Value(ROTATED)),
        default=Value(ACTIVE),
        output_field=CharField(),
    )


def keys_visible_to(user: AbstractBaseUser) -> QuerySet[InferenceKey]:
    rows = InferenceKey.objects.select_related("user", "created_by", "replaced_by").prefetch_related(
        "services"
    )
    return rows if user.is_staff else rows.filter(user=user)


def key_list(
    *,
    user: AbstractBaseUser,
    service: str = "",
    state: str = "",
    owner: str = "",
    now: datetime | None = None,
) -> QuerySet[InferenceKey]:
    """Keys `user` may see. `service` is a service id or name; `owner` a username (callers allow it
    for staff only); `state` one of auth.key_rules.STATES."""
    rows = keys_visible_to(user).annotate(current_state=_state_annotation(now or timezone.now()))
    if service:
        # An id (bounded: a huge number is no id, and would overflow the column) or a name.
        is_id = service.isdigit() and len(service) < 10
        match = Q(services__id=int(service)) if is_id else Q(services__name=service)
        rows = rows.filter(match).distinct()
    if state:
        rows = rows.filter(current_state=state)
    if owner:
        rows = rows.filter(user__username=owner)
    return rows


def key_audit_events(*, key: InferenceKey, limit: int = 100) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(object_type=KEY_OBJECT_TYPE, object_id=str(key.pk)).order_by("-at", "-id")[
            :limit
        ]
    )

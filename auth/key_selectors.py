"""Reads of inference keys, scoped to what a user may see: their own keys; staff see all."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Case, CharField, F, OuterRef, Q, QuerySet, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from auth.key_rules import ACTIVE, DISABLED, EXPIRED, REVOKED, ROTATED
from auth.models import InferenceKey, UsageHour
from console.models import AuditEvent

KEY_OBJECT_TYPE = "inference_key"
USAGE_DAYS = 30  # the key pages show what went through the gateway in this many days


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
    now = now or timezone.now()
    rows = keys_visible_to(user).annotate(current_state=_state_annotation(now), **_usage_annotations(now))
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


def _usage_annotations(now: datetime) -> dict:
    """Requests and tokens of each key in the last USAGE_DAYS, as subqueries, so that they
    compose with the list's filters (the scope filter's join and DISTINCT)."""
    recent = UsageHour.objects.filter(key=OuterRef("pk"), hour__gte=now - timedelta(days=USAGE_DAYS))
    per_key = recent.order_by().values("key")

    def total(expression) -> Coalesce:
        return Coalesce(Subquery(per_key.annotate(total=Sum(expression)).values("total")), 0)

    return {
        "recent_requests": total("requests"),
        "recent_tokens": total(F("prompt_tokens") + F("completion_tokens")),
    }


def key_usage_by_service(*, key: InferenceKey, now: datetime | None = None) -> list[dict]:
    """What the key did per service in the last USAGE_DAYS, busiest first."""
    since = (now or timezone.now()) - timedelta(days=USAGE_DAYS)
    return list(
        UsageHour.objects.filter(key=key, hour__gte=since)
        .values("service__name")
        .annotate(
            requests=Sum("requests"),
            errors_4xx=Sum("errors_4xx"),
            errors_5xx=Sum("errors_5xx"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
        )
        .order_by("-requests", "service__name")
    )


def key_audit_events(*, key: InferenceKey, limit: int = 100) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(object_type=KEY_OBJECT_TYPE, object_id=str(key.pk)).order_by("-at", "-id")[
            :limit
        ]
    )

"""Reads for the usage dashboard: what went through the gateway (UsageHour roll-ups) and GPU-hours
held by services, scoped to what a user may see (their own services; staff: everything)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F, QuerySet, Sum

from auth.models import UsageHour
from services import phases
from services.models import InferenceService, ServiceEvent
from services.selectors import services_visible_to

GROUPS = ("service", "key", "team")
PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}

_SUMS = ("requests", "errors_4xx", "errors_5xx", "prompt_tokens", "completion_tokens", "latency_ms_total")
# What each grouping groups by, and how its rows are labelled.
_GROUP_FIELDS = {
    "service": ("service_id", "service__name"),
    "key": ("key_id", "key__name", "key__prefix"),
    "team": ("service__team_id", "service__team__name"),
}


@dataclass(frozen=True)
class UsageRow:
    label: str
    requests: int
    errors_4xx: int
    errors_5xx: int
    prompt_tokens: int
    completion_tokens: int
    mean_latency_ms: float | None
    gpu_hours: float | None = None  # per service and per team only

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_visible_to(user: AbstractBaseUser) -> QuerySet[UsageHour]:
    """Usage of the services the user may see, whoever's key made the calls."""
    rows = UsageHour.objects.all()
    if not user.is_staff:
        rows = rows.filter(service__in=services_visible_to(user).values("id"))
    return rows


def usage_rows(*, user: AbstractBaseUser, group: str, since: datetime, now: datetime) -> list[UsageRow]:
    """One row per service, key or team since `since`, busiest first."""
    fields = _GROUP_FIELDS[group]
    totals = (
        usage_visible_to(user)
        .filter(hour__gte=since)
        .values(*fields)
        .annotate(**{f"sum_{name}": Sum(name) for name in _SUMS})
        .order_by("-sum_requests", fields[1])
    )
    gpu_hours = gpu_hours_by(user=user, group=group, since=since, now=now) if group != "key" else {}
    rows = []
    for total in totals:
        label = _label(group, total)
        requests = total["sum_requests"] or 0
        rows.append(
            UsageRow(
                label=label,
                requests=requests,
                errors_4xx=total["sum_errors_4xx"] or 0,
                errors_5xx=total["sum_errors_5xx"] or 0,
                prompt_tokens=total["sum_prompt_tokens"] or 0,
                completion_tokens=total["sum_completion_tokens"] or 0,
                mean_latency_ms=(total["sum_latency_ms_total"] / requests) if requests else None,
                gpu_hours=gpu_hours.pop(total[fields[0]], 0.0) if group != "key" else None,
            )
        )
    # Services (or teams) that held GPUs but served nothing through the gateway still cost.
    names = _names_for(group, gpu_hours)
    rows += [
        UsageRow(label=names.get(ident, "(no team)"), requests=0, errors_4xx=0, errors_5xx=0,
                 prompt_tokens=0, completion_tokens=0, mean_latency_ms=None, gpu_hours=hours)
        for ident, hours in gpu_hours.items()
        if hours > 0
    ]  # fmt: skip
    return rows


def _label(group: str, total: dict) -> str:
    if group == "key":
        return f"{total['key__name']} ({total['key__prefix']}…)" if total["key_id"] else "(no key: auth none)"
    return total[_GROUP_FIELDS[group][1]] or "(no team)"


def _names_for(group: str, ids: dict) -> dict:
    if group == "service":
        return dict(InferenceService.objects.filter(id__in=list(ids)).values_list("id", "name"))
    from queues.models import Team

    return dict(Team.objects.filter(id__in=[i for i in ids if i]).values_list("id", "name"))


def usage_series(*, user: AbstractBaseUser, since: datetime) -> list[tuple[datetime, int, int]]:
    """(hour, requests, tokens) for every hour with traffic since `since`, oldest first."""
    rows = (
        usage_visible_to(user)
        .filter(hour__gte=since)
        .values("hour")
        .annotate(requests=Sum("requests"), tokens=Sum(F("prompt_tokens") + F("completion_tokens")))
        .order_by("hour")
    )
    return [(row["hour"], row["requests"] or 0, row["tokens"] or 0) for row in rows]


def gpu_hours_by(*, user: AbstractBaseUser, group: str, since: datetime, now: datetime) -> dict:
    """GPU-hours held between `since` and `now`, by service id or team id.

    Time in phase Running, from the services' phase events, times the GPUs the service holds now
    (gpu_count x replicas): a scale change inside the period is counted at the current size.
    """
    services = {s.id: s for s in services_visible_to(user).filter(gpu_count__gt=0)}
    events = (
        ServiceEvent.objects.filter(service_id__in=list(services), kind=ServiceEvent.Kind.PHASE)
        .exclude(phase="")
        .order_by("service_id", "created_at", "id")
        .values_list("service_id", "created_at", "phase")
    )
    running_since: dict[int, datetime | None] = {}
    seconds: dict[int, float] = defaultdict(float)
    for service_id, at, phase in events:
        start = running_since.get(service_id)
        if start is not None and at > since:
            seconds[service_id] += (at - max(start, since)).total_seconds()
        running_since[service_id] = at if phase == phases.RUNNING else None
    for service_id, start in running_since.items():
        if start is not None:
            seconds[service_id] += (now - max(start, since)).total_seconds()
    result: dict = defaultdict(float)
    for service_id, held in seconds.items():
        service = services[service_id]
        key = service_id if group == "service" else service.team_id
        result[key] += max(held, 0.0) / 3600 * service.gpus_total
    return dict(result)

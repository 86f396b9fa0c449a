"""Reads of queues: usage per flavor (one aggregate query), the state the admission check needs,
queue positions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet, Sum

from queues.admission import Amounts, QueueState, TeamState
from queues.admission import FlavorQuota as FlavorQuotaState
from queues.models import FlavorQuota, Queue, ResourceFlavor, Team
from services import phases


def queues_with_usage() -> QuerySet[Queue]:
    """Each queue with the GPUs and services its admitted services hold (one query), and its
    quotas (one more)."""
    holding = Q(services__phase__in=phases.HOLDING)
    return (
        Queue.objects.annotate(
            gpus_used=Sum(F("services__gpu_count") * F("services__replicas"), filter=holding, default=0),
            services_live=Count("services", filter=Q(services__phase__in=phases.ACTIVE)),
            services_queued=Count("services", filter=Q(services__phase=phases.QUEUED)),
        )
        .prefetch_related("quotas__flavor")
        .order_by("name")
    )


def usage_by_flavor(queue_ids: Iterable[int], *, exclude_service_id: int | None = None) -> dict:
    """{(queue_id, flavor_id): (Amounts, services)} of admitted services: one aggregate query."""
    from services.models import InferenceService

    rows = (
        InferenceService.objects.filter(
            queue_id__in=list(queue_ids), phase__in=phases.HOLDING, flavor__isnull=False
        )
        .exclude(id=exclude_service_id)
        .values("queue_id", "flavor_id")
        .annotate(
            gpu=Sum(F("gpu_count") * F("replicas")),
            cpu=Sum(F("cpu_milli") * F("replicas")),
            memory=Sum(F("memory_bytes") * F("replicas")),
            services=Count("id"),
        )
    )
    return {
        (row["queue_id"], row["flavor_id"]): (
            Amounts(gpu=row["gpu"] or 0, cpu_milli=row["cpu"] or 0, memory=row["memory"] or 0),
            row["services"],
        )
        for row in rows
    }


def cohort_of(queue: Queue) -> list[Queue]:
    """The queue and the other queues of its cohort (just the queue without one), by id."""
    if not queue.cohort:
        return [queue]
    return list(Queue.objects.filter(cohort=queue.cohort).order_by("id"))


def queue_states(queues: list[Queue], *, exclude_service_id: int | None = None) -> dict[int, QueueState]:
    """The admission check's view of these queues: quotas per flavor and what is used."""
    ids = [q.id for q in queues]
    usage = usage_by_flavor(ids, exclude_service_id=exclude_service_id)
    quotas: dict[int, list[FlavorQuota]] = defaultdict(list)
    for quota in (
        FlavorQuota.objects.filter(queue_id__in=ids).select_related("flavor").order_by("position", "id")
    ):
        quotas[quota.queue_id].append(quota)
    states = {}
    for queue in queues:
        flavors = []
        for quota in quotas[queue.id]:
            used, services = usage.get((queue.id, quota.flavor_id), (Amounts(), 0))
            flavors.append(
                FlavorQuotaState(
                    flavor=quota.flavor.name,
                    node_labels=dict(quota.flavor.node_labels or {}),
                    tolerations=tuple(quota.flavor.pod_tolerations()),
                    nominal=Amounts(gpu=quota.gpus, cpu_milli=quota.cpu_milli, memory=quota.memory_bytes),
                    used=used,
                    services_using=services,
                    gpu_borrowing_limit=quota.gpu_borrowing_limit,
                    gpu_lending_limit=quota.gpu_lending_limit,
                )
            )
        states[queue.id] = QueueState(
            name=queue.name, cohort=queue.cohort, flavors=tuple(flavors), strict_fifo=queue.strict_fifo
        )
    return states


def team_state(team: Team | None, *, exclude_service_id: int | None = None) -> TeamState | None:
    if team is None:
        return None
    totals = (
        team.services.filter(phase__in=phases.ACTIVE)
        .exclude(id=exclude_service_id)
        .aggregate(
            gpus=Sum(F("gpu_count") * F("replicas"), filter=Q(phase__in=phases.HOLDING), default=0),
            services=Count("id"),
        )
    )
    return TeamState(
        name=team.name,
        max_gpus=team.max_gpus,
        max_services=team.max_services,
        gpus_used=totals["gpus"],
        services_used=totals["services"],
    )


def queued_ahead(queue_id: int, *, priority: int, created_at, exclude_service_id: int | None = None) -> int:
    """Queued services of the queue that go first: higher priority, or the same and older."""
    from services.models import InferenceService

    first = Q(priority_value__gt=priority) | Q(priority_value=priority, created_at__lt=created_at)
    return (
        InferenceService.objects.filter(queue_id=queue_id, phase=phases.QUEUED)
        .exclude(id=exclude_service_id)
        .alias(priority_value=_priority_value())
        .filter(first)
        .count()
    )


def _priority_value():
    from django.db.models.functions import Coalesce

    return Coalesce(F("priority_class__value"), 0)


def queue_workloads(queue: Queue) -> dict:
    """The queue's live services in admission order: admitted ones (with their flavor), then the
    waiting ones with their position and the reason they wait (three queries)."""
    from django.db.models.functions import Coalesce

    from services.models import InferenceService

    live = (
        InferenceService.objects.filter(queue=queue, phase__in=phases.ACTIVE)
        .select_related("flavor", "priority_class", "owner")
        .alias(priority_value=Coalesce("priority_class__value", 0))
        .order_by("-priority_value", "created_at", "id")
    )

    def row(service, position=None) -> dict:
        return {
            "id": service.id,
            "name": service.name,
            "owner": service.owner.username,
            "phase": service.phase,
            "flavor": service.flavor.name if service.flavor_id else None,
            "gpus": service.gpu_count * service.replicas,
            "priority_class": service.priority_class.name if service.priority_class_id else None,
            "position": position,
            "reason": service.reason,
            "message": service.message,
            "created_at": service.created_at.isoformat(),
        }

    services = list(live)
    admitted = [row(s) for s in services if s.phase != phases.QUEUED]
    waiting = [row(s, i) for i, s in enumerate((s for s in services if s.phase == phases.QUEUED), start=1)]
    return {"queue": queue.name, "admitted": admitted, "waiting": waiting}


def queue_namespaces(queue: Queue) -> list[str]:
    """Where the queue gets a LocalQueue: the services' namespace (every service is created
    there) and the namespace of each team that may use it (a team listing no queues may use
    every queue)."""
    teams = Team.objects.annotate(queue_count=Count("queues")).filter(Q(queues=queue) | Q(queue_count=0))
    namespaces = {settings.SERVICE_NAMESPACE}
    namespaces.update(team.effective_namespace for team in teams.distinct())
    return sorted(namespaces)


def queues_depending_on(*, flavor: ResourceFlavor) -> QuerySet[Queue]:
    """The queues whose Kueue objects include this flavor (it has a quota there)."""
    return Queue.objects.filter(quotas__flavor=flavor).distinct().order_by("id")


def queue_usage_series(queue: Queue, *, hours: int = 24, now=None) -> list[dict]:
    """The queue's samples of the last `hours`, per flavor in the queue's flavor order:
    [{"flavor": "h100", "points": [{"at", "gpus_used", "gpus_quota", ...}, ...]}] (one query)."""
    from django.utils import timezone

    from queues.models import QueueUsageSample

    since = (now or timezone.now()) - timedelta(hours=hours)
    order = {
        flavor_id: position
        for position, flavor_id in enumerate(
            queue.quotas.order_by("position", "id").values_list("flavor_id", flat=True)
        )
    }
    series: dict[int, dict] = {}
    rows = (
        QueueUsageSample.objects.filter(queue=queue, at__gte=since)
        .select_related("flavor")
        .order_by("at", "id")
    )
    for sample in rows:
        entry = series.setdefault(sample.flavor_id, {"flavor": sample.flavor.name, "points": []})
        entry["points"].append(
            {
                "at": sample.at,
                "gpus_used": sample.gpus_used,
                "gpus_quota": sample.gpus_quota,
                "cpu_used": sample.cpu_milli_used / 1000,
                "cpu_quota": sample.cpu_milli_quota / 1000,
                "memory_gib_used": round(sample.memory_used / 2**30, 1),
                "memory_gib_quota": round(sample.memory_quota / 2**30, 1),
                "services_running": sample.services_running,
                "services_queued": sample.services_queued,
            }
        )
    return [series[flavor_id] for flavor_id in sorted(series, key=lambda f: (order.get(f, len(order)), f))]

"""Reads of inference services, scoped to what a user may see."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from services import phases
from services.models import InferenceService, ServiceEvent


def services_visible_to(user: AbstractBaseUser) -> QuerySet[InferenceService]:
    rows = InferenceService.objects.select_related("queue", "dataset", "owner")
    return rows if user.is_staff else rows.filter(owner=user)


def service_list(
    *,
    user: AbstractBaseUser,
    phase: str = "",
    queue: str = "",
    runtime: str = "",
    search: str = "",
    include_deleted: bool = False,
) -> QuerySet[InferenceService]:
    rows = services_visible_to(user)
    if not include_deleted and phase != phases.DELETED:
        rows = rows.exclude(phase=phases.DELETED)
    if phase:
        rows = rows.filter(phase=phase)
    if queue:
        rows = rows.filter(queue__name=queue)
    if runtime:
        rows = rows.filter(runtime=runtime)
    if search:
        rows = rows.filter(name__icontains=search)
    return rows


def service_events(*, service: InferenceService, limit: int = 100) -> list[ServiceEvent]:
    return list(service.events.order_by("-created_at", "-id")[:limit])[::-1]


def service_pod_names(*, service: InferenceService) -> list[str]:
    """The pods last observed for the service (logs may only be read from these)."""
    return [pod["name"] for pod in service.observed.get("pods", [])]

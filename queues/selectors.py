from django.db.models import Count, F, Q, QuerySet, Sum

from queues.models import Queue
from services import phases


def queues_with_usage() -> QuerySet[Queue]:
    """Each queue with the GPUs and services its live services hold (one query)."""
    live = Q(services__phase__in=phases.ACTIVE)
    return Queue.objects.annotate(
        gpus_used=Sum(F("services__gpu_count") * F("services__replicas"), filter=live, default=0),
        services_live=Count("services", filter=live),
    ).order_by("name")

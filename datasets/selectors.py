from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from datasets.models import Dataset, PrewarmRun
from services.phases import DELETED


def latest_prewarm(dataset: Dataset) -> PrewarmRun | None:
    return dataset.prewarm_runs.order_by("-created_at", "-id").first()


def services_using(dataset: Dataset) -> QuerySet:
    """The services (not deleted) that use the dataset."""
    return dataset.services.exclude(phase=DELETED)


def datasets_for_list() -> QuerySet[Dataset]:
    """Every dataset with the size of its last complete copy (None if never copied) and how many
    services, not deleted, use it: one query."""
    last_copy = PrewarmRun.objects.filter(
        dataset=OuterRef("pk"), status=PrewarmRun.Status.SUCCEEDED
    ).order_by("-created_at", "-id")
    return Dataset.objects.annotate(
        copied_bytes=Subquery(last_copy.values("bytes_total")[:1]),
        copied_files=Subquery(last_copy.values("files_total")[:1]),
        live_services=Count("services", filter=~Q(services__phase=DELETED)),
    ).order_by("name")

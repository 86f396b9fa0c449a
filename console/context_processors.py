from django.conf import settings
from django.http import HttpRequest


def cluster(request: HttpRequest) -> dict:
    """Every page says which cluster it drives; the simulated one is labelled as such."""
    return {
        "cluster_backend": settings.CLUSTER_BACKEND,
        "cluster_simulated": settings.CLUSTER_BACKEND == "simulated",
    }

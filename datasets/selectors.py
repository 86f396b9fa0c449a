from datasets.models import Dataset, PrewarmRun


def latest_prewarm(dataset: Dataset) -> PrewarmRun | None:
    return dataset.prewarm_runs.order_by("-created_at", "-id").first()

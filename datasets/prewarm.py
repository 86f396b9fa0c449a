"""Prewarm orchestration: start a copier Job for a dataset, follow its progress, finish it.

`start_prewarm` runs in the worker (datasets.tasks.prewarm_dataset); `sync_prewarm` runs in
the watcher every second for live progress, and in repair_drift as a safety net. No
database transaction is held across a cluster call.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from datasets.actions import dataset_set_phase
from datasets.models import Dataset, PrewarmRun
from datasets.progress import parse_copier_log
from deploy.clusters import ClusterError, PermanentClusterError, get_cluster
from deploy.clusters.base import LABEL_MANAGED_BY, MANAGED_BY
from deploy.prewarm import LABEL_DATASET, PrewarmSpec, render_prewarm

log = logging.getLogger(__name__)
FULL_LOG_LINES = 1_000_000
PHASES_BEFORE_READY = {
    Dataset.Phase.PENDING,
    Dataset.Phase.PREWARMING,
    Dataset.Phase.FAILED,
    Dataset.Phase.READY,
}


def prewarm_spec(dataset: Dataset, *, job_name: str) -> PrewarmSpec:
    common = {
        "dataset": dataset.name,
        "namespace": settings.SERVICE_NAMESPACE,
        "job_name": job_name,
        "claim_name": dataset.cache_claim_name,
        "cache_size": dataset.cache_size or settings.PREWARM_CACHE_SIZE,
        "storage_class": dataset.storage_class or settings.PREWARM_STORAGE_CLASS,
        "image": settings.PREWARM_IMAGE,
        "cpu": settings.PREWARM_CPU,
        "memory": settings.PREWARM_MEMORY,
    }
    if dataset.kind == Dataset.Kind.S3:
        return PrewarmSpec(
            **common,
            source="s3",
            s3_url=f"s3://{dataset.s3_bucket}/{dataset.s3_prefix}".rstrip("/"),
            s3_endpoint=dataset.s3_endpoint,
            s3_region=dataset.s3_region,
            s3_path_style=dataset.s3_path_style,
        )
    if dataset.kind == Dataset.Kind.HUB:
        return PrewarmSpec(
            **common,
            source="hf",
            hub_repo=dataset.hub_repo,
            hub_revision=dataset.hub_revision or "main",
            hub_endpoint=dataset.hub_endpoint,
        )
    if dataset.kind == Dataset.Kind.MODELSCOPE:
        return PrewarmSpec(
            **common,
            source="modelscope",
            hub_repo=dataset.hub_repo,
            hub_revision=dataset.hub_revision,
            hub_endpoint=dataset.hub_endpoint,
        )
    return PrewarmSpec(**common, source="nfs", nfs_server=dataset.nfs_server, nfs_path=dataset.nfs_path)


def start_prewarm(dataset: Dataset) -> PrewarmRun | None:
    """Start a new copy (only what changed is copied), or mark an in-place dataset Ready."""
    if not dataset.prewarmed:
        _mark_ready(dataset, "No copy needed: the PVC or node path is mounted read-only as it is.")
        return None
    if dataset.prewarm_runs.filter(
        status__in=[PrewarmRun.Status.PENDING, PrewarmRun.Status.RUNNING]
    ).exists():
        return None  # one copy at a time; the running one picks up nothing new, so let it finish
    with transaction.atomic():
        run = PrewarmRun.objects.create(dataset=dataset, job_name="pending")
        run.job_name = f"prewarm-{dataset.name[:40]}-{run.id}"
        run.save(update_fields=["job_name"])
        dataset_set_phase(
            dataset_id=dataset.id,
            phase=Dataset.Phase.PREWARMING,
            message=f"Copying into PVC {dataset.cache_claim_name} (job {run.job_name}).",
            from_phases=PHASES_BEFORE_READY,
        )
    cluster = get_cluster()
    try:
        cluster.delete_labelled(settings.SERVICE_NAMESPACE, _labels(dataset.name), ("Job",))  # earlier runs
        cluster.apply(
            render_prewarm(prewarm_spec(dataset, job_name=run.job_name), credentials=dataset.credentials())
        )
    except PermanentClusterError as exc:
        _finish(run, failed=True, reason="ApplyFailed", message=f"The cluster refused the prewarm job: {exc}")
        return run
    PrewarmRun.objects.filter(id=run.id, status=PrewarmRun.Status.PENDING).update(
        status=PrewarmRun.Status.RUNNING, started_at=timezone.now()
    )
    return run


def delete_prewarm_objects(dataset_name: str) -> None:
    get_cluster().delete_labelled(
        settings.SERVICE_NAMESPACE, _labels(dataset_name), ("Job", "Secret", "PersistentVolumeClaim")
    )


def _labels(dataset_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_DATASET: dataset_name}


def sync_prewarm(run: PrewarmRun) -> None:
    """Read the Job and its pod log; record progress; finish the run when the Job is done."""
    if run.is_finished:
        return
    cluster = get_cluster()
    job = cluster.observe_job(settings.SERVICE_NAMESPACE, run.job_name)
    if not job.found:
        return
    text = ""
    if job.pod:
        try:
            text = cluster.pod_logs(
                settings.SERVICE_NAMESPACE, job.pod, tail_lines=FULL_LOG_LINES if job.finished else 400
            )
        except ClusterError as exc:
            log.info("no log yet for %s: %s", job.pod, exc)
    state = parse_copier_log(text)
    waiting = f"{job.waiting_reason}: {job.waiting_message}".strip(": ") if job.waiting_reason else ""
    if waiting and not state.bytes_total and _waited_too_long(run):
        # Never started (no storage class, a missing NFS export, an image that cannot be pulled):
        # nothing will change by itself, so say so instead of waiting forever.
        _finish(
            run,
            failed=True,
            reason=job.waiting_reason,
            message=f"The prewarm job did not start within {settings.PREWARM_START_DEADLINE_SECONDS:.0f} s: "
            f"{job.waiting_message or job.waiting_reason}",
        )
        return
    PrewarmRun.objects.filter(
        id=run.id, status__in=[PrewarmRun.Status.PENDING, PrewarmRun.Status.RUNNING]
    ).update(
        status=PrewarmRun.Status.RUNNING,
        files_total=state.files_total,
        files_done=state.files_done,
        files_skipped=state.files_skipped,
        bytes_total=state.bytes_total,
        bytes_done=state.bytes_done,
        rate_bytes_per_second=state.rate_bytes_per_second,
        eta_seconds=state.eta_seconds,
        message=waiting or run.message,
        log_tail=state.log_tail(),
    )
    if job.complete or (state.finished and not state.failed):
        _finish(run, failed=False, reason="", message="Copied.", files=state.files)
    elif job.failure_reason or state.failed:
        reason = state.reason or job.failure_reason
        message = state.message or job.failure_message or "The copier failed; see the log."
        _finish(run, failed=True, reason=reason, message=message)


def _waited_too_long(run: PrewarmRun) -> bool:
    started = run.started_at or run.created_at
    return (timezone.now() - started).total_seconds() > settings.PREWARM_START_DEADLINE_SECONDS


def sync_running_prewarms() -> None:
    for run in PrewarmRun.objects.select_related("dataset").filter(
        status__in=[PrewarmRun.Status.PENDING, PrewarmRun.Status.RUNNING]
    ):
        try:
            sync_prewarm(run)
        except ClusterError as exc:
            log.warning("prewarm %s: %s", run.job_name, exc)


def _finish(run: PrewarmRun, *, failed: bool, reason: str, message: str, files=None) -> None:
    status = PrewarmRun.Status.FAILED if failed else PrewarmRun.Status.SUCCEEDED
    with transaction.atomic():
        finished = PrewarmRun.objects.filter(
            id=run.id, status__in=[PrewarmRun.Status.PENDING, PrewarmRun.Status.RUNNING]
        ).update(status=status, reason=reason, message=message, finished_at=timezone.now())
        if not finished:
            return
        dataset = run.dataset
        if failed:
            dataset_set_phase(
                dataset_id=dataset.id,
                phase=Dataset.Phase.FAILED,
                message=f"{reason}: {message}",
                from_phases={Dataset.Phase.PREWARMING, Dataset.Phase.PENDING},
            )
            _fail_waiting_services(dataset, f"Dataset {dataset.name} failed to prewarm: {reason}: {message}")
        else:
            if files is not None:
                Dataset.objects.filter(id=dataset.id).update(files=[[p, s] for p, s in files])
            _mark_ready(dataset, f"Prewarmed into PVC {dataset.cache_claim_name}.")


def _mark_ready(dataset: Dataset, message: str) -> None:
    with transaction.atomic():
        changed = dataset_set_phase(
            dataset_id=dataset.id,
            phase=Dataset.Phase.READY,
            message=message,
            from_phases=PHASES_BEFORE_READY - {Dataset.Phase.READY},
        )
        if changed:
            _release_waiting_services(dataset)


def _release_waiting_services(dataset: Dataset) -> None:
    from deploy.tasks import reconcile_service
    from services import phases

    # Services that waited, and those that failed because an earlier prewarm failed.
    waiting = Q(phase=phases.PREWARMING) | Q(phase=phases.FAILED, reason="PrewarmFailed")
    for service_id in dataset.services.filter(waiting).values_list("id", flat=True):
        transaction.on_commit(lambda sid=service_id: reconcile_service.delay(sid))


def _fail_waiting_services(dataset: Dataset, message: str) -> None:
    from services import phases
    from services.actions import service_transition

    for service_id in dataset.services.filter(phase=phases.PREWARMING).values_list("id", flat=True):
        service_transition(
            service_id=service_id,
            to_phase=phases.FAILED,
            reason="PrewarmFailed",
            message=message,
            from_phases={phases.PREWARMING},
        )

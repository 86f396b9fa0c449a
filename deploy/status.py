"""Derive a service's phase and a reason a person can act on from what the cluster reports.

One pure function, `derive_status`, used by the watcher and the repair task alike. It never
guesses: every phase it returns is backed by something in the Observation.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy.observation import ContainerObservation, KueueWorkloadObservation, Observation, PodObservation

# Container waiting reasons that mean "this will not get better by waiting".
IMAGE_PULL_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
# Reasons of a service whose pods Kueue holds back: waiting, not stuck. Such a service is Queued
# with its objects applied, unlike one the console's own admission check holds before applying.
KUEUE_WAITING_REASONS = {"WaitingForQuota", "WaitingForAdmissionChecks", "Preempted", "Evicted"}


@dataclass(frozen=True)
class DerivedStatus:
    phase: str
    reason: str
    message: str
    ready_replicas: int = 0


def derive_status(obs: Observation, *, desired_replicas: int) -> DerivedStatus:
    """Map an observation of a service's objects to a phase, a reason and a message."""
    if not obs.found:
        if obs.anything_left:
            return DerivedStatus("Deploying", "ObjectsMissing", "The Deployment is missing; waiting for it.")
        return DerivedStatus("Deploying", "NotFound", "No objects in the cluster yet.")
    ready = obs.ready_replicas
    if desired_replicas == 0:
        if any(not p.terminating for p in obs.pods):
            return DerivedStatus("Stopped", "ScalingDown", "Stopping: waiting for pods to exit.", ready)
        return DerivedStatus("Stopped", "ScaledToZero", "Scaled to zero replicas.", 0)

    current = [p for p in obs.pods if not p.terminating]
    problem = _first_problem(current)
    if ready >= desired_replicas and obs.updated_replicas >= desired_replicas:
        return DerivedStatus("Running", "Ready", f"{ready}/{desired_replicas} replicas ready.", ready)
    held = _kueue_hold(current, obs.workloads)
    if held is not None:
        # Kueue gates the pod: the scheduler never saw it, so Kueue's verdict is the reason.
        reason, message = held
        if ready > 0:
            return DerivedStatus(
                "Degraded", reason, f"{ready}/{desired_replicas} replicas ready. {message}", ready
            )
        return DerivedStatus("Queued", reason, message, ready)
    if problem is not None:
        reason, message = problem
        if ready > 0:
            return DerivedStatus(
                "Degraded", reason, f"{ready}/{desired_replicas} replicas ready. {message}", ready
            )
        return DerivedStatus("Failed", reason, message, ready)
    progressing = obs.conditions.get("Progressing")
    if progressing and progressing[1] == "ProgressDeadlineExceeded":
        return DerivedStatus("Failed", "ProgressDeadlineExceeded", progressing[2], ready)
    if not current:
        return DerivedStatus("Deploying", "CreatingPods", "Waiting for pods to be created.", ready)
    return DerivedStatus("Starting", *_starting_reason(current, ready, desired_replicas), ready)


def _kueue_hold(
    pods: list[PodObservation], workloads: tuple[KueueWorkloadObservation, ...]
) -> tuple[str, str] | None:
    """The reason and message of the first not-running pod whose Kueue Workload holds it."""
    held = {w.pod: w for w in workloads if w.holds_pod}
    for pod in pods:
        workload = held.get(pod.name)
        if workload is None or pod.phase != "Pending" or pod.scheduled is True:
            continue
        return kueue_reason(workload)
    return None


def kueue_reason(workload: KueueWorkloadObservation) -> tuple[str, str]:
    """Kueue's verdict on a pod as the service's reason and message, in Kueue's own words."""
    where = f"queue {workload.queue}" if workload.queue else "its queue"
    said = f": {workload.message}" if workload.message else "."
    if workload.state == "Inadmissible":
        return "Inadmissible", f"Kueue cannot admit pod {workload.pod} to {where}{said}"
    if workload.state == "QuotaReserved":
        cluster_queue = workload.cluster_queue or workload.queue
        return (
            "WaitingForAdmissionChecks",
            f"Kueue reserved quota in ClusterQueue {cluster_queue} for pod {workload.pod}; "
            f"waiting for its admission checks{said}",
        )
    if workload.state == "Evicted":
        reason = "Preempted" if workload.reason == "Preempted" else "Evicted"
        detail = f" ({workload.reason})" if workload.reason and reason == "Evicted" else ""
        return reason, f"Kueue evicted pod {workload.pod}{detail}; it waits in {where} again{said}"
    if workload.state == "Deactivated":
        return "Deactivated", f"Kueue deactivated the workload of pod {workload.pod}{said}"
    if workload.message:
        return "WaitingForQuota", f"Pod {workload.pod} waits in Kueue {where}: {workload.message}"
    return "WaitingForQuota", f"Pod {workload.pod} waits in Kueue {where} (not considered yet)."


def _first_problem(pods: list[PodObservation]) -> tuple[str, str] | None:
    """The first failure a person has to fix, with the cluster's own words."""
    for pod in pods:
        if pod.scheduled is False and pod.scheduling_reason == "Unschedulable":
            return "Unschedulable", f"No node can run pod {pod.name}: {pod.scheduling_message}".strip()
        for c in pod.containers:
            found = _container_problem(pod, c)
            if found:
                return found
        if pod.phase == "Failed":
            return "PodFailed", f"Pod {pod.name} failed."
    return None


def _container_problem(pod: PodObservation, c: ContainerObservation) -> tuple[str, str] | None:
    if c.state == "waiting" and c.reason in IMAGE_PULL_REASONS:
        detail = f": {c.message}" if c.message else ""
        return "ImagePullBackOff", f"Cannot pull the image of container {c.name} in {pod.name}{detail}"
    if c.last_terminated_reason == "OOMKilled" or (c.state == "terminated" and c.reason == "OOMKilled"):
        return (
            "OOMKilled",
            f"Container {c.name} in {pod.name} ran out of memory (exit 137, restarted {c.restart_count}x): "
            "raise the memory limit or lower --max-model-len / the batch size.",
        )
    if c.state == "waiting" and c.reason == "CrashLoopBackOff":
        code = f" with exit code {c.last_exit_code}" if c.last_exit_code is not None else ""
        return (
            "CrashLoopBackOff",
            f"Container {c.name} in {pod.name} keeps exiting{code} (restarted {c.restart_count}x); "
            "see its previous log.",
        )
    if c.state == "waiting" and c.reason in CONFIG_REASONS:
        return c.reason, f"Container {c.name} in {pod.name} cannot start: {c.message or c.reason}"
    return None


def _starting_reason(pods: list[PodObservation], ready: int, desired: int) -> tuple[str, str]:
    counts = f"{ready}/{desired} replicas ready"
    if any(p.scheduled is not True for p in pods):
        return "Scheduling", f"{counts}; waiting for the scheduler to place pods."
    if any(c.state == "waiting" for p in pods for c in p.containers):
        return "ContainerCreating", f"{counts}; pulling the image and creating containers."
    return "LoadingModel", f"{counts}; containers are running and loading the model."

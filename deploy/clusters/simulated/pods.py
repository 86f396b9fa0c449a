"""A simulated pod's life (pure): its status, events and log at a moment.

Pod status is never stored: like the harness's kubelet simulator (deploy/testenv/kubelet_sim.py)
it is a function of how long ago the pod was scheduled and of its fault settings, so the web
server, the worker and the watcher all compute the same answer from the same rows. A healthy
pod pulls its image, then runs unready while it loads the model, then is ready; a failing one
crash-loops or backs off pulling on kubelet's schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from deploy.clusters.simulated.faults import PULL_CYCLE, Faults, pull_error
from deploy.models import SimulatedPod
from deploy.observation import ContainerObservation, EventObservation

BACKOFF_STEPS = (10, 20, 40, 80, 160, 300)  # kubelet's restart / image pull back-off, capped at 300 s
PULL_ERROR_SECONDS = 3  # built-in pull failures: ErrImagePull this long per attempt


@dataclass(frozen=True)
class PodState:
    """What a kubelet would report for a pod at one moment."""

    phase: str
    ready: bool
    containers: tuple[ContainerObservation, ...] = ()
    running_since: float | None = None  # seconds after scheduling the containers started; None = not yet


def restarts_after(elapsed: float) -> tuple[int, int, float]:
    """(restart count, current back-off, seconds to the last crash) of a container that has
    crash-looped for `elapsed` seconds, as the harness counts it: it crashes 1 s after each
    start and waits 10, 20, 40 ... 300 s before the next start."""
    t = 1.0
    for count, backoff in enumerate(BACKOFF_STEPS):
        if elapsed < t + backoff:
            return max(1, count), backoff, min(t, elapsed)
        t += backoff + 1
    # From here the back-off stays at its cap: one crash every cap + 1 s (no loop over days).
    cap = BACKOFF_STEPS[-1]
    extra = max(0, math.floor((elapsed - t - cap) / (cap + 1)) + 1)
    return len(BACKOFF_STEPS) + extra, cap, t + extra * (cap + 1)


def pull_attempts_after(elapsed: float) -> tuple[str, int, float]:
    """(reason, pull attempts, seconds to the last attempt) of a built-in pull failure:
    ErrImagePull for 3 s at each attempt, ImagePullBackOff in between, attempts on the
    10, 20 ... 300 s back-off."""
    t = 0.0
    for attempt, backoff in enumerate(BACKOFF_STEPS, start=1):
        if elapsed < t + PULL_ERROR_SECONDS:
            return "ErrImagePull", attempt, t
        if elapsed < t + PULL_ERROR_SECONDS + backoff:
            return "ImagePullBackOff", attempt, t
        t += PULL_ERROR_SECONDS + backoff
    cycle = PULL_ERROR_SECONDS + BACKOFF_STEPS[-1]
    extra = max(0, math.floor((elapsed - t) / cycle))
    t += extra * cycle
    reason = "ErrImagePull" if elapsed < t + PULL_ERROR_SECONDS else "ImagePullBackOff"
    return reason, len(BACKOFF_STEPS) + 1 + extra, t


def _backoff_text(seconds: int) -> str:
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


def _failed_container(
    container: Mapping[str, Any], fail: str, run: float, faults: Faults, restart_policy: str, pod_ref: str
) -> ContainerObservation:
    name, image = container["name"], container["image"]
    if fail == PULL_CYCLE:
        fail = pull_attempts_after(run)[0]
    if fail in ("ImagePullBackOff", "ErrImagePull"):
        message = f'Back-off pulling image "{image}"' if fail == "ImagePullBackOff" else pull_error(image)
        return ContainerObservation(name=name, state="waiting", reason=fail, message=message)
    if fail in ("CrashLoopBackOff", "OOMKilled", "Error"):
        reason = "OOMKilled" if fail == "OOMKilled" else "Error"
        code = 137 if fail == "OOMKilled" else faults.exit_code
        if restart_policy == "Never":  # as in the harness; a Deployment's pods always restart
            # The container stays terminated; its exit code is the only one there is.
            return ContainerObservation(name=name, state="terminated", reason=reason, last_exit_code=code)
        count, backoff, _ = restarts_after(run)
        return ContainerObservation(
            name=name,
            state="waiting",
            reason="CrashLoopBackOff",
            message=f"back-off {_backoff_text(backoff)} restarting failed container={name} pod={pod_ref}",
            restart_count=count,
            last_terminated_reason=reason,
            last_exit_code=code,
        )
    message = (
        "simulated: couldn't find key or configmap/secret for container"
        if fail == "CreateContainerConfigError"
        else f"simulated {fail}"
    )
    return ContainerObservation(name=name, state="waiting", reason=fail, message=message)


def compute_pod_state(
    elapsed: float | None,
    containers: list[Mapping[str, Any]],
    faults: Faults,
    *,
    restart_policy: str,
    pull_seconds: float,
    load_seconds: float,
    pod_ref: str,
) -> PodState:
    """The pod's status `elapsed` seconds after it was scheduled (None: not scheduled).

    Healthy: ContainerCreating (pulling) -> Running, not ready (loading the model) -> Ready.
    """
    if elapsed is None:
        return PodState(phase="Pending", ready=False)
    creating = faults.creating_seconds(pull_seconds)
    run = elapsed - creating
    if run < 0:
        waiting = tuple(
            ContainerObservation(
                name=c["name"],
                state="waiting",
                reason="ContainerCreating",
                message=f'Pulling image "{c["image"]}"',
            )
            for c in containers
        )
        return PodState(phase="Pending", ready=False, containers=waiting)

    statuses = []
    for container in containers:
        fail = faults.fails.get(container["name"])
        if fail:
            statuses.append(_failed_container(container, fail, run, faults, restart_policy, pod_ref))
        else:
            ready = run >= faults.loading_seconds(load_seconds)
            statuses.append(
                ContainerObservation(
                    name=container["name"],
                    ready=ready,
                    state="running",
                    message="" if ready else "loading model",
                )
            )
    states = [c.state for c in statuses]
    if all(s == "terminated" for s in states):
        phase = "Failed"  # only failures terminate a long-running server here
    elif "running" in states or any(c.last_terminated_reason for c in statuses):
        phase = "Running"
    else:
        phase = "Pending"  # e.g. every container waiting on an image pull
    ready = phase == "Running" and all(c.ready for c in statuses)
    return PodState(phase=phase, ready=ready, containers=tuple(statuses), running_since=creating)


# --- events and logs ----------------------------------------------------------------------


def pod_events(
    pod: SimulatedPod,
    state: PodState,
    faults: Faults,
    *,
    scheduling_message: str,
    now: datetime,
    load_seconds: float,
) -> list[EventObservation]:
    """The scheduler's and kubelet's events for a pod so far, as `kubectl describe pod` lists them."""

    def event(kind: str, reason: str, message: str, at: datetime, count: int = 1) -> EventObservation:
        return EventObservation(
            type=kind,
            reason=reason,
            message=message,
            object_kind="Pod",
            object_name=pod.name,
            count=count,
            last_seen=at,
        )

    if not pod.node or pod.scheduled_at is None:
        if not scheduling_message:
            return []
        return [event("Warning", "FailedScheduling", scheduling_message, pod.created_at)]
    start = pod.scheduled_at
    events = [
        event("Normal", "Scheduled", f"Successfully assigned {pod.namespace}/{pod.name} to {pod.node}", start)
    ]
    if state.running_since is None:  # still pulling
        return events + [
            event("Normal", "Pulling", f'Pulling image "{c["image"]}"', start) for c in pod.containers
        ]
    started_at = start + timedelta(seconds=min(state.running_since, 10**8))
    run = max(0.0, (now - started_at).total_seconds())

    def after_start(seconds: float) -> datetime:
        return started_at + timedelta(seconds=seconds)

    for spec, status in zip(pod.containers, state.containers, strict=False):
        name, image = spec["name"], spec["image"]
        if status.reason in ("ErrImagePull", "ImagePullBackOff"):
            attempts, last = 1, 0.0
            cycle = faults.fails.get(name) == PULL_CYCLE
            if cycle:
                _, attempts, last = pull_attempts_after(run)
            events += [
                event(
                    "Normal",
                    "Pulling",
                    f'Pulling image "{image}"',
                    after_start(last) if last else start,
                    attempts,
                ),
                event(
                    "Warning",
                    "Failed",
                    f'Failed to pull image "{image}": {pull_error(image)}',
                    after_start(last),
                    attempts,
                ),
                event("Warning", "Failed", "Error: ErrImagePull", after_start(last), attempts),
            ]
            if status.reason == "ImagePullBackOff" or attempts > 1:
                in_backoff = cycle and status.reason == "ImagePullBackOff"
                backoff_at = after_start(last + PULL_ERROR_SECONDS if in_backoff else last)
                events += [
                    event("Normal", "BackOff", f'Back-off pulling image "{image}"', backoff_at, attempts),
                    event("Warning", "Failed", "Error: ImagePullBackOff", backoff_at, attempts),
                ]
            continue
        events += [
            event("Normal", "Pulling", f'Pulling image "{image}"', start),
            event(
                "Normal",
                "Pulled",
                f'Successfully pulled image "{image}" in {state.running_since:g}s',
                started_at,
            ),
        ]
        if status.state == "waiting" and status.reason != "CrashLoopBackOff":
            events.append(event("Warning", "Failed", f"Error: {status.reason}", started_at))
            continue
        last_start = started_at
        if status.reason == "CrashLoopBackOff":
            last_crash = restarts_after(run)[2]
            last_start = after_start(max(0.0, last_crash - 1))  # it crashes 1 s after starting
        runs = status.restart_count + 1
        events += [
            event("Normal", "Created", f"Created container {name}", last_start, runs),
            event("Normal", "Started", f"Started container {name}", last_start, runs),
        ]
        if status.reason == "CrashLoopBackOff":
            message = f"Back-off restarting failed container {name} in pod {pod.name}_{pod.namespace}"
            events.append(event("Warning", "BackOff", message, after_start(last_crash), status.restart_count))
        elif status.state == "running" and faults.loading_seconds(load_seconds) > 0:
            # The readiness probe fails while the model loads; the event stays in the history.
            message = "Readiness probe failed: the model is still loading (simulated)"
            events.append(event("Warning", "Unhealthy", message, started_at))
    return events


LOG_TAG = "[simulated cluster]"


def _exit_lines(spec: Mapping[str, Any], model_dir: str, reason: str, code: int | None) -> list[str]:
    """The log of a container run that the simulation made fail: a fake traceback."""
    return [
        f"{LOG_TAG} starting {spec['name']} from image {spec['image']}",
        f"{LOG_TAG} loading model from {model_dir} ...",
        "Traceback (most recent call last):",
        '  File "/simulated/server.py", line 42, in <module>',
        f'    engine = load_model("{model_dir}")',
        '  File "/simulated/server.py", line 17, in load_model',
        "    raise SimulatedFailure(reason)",
        f"SimulatedFailure: the simulated cluster made this container fail ({reason}, exit code {code})",
        f"{LOG_TAG} container {spec['name']} terminated: {reason} (exit code {code})",
    ]


def pod_log_lines(pod: SimulatedPod, state: PodState, faults: Faults, *, previous: bool) -> list[str]:
    """Clearly fake log lines of the pod's first container, according to its state."""
    if not pod.containers:
        return []
    spec = pod.containers[0]
    status = state.containers[0] if state.containers else None
    image, model_dir = spec["image"], spec.get("model_dir") or "/models"
    if status is None:
        return [] if previous else [f"{LOG_TAG} pod {pod.name} is not scheduled on a node yet"]
    if previous:
        if not status.last_terminated_reason:
            return []  # no earlier run of this container
        return _exit_lines(spec, model_dir, status.last_terminated_reason, status.last_exit_code)

    lines = [f"{LOG_TAG} pulling image {image} ..."]
    if spec["name"] in faults.fails and faults.note:
        lines.insert(0, f"{LOG_TAG} failure injected by {faults.note}")
    if status.reason == "ContainerCreating":
        return lines
    if status.reason in ("ErrImagePull", "ImagePullBackOff"):
        return [*lines, f"{LOG_TAG} failed to pull image {image}: {pull_error(image)}"]
    lines.append(f"{LOG_TAG} pulled image {image}")
    if status.state == "terminated":
        return lines + _exit_lines(spec, model_dir, status.reason, status.last_exit_code)
    if status.reason == "CrashLoopBackOff":
        return [
            *lines,
            f"{LOG_TAG} container {spec['name']} is in CrashLoopBackOff after {status.restart_count} "
            "restart(s); its previous log shows why it exited",
        ]
    if status.state == "waiting":
        return [*lines, f"{LOG_TAG} container {spec['name']} cannot start: {status.reason}: {status.message}"]
    lines += [f"{LOG_TAG} starting {spec['name']}", f"{LOG_TAG} loading model from {model_dir} ..."]
    if status.ready:
        lines.append(f"{LOG_TAG} ready on :{spec.get('port') or 8000}")
    return lines

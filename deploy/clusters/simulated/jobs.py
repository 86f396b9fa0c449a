"""Jobs on the simulated cluster: the Job controller, and a kubelet that really runs Job pods.

A Deployment's pods are computed from the clock (pods.py); a Job pod runs. Its container's
command starts as a local process (jobrunner.py), so a prewarm copies real files with real
progress in the embedded default. How a pod's world maps onto this machine:

- a PersistentVolumeClaim is a folder, <state>/volumes/<namespace>/<claim>, made when the claim
  is applied and removed with it (a provisioner with reclaim policy Delete);
- an NFS volume is the exported path itself (this machine is the NFS server), a hostPath too;
- a mount path in the container's args or env (`--dest=/cache`) is rewritten to that folder;
- `python` is this interpreter and the image is this checkout;
- env values from Secrets are decrypted from the Secret rows (SimulatedObject.secret_data).

The process's output is the pod log, its exit code the container's. The Job controller retries
a failed pod up to spec.backoffLimit times (6 by default), then fails the Job.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings

from console.crypto import decrypt_json
from deploy.clusters.simulated.deployments import (
    NAME_ALPHABET,
    Obj,
    container_resources,
    invalid,
    scheduling_of,
)
from deploy.models import SimulatedObject, SimulatedPod
from deploy.observation import JobObservation

JOBRUNNER = Path(__file__).with_name("jobrunner.py")
DEFAULT_BACKOFF_LIMIT = 6
KILL_GRACE_SECONDS = 10.0  # as terminationGracePeriodSeconds would allow, shortened


@dataclass(frozen=True)
class JobTemplate:
    labels: dict[str, str]
    requests: dict[str, float]
    containers: list[Obj]
    scheduling: dict
    restart_policy: str
    backoff_limit: int


@dataclass(frozen=True)
class JobPodStatus:
    phase: str  # Pending | Running | Succeeded | Failed
    reason: str = ""  # ContainerCreating, FailedMount, Error, Completed
    message: str = ""
    exit_code: int | None = None


class StateDir:
    """Where the simulated cluster keeps volumes and the folders of Job pod processes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def claim(self, namespace: str, claim: str) -> Path:
        return self.root / "volumes" / namespace / claim

    def pod(self, namespace: str, pod: str) -> Path:
        return self.root / "pods" / namespace / pod


# --- the API server's side -------------------------------------------------------------------


def parse_job(body: Obj) -> JobTemplate:
    """Check a batch/v1 Job as the API server would and extract its pod template."""
    name = body["metadata"]["name"]
    spec = body.get("spec") or {}
    template = spec.get("template") or {}
    pod_spec = template.get("spec") or {}
    restart_policy = pod_spec.get("restartPolicy") or ""
    if restart_policy not in {"Never", "OnFailure"}:
        raise invalid(
            "Job",
            name,
            f'spec.template.spec.restartPolicy: Unsupported value: "{restart_policy}": '
            'supported values: "OnFailure", "Never"',
        )
    containers = pod_spec.get("containers") or []
    if not containers:
        raise invalid("Job", name, "spec.template.spec.containers: Required value")
    requests, _ = container_resources("Job", name, containers)
    labels = {str(k): str(v) for k, v in ((template.get("metadata") or {}).get("labels") or {}).items()}
    return JobTemplate(
        labels={**labels, "job-name": name},
        requests=requests,
        containers=containers,
        scheduling=scheduling_of(pod_spec),
        restart_policy=restart_policy,
        backoff_limit=int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)),
    )


def create_job_pod(namespace: str, job: str, template: JobTemplate, now: datetime) -> SimulatedPod:
    taken = set(SimulatedPod.objects.filter(namespace=namespace, job=job).values_list("name", flat=True))
    name = f"{job}-{''.join(random.choices(NAME_ALPHABET, k=5))}"
    while name in taken:
        name = f"{job}-{''.join(random.choices(NAME_ALPHABET, k=5))}"
    return SimulatedPod.objects.create(
        namespace=namespace,
        name=name,
        job=job,
        labels=template.labels,
        template_hash="",
        requests=template.requests,
        containers=[{"name": c["name"], "image": c["image"]} for c in template.containers],
        scheduling=template.scheduling,
        restart_policy=template.restart_policy,
        created_at=now,
    )


# --- the Job controller ------------------------------------------------------------------------


def observe_job(
    job: SimulatedObject, state: StateDir, now: datetime, messages: dict[int, str]
) -> JobObservation:
    """The Job's status from its pods; a failed pod is replaced while the backoff limit allows."""
    template = parse_job(job.body)
    pods = list(
        SimulatedPod.objects.filter(namespace=job.namespace, job=job.name).order_by("created_at", "id")
    )
    statuses = [(pod, pod_status(pod, state, messages.get(pod.pk, ""))) for pod in pods]
    succeeded = sum(1 for _, s in statuses if s.phase == "Succeeded")
    failed = sum(1 for _, s in statuses if s.phase == "Failed")
    active = len(statuses) - succeeded - failed
    failure_reason = failure_message = ""
    if not succeeded and not active:
        if failed > template.backoff_limit:
            failure_reason, failure_message = (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        else:
            pod = create_job_pod(job.namespace, job.name, template, now)
            statuses.append((pod, JobPodStatus(phase="Pending", reason="ContainerCreating")))
            active = 1
    newest, status = statuses[-1] if statuses else (None, None)
    waiting = status is not None and status.phase == "Pending"
    return JobObservation(
        found=True,
        active=active,
        succeeded=succeeded,
        failed=failed,
        complete=succeeded > 0,
        failure_reason=failure_reason,
        failure_message=failure_message,
        pod=newest.name if newest else "",
        pod_phase=status.phase if status else "",
        waiting_reason=status.reason if waiting else "",
        waiting_message=status.message if waiting else "",
    )


# --- the kubelet -------------------------------------------------------------------------------


def pod_status(pod: SimulatedPod, state: StateDir, scheduling_message: str = "") -> JobPodStatus:
    if not pod.node:
        if scheduling_message:
            return JobPodStatus(phase="Pending", reason="Unschedulable", message=scheduling_message)
        return JobPodStatus(phase="Pending")
    folder = state.pod(pod.namespace, pod.name)
    exit_file = folder / "exit"
    if exit_file.exists():
        code = int(exit_file.read_text() or 1)
        if code == 0:
            return JobPodStatus(phase="Succeeded", reason="Completed", exit_code=0)
        return JobPodStatus(phase="Failed", reason="Error", message=f"exit code {code}", exit_code=code)
    if pod.started_at is None:
        waiting = folder / "waiting"
        if waiting.exists():
            reason, _, message = waiting.read_text().partition("\n")
            return JobPodStatus(phase="Pending", reason=reason, message=message)
        return JobPodStatus(phase="Pending", reason="ContainerCreating")
    pid_file = folder / "pid"
    if not pid_file.exists():
        return JobPodStatus(phase="Pending", reason="ContainerCreating")
    if alive(int(pid_file.read_text())):
        return JobPodStatus(phase="Running")
    if exit_file.exists():  # it ended between the two looks
        return pod_status(pod, state, scheduling_message)
    return JobPodStatus(phase="Failed", reason="Error", message="The container was killed.", exit_code=137)


def start_bound_pods(state: StateDir, now: datetime) -> None:
    """Start the process of every Job pod bound to a node and not started yet."""
    for pod in SimulatedPod.objects.exclude(job="").exclude(node="").filter(started_at=None):
        folder = state.pod(pod.namespace, pod.name)
        if (folder / "exit").exists():
            continue
        # One process starts a pod: whoever flips started_at.
        if not SimulatedPod.objects.filter(pk=pod.pk, started_at=None).update(started_at=now):
            continue
        try:
            _launch(pod, folder, state)
        except _NotStartable as exc:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "waiting").write_text(f"{exc.reason}\n{exc.message}")
            # Not started after all: the next look tries again, as kubelet retries mounts.
            SimulatedPod.objects.filter(pk=pod.pk).update(started_at=None)


def read_log(pod: SimulatedPod, state: StateDir, tail_lines: int | None) -> str:
    path = state.pod(pod.namespace, pod.name) / "log"
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    if tail_lines is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-tail_lines:]) if tail_lines > 0 else ""


def stop_pods(pods: list[SimulatedPod], state: StateDir) -> None:
    """Stop the pods' processes (SIGTERM, then SIGKILL after a grace period) and remove their folders."""
    running = []
    for pod in pods:
        pid_file = state.pod(pod.namespace, pod.name) / "pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            if alive(pid) and signal_group(pid, signal.SIGTERM):
                running.append(pid)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while running and time.monotonic() < deadline:
        running = [pid for pid in running if alive(pid)]
        if running:
            time.sleep(0.05)
    for pid in running:
        signal_group(pid, signal.SIGKILL)
    for pod in pods:
        shutil.rmtree(state.pod(pod.namespace, pod.name), ignore_errors=True)


class _NotStartable(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def _launch(pod: SimulatedPod, folder: Path, state: StateDir) -> None:
    job = SimulatedObject.objects.filter(kind="Job", namespace=pod.namespace, name=pod.job).first()
    if job is None:
        raise _NotStartable("ContainerCreating", f'job "{pod.job}" not found')
    pod_spec = job.body["spec"]["template"]["spec"]
    mounts = _volume_folders(pod.namespace, pod_spec.get("volumes") or [], state)
    container = pod_spec["containers"][0]
    paths = {}
    for mount in container.get("volumeMounts") or []:
        if mount.get("name") not in mounts:
            raise _NotStartable("CreateContainerConfigError", f'volume "{mount.get("name")}" not found')
        paths[mount["mountPath"].rstrip("/")] = str(mounts[mount["name"]])
    command = [
        _map_paths(str(part), paths)
        for part in (container.get("command") or []) + (container.get("args") or [])
    ]
    if not command:
        raise _NotStartable(
            "CreateContainerError", "the simulated kubelet runs only containers with a command"
        )
    if command[0] in {"python", "python3"}:
        command[0] = sys.executable
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(settings.BASE_DIR),
        "PYTHONUNBUFFERED": "1",
        # No instance metadata to ask on this machine; boto3 must not try 169.254.169.254.
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.update(_container_env(pod.namespace, container, paths))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "waiting").unlink(missing_ok=True)
    # Run by path, not with -m: importing this package would import Django first.
    launcher = subprocess.run(
        [sys.executable, str(JOBRUNNER), str(folder), "--", *command],
        env=env,
        cwd=settings.BASE_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
    )
    if launcher.returncode != 0:
        raise _NotStartable(
            "RunContainerError", launcher.stderr.strip()[-500:] or "the runner failed to start"
        )


def _volume_folders(namespace: str, volumes: list[Obj], state: StateDir) -> dict[str, Path]:
    folders = {}
    for volume in volumes:
        name = volume.get("name", "")
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"].get("claimName", "")
            if not SimulatedObject.objects.filter(
                kind="PersistentVolumeClaim", namespace=namespace, name=claim
            ).exists():
                raise _NotStartable("Unschedulable", f'persistentvolumeclaim "{claim}" not found')
            folders[name] = state.claim(namespace, claim)
        elif "nfs" in volume or "hostPath" in volume:
            source = volume.get("nfs") or volume.get("hostPath") or {}
            path = Path(source.get("path", ""))
            if not path.is_dir():
                raise _NotStartable(
                    "FailedMount",
                    f'MountVolume.SetUp failed for volume "{name}": mount failed: '
                    f"{path}: No such file or directory",
                )
            folders[name] = path
        elif "emptyDir" in volume:
            folders[name] = state.root / "emptydir" / namespace / name
            folders[name].mkdir(parents=True, exist_ok=True)
    return folders


def _map_paths(value: str, paths: dict[str, str]) -> str:
    """`--dest=/cache/x` -> `--dest=<folder>/x` for a volume mounted at /cache."""
    flag, eq, rest = value.partition("=")
    target = rest if eq else value
    for mount, folder in sorted(paths.items(), key=lambda item: -len(item[0])):
        if target == mount or target.startswith(mount + "/"):
            target = folder + target[len(mount) :]
            break
    return f"{flag}={target}" if eq else target


def _container_env(namespace: str, container: Obj, paths: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef") or {}
        if ref:
            env.update(_secret_values(namespace, ref.get("name", "")))
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = _map_paths(str(item["value"]), paths)
        elif ref := (item.get("valueFrom") or {}).get("secretKeyRef"):
            values = _secret_values(namespace, ref.get("name", ""))
            if ref.get("key") not in values:
                raise _NotStartable(
                    "CreateContainerConfigError",
                    f"couldn't find key {ref.get('key')} in Secret {namespace}/{ref.get('name')}",
                )
            env[item["name"]] = values[ref["key"]]
    return env


def _secret_values(namespace: str, name: str) -> dict[str, str]:
    row = SimulatedObject.objects.filter(kind="Secret", namespace=namespace, name=name).first()
    if row is None:
        raise _NotStartable("CreateContainerConfigError", f'secret "{name}" not found')
    return decrypt_json(row.secret_data)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by whoever adopted it) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def signal_group(pid: int, sig: int) -> bool:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True

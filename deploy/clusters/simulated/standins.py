"""The stand-in servers behind Running pods of the simulated cluster: start, find and stop them.

Every ready pod of a simulated Deployment is backed by one stand-in process (standin.py) on
127.0.0.1, started detached through jobrunner.py like a Job pod, so it outlives the process
that started it and survives console restarts. Its folder,
<state>/standins/<namespace>/<service>/<pod>, holds `pid` (the process group), `url` (written
by the stand-in once it listens) and `log`. The adapter calls `sync_service` with the pods
that should be served whenever it looks at a service, and `sync_all` from the watcher's loop:
stand-ins of pods that went away (deleted, scaled to 0, failing) are stopped, missing ones
started. A file lock makes that one process at a time, so two processes never start two
stand-ins for one pod.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploy.clusters.simulated.jobs import JOBRUNNER, StateDir, alive, signal_group

log = logging.getLogger(__package__)

STANDIN = Path(__file__).with_name("standin.py")
START_DEADLINE_SECONDS = 15.0
STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Wanted:
    """A pod that should be served, and how."""

    pod: str
    runtime: str  # vllm | triton
    models: tuple[str, ...]


def root(state: StateDir) -> Path:
    return state.root / "standins"


def service_folder(state: StateDir, namespace: str, service: str) -> Path:
    return root(state) / namespace / service


@contextmanager
def _locked(state: StateDir) -> Iterator[None]:
    root(state).mkdir(parents=True, exist_ok=True)
    with open(root(state) / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _running_url(folder: Path) -> str | None:
    """The stand-in's URL when its process is alive and listening."""
    try:
        pid = int((folder / "pid").read_text())
        url = (folder / "url").read_text().strip()
    except (FileNotFoundError, ValueError):
        return None
    return url if url and alive(pid) and not (folder / "exit").exists() else None


def sync_service(state: StateDir, namespace: str, service: str, wanted: list[Wanted]) -> dict[str, str]:
    """Make the service's stand-ins match `wanted`; return {pod: URL} of the running ones."""
    with _locked(state):
        return _sync_locked(state, namespace, service, wanted)


def sync_all(state: StateDir, wanted: Mapping[tuple[str, str], list[Wanted]]) -> None:
    """The same for every service: also stops stand-ins of services that are gone."""
    with _locked(state):
        present = {
            (ns.name, svc.name)
            for ns in root(state).iterdir()
            if ns.is_dir()
            for svc in ns.iterdir()
            if svc.is_dir()
        }
        for namespace, service in sorted(present | set(wanted)):
            _sync_locked(state, namespace, service, wanted.get((namespace, service), []))


def stop_service(state: StateDir, namespace: str, service: str) -> None:
    """Stop every stand-in of the service (it was deleted)."""
    with _locked(state):
        _sync_locked(state, namespace, service, [])


def _sync_locked(state: StateDir, namespace: str, service: str, wanted: list[Wanted]) -> dict[str, str]:
    folder = service_folder(state, namespace, service)
    wanted_by_pod = {w.pod: w for w in wanted}
    existing = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    urls: dict[str, str] = {}
    for pod_folder in existing:
        url = _running_url(pod_folder)
        if pod_folder.name in wanted_by_pod and url:
            urls[pod_folder.name] = url
        else:
            _stop(pod_folder)
    for pod, item in sorted(wanted_by_pod.items()):
        if pod not in urls and (url := _start(folder / pod, item)):
            urls[pod] = url
    if not wanted and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
    return urls


def _start(folder: Path, item: Wanted) -> str | None:
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(STANDIN), "--runtime", item.runtime, "--url-file", str(folder / "url")]
    for model in item.models:
        command += ["--model", model]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    try:
        launcher = subprocess.run(
            [sys.executable, str(JOBRUNNER), str(folder), "--", *command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        launcher = subprocess.CompletedProcess([], 1, "", str(exc))
    if launcher.returncode != 0:
        log.warning("stand-in for pod %s did not start: %s", folder.name, launcher.stderr.strip()[-500:])
        _stop(folder)
        return None
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if url := _running_url(folder):
            log.info("stand-in for pod %s listens on %s", folder.name, url)
            return url
        if (folder / "exit").exists():
            break
        time.sleep(0.02)
    tail = (folder / "log").read_text(errors="replace")[-500:] if (folder / "log").exists() else ""
    log.warning("stand-in for pod %s did not come up: %s", folder.name, tail.strip())
    _stop(folder)
    return None


def _stop(folder: Path) -> None:
    """SIGTERM the stand-in's process group, SIGKILL it after a grace period, remove its folder."""
    try:
        pid = int((folder / "pid").read_text())
    except (FileNotFoundError, ValueError):
        pid = 0
    if pid and alive(pid) and signal_group(pid, signal.SIGTERM):
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(pid):
            signal_group(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)
    log.info("stand-in for pod %s stopped", folder.name)

"""`python deploy/clusters/simulated/jobrunner.py DIR -- COMMAND...`: the simulated kubelet's
container runtime for Job pods.

It detaches (double fork and a new session, so it outlives the web server, worker or watcher
that started it and is never left a zombie), records its pid in DIR/pid, runs COMMAND with its
output in DIR/log, and writes the exit code to DIR/exit when COMMAND ends. Killing the process
group (the pid is also the group id) stops COMMAND; the runner still writes the exit code.
Standard library only: it starts before anything else is imported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def _write(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)  # readers see the whole value or nothing


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: jobrunner.py DIR -- COMMAND...", file=sys.stderr)
        return 64
    folder, command = Path(argv[0]), argv[2:]
    folder.mkdir(parents=True, exist_ok=True)
    child = os.fork()
    if child:
        # The first process writes the pid before it returns, so the caller finds it at once.
        _write(folder / "pid", str(child))
        return 0
    os.setsid()
    # Let go of the caller's pipes, or the caller would wait for them to close.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    # The group gets SIGTERM when the pod is deleted: COMMAND handles it, the runner waits.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(folder / "log", "ab", buffering=0) as log, open(os.devnull, "rb") as stdin:
        try:
            process = subprocess.Popen(
                command, stdin=stdin, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_default_sigterm
            )
            code = process.wait()
        except OSError as exc:
            log.write(f"exec {command[0]}: {exc}\n".encode())
            code = 127
    # A signal shows as 128 + its number, as a container's exit code does.
    _write(folder / "exit", str(code if code >= 0 else 128 - code))
    os._exit(0)


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

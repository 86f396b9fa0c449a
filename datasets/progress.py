"""Read the copier's JSON progress lines out of a prewarm pod's log.

The copier (datasets.copier) prints one JSON object per line: `plan`, `progress` (at most
twice a second), `files` (the copied tree, in chunks) and a final `done` or `error`. The
console reads them from the pod log rather than having the Job call back: no path from the
cluster to the console is needed, no per-job token can leak, and the log stays the record a
person reads when something fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

LOG_TAIL_LINES = 30


@dataclass
class CopierState:
    files_total: int = 0
    files_done: int = 0
    files_skipped: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    rate_bytes_per_second: float = 0.0
    eta_seconds: float | None = None
    finished: bool = False
    failed: bool = False
    reason: str = ""
    message: str = ""
    files: list[tuple[str, int]] = field(default_factory=list)
    plain_lines: list[str] = field(default_factory=list)  # what is not JSON: for the log tail

    def log_tail(self) -> str:
        return "\n".join(self.plain_lines[-LOG_TAIL_LINES:])


def parse_copier_log(text: str) -> CopierState:
    state = CopierState()
    for line in text.splitlines():
        event = _event(line)
        if event is None:
            if line.strip():
                state.plain_lines.append(line)
            continue
        _apply(state, event)
        state.plain_lines.append(_summary(event))
    return state


def _event(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _apply(state: CopierState, event: dict[str, Any]) -> None:
    kind = event["event"]
    for name in ("files_total", "files_done", "files_skipped", "bytes_total", "bytes_done"):
        if isinstance(event.get(name), int):
            setattr(state, name, event[name])
    if kind == "plan":
        # Skipped files are already in place: they count as done from the start.
        state.files_done = max(state.files_done, state.files_skipped)
        state.bytes_done = max(state.bytes_done, int(event.get("bytes_skipped", 0)))
    elif kind == "progress":
        state.rate_bytes_per_second = float(event.get("rate_bytes_per_second") or 0)
        state.eta_seconds = event.get("eta_seconds")
    elif kind == "files":
        state.files.extend((str(path), int(size)) for path, size in event.get("files", []))
    elif kind == "done":
        state.finished = True
        state.bytes_done = state.bytes_total or state.bytes_done
        state.files_done = state.files_total or state.files_done
        state.eta_seconds = 0
    elif kind == "error":
        state.finished = state.failed = True
        state.reason = str(event.get("reason") or "CopyFailed")
        state.message = str(event.get("message") or "")


def _summary(event: dict[str, Any]) -> str:
    kind = event["event"]
    if kind == "files":
        return f"files: {len(event.get('files', []))} listed"
    if kind == "error":
        return f"error {event.get('reason')}: {event.get('message')}"
    details = ", ".join(
        f"{k}={v}" for k, v in event.items() if k != "event" and not isinstance(v, list | dict)
    )
    return f"{kind}: {details}"

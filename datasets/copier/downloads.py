"""The download pool the hub copiers share (Hugging Face, ModelScope): files go to a few worker
threads, biggest first, and the main thread hands each finished one to the Finisher or decides
what a failure means."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from datasets.copier.errors import CopierError
from datasets.copier.finish import Finisher
from datasets.copier.plan import SourceFile
from datasets.copier.progress import Progress


def download_all(
    to_copy: list[SourceFile],
    *,
    download: Callable[[SourceFile, threading.Event], None],
    on_error: Callable[[SourceFile, BaseException], CopierError | None],
    finisher: Finisher,
    progress: Progress,
    workers: int,
    name: str,
    client: str,
) -> None:
    """`download(file, stop)` fetches one file into its temporary place (and returns early once
    `stop` is set); `on_error(file, exc)` returns a CopierError that ends the run, or None once
    the file is recorded as failed. `client` names the transfer in the Finisher's failure report."""
    todo: queue.SimpleQueue[SourceFile] = queue.SimpleQueue()
    # Big files first: the tail of the run is then many small files spread over all workers.
    for file in sorted(to_copy, key=lambda f: f.size, reverse=True):
        todo.put(file)
    results: queue.SimpleQueue[tuple[SourceFile, BaseException | None]] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                file = todo.get_nowait()
            except queue.Empty:
                return
            try:
                download(file, stop)
                results.put((file, None))
            except BaseException as exc:  # reported to the main thread, which decides
                results.put((file, exc))

    # Daemon threads: a SIGTERM (or a fatal error) ends the copier without waiting for them.
    count = min(workers, len(to_copy))
    threads = [threading.Thread(target=work, name=f"{name}-{i}", daemon=True) for i in range(count)]
    progress.start()
    for thread in threads:
        thread.start()
    try:
        for _ in range(len(to_copy)):
            file, error = results.get()
            if error is None:
                finisher.staged(file)
                continue
            fatal = on_error(file, error)
            if fatal is not None:
                raise fatal
    finally:
        stop.set()
    finisher.close()
    finisher.raise_failures(client)

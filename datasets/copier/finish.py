"""The last step of every file, whatever copied it: verify, rename into place, record."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from datasets.copier.errors import CopierError
from datasets.copier.plan import Destination, Manifest, SourceFile
from datasets.copier.progress import Progress

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

MAX_FAILURES_SHOWN = 5


def file_md5(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


class Finisher:
    """Takes a file whose temporary copy is complete, checks it and renames it to its final name.

    Sizes are always checked. With `expected_md5` (the --verify-md5 flag) the copy is hashed too;
    the hashing runs on a thread pool so that reading s5cmd's output never waits for it.
    """

    def __init__(
        self,
        dest: Destination,
        manifest: Manifest,
        progress: Progress,
        *,
        expected_md5: Callable[[SourceFile], str | None] | None = None,
        workers: int = 4,
        in_place: bool = False,
    ) -> None:
        self.dest = dest
        self.manifest = manifest
        self.progress = progress
        self.expected_md5 = expected_md5
        self.failures: list[str] = []  # "path: why", for the message
        self.failed: set[str] = set()
        self.finished: set[str] = set()
        self.md5_verified = 0
        self.md5_unverifiable = 0
        self._lock = threading.Lock()
        self._no_space: OSError | None = None
        self._pool: ThreadPoolExecutor | None = None
        if expected_md5 is not None:
            # Imported here: concurrent.futures (and the logging it pulls in) would delay every
            # copier's start, and only hashing needs a pool.
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="verify")
        self._futures: list[Future[None]] = []
        self._folders: set[str] = set()
        self._root, self._partial_root = os.fspath(dest.root), os.fspath(dest.partial_root)
        # in_place: the tool already wrote the file under its final name, whole (s5cmd writes a
        # temporary file beside it and renames it when complete), so there is nothing to move.
        self.in_place = in_place

    def staged(self, file: SourceFile) -> None:
        if self._pool is not None:
            self._futures.append(self._pool.submit(self.finish, file))
        else:
            self.finish(file)

    def staged_batch(self, files: list[SourceFile]) -> None:
        """Several files at once: one journal write and one progress update for the lot."""
        if self._pool is not None:
            for file in files:
                self.staged(file)
            return
        placed = [file for file in files if self._place(file)]
        if placed:
            self._record(placed)

    def close(self) -> None:
        """Wait for verifications still running; raises NoSpace if a rename hit a full disk."""
        if self._pool is not None:
            for future in self._futures:
                future.exception()  # finish() records its own failures; this only waits
            self._pool.shutdown()
            self._pool = None
        if self._no_space is not None:
            raise no_space_error(self.dest)

    def fail(self, path: str, why: str) -> None:
        with self._lock:
            self.failures.append(f"{path}: {why}")
            self.failed.add(path)

    def finish(self, file: SourceFile) -> None:
        if self._place(file):
            self._record([file])

    def _place(self, file: SourceFile) -> bool:
        """Check the copy and rename it to its final name (unless it is there); False if it failed.

        A copy that fails a check is removed, so a file under its final name that is not in the
        manifest is at worst copied again, never trusted."""
        # Plain strings, not pathlib: this runs once per file, thousands of times.
        final = f"{self._root}/{file.path}"
        partial = final if self.in_place else f"{self._partial_root}/{file.path}"
        try:
            size = os.stat(partial).st_size
            if size != file.size:
                # The object changed between listing and copying, or the copy is short.
                self.fail(file.path, f"copied {size} bytes, the source listed {file.size}")
                os.unlink(partial)
                return False
            if self.expected_md5 is not None:
                self._check_md5(file, partial)
            if self.in_place:
                return True
            folder = os.path.dirname(final)
            if folder not in self._folders:
                os.makedirs(folder, exist_ok=True)
                self._folders.add(folder)
            os.replace(partial, final)
        except _Mismatch as exc:
            self.fail(file.path, str(exc))
            with contextlib.suppress(OSError):
                os.unlink(partial)
            return False
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._no_space = exc
            self.fail(file.path, exc.strerror or str(exc))
            return False
        return True

    def _record(self, files: list[SourceFile]) -> None:
        """After the renames, never before: a kill in between only means copying them again."""
        with self._lock:
            self.manifest.record_many(files)
            self.finished.update(file.path for file in files)
        self.progress.files_finished(len(files), sum(file.size for file in files))

    def _check_md5(self, file: SourceFile, partial: str) -> None:
        assert self.expected_md5 is not None
        expected = self.expected_md5(file)
        if expected is None:
            with self._lock:
                self.md5_unverifiable += 1
            return
        actual = file_md5(partial)
        if actual != expected:
            raise _Mismatch(f"MD5 {actual} of the copy differs from the source's {expected}")
        with self._lock:
            self.md5_verified += 1

    def raise_failures(self, tool: str, details: str = "") -> None:
        if not self.failures:
            return
        shown = "; ".join(self.failures[:MAX_FAILURES_SHOWN])
        more = (
            f" (and {len(self.failures) - MAX_FAILURES_SHOWN} more)"
            if len(self.failures) > MAX_FAILURES_SHOWN
            else ""
        )
        message = f"{len(self.failures)} file(s) failed with {tool}: {shown}{more}."
        if details:
            message += f" {details}"
        raise CopierError("CopyFailed", message + " Files copied so far are kept; a re-run copies the rest.")


class _Mismatch(Exception):
    pass


def no_space_error(dest: Destination) -> CopierError:
    free = ""
    with contextlib.suppress(OSError):
        st = os.statvfs(dest.root)
        free = f" ({st.f_bavail * st.f_frsize / 2**30:.1f} GiB free)"
    return CopierError(
        "NoSpace",
        f"The destination {dest.root} is full{free}: make the cache volume larger. "
        "Files copied so far are kept; a re-run copies the rest.",
    )

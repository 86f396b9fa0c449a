"""Local sources: a folder mounted in the pod (an NFS export, a PVC, a node path).

Listing is os.walk plus a stat per file (size and mtime decide what changed). Copying is a
thread pool: each file goes through copy_file_range (in the kernel; NFS 4.2 can even copy on the
server) with a plain sendfile copy as the fallback, into the temporary folder, then the Finisher
renames it into place.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

from datasets.copier.errors import CopierError
from datasets.copier.finish import Finisher, file_md5, no_space_error
from datasets.copier.plan import Destination, SourceFile, safe_relative_path
from datasets.copier.progress import Progress

CHUNK = 16 * 2**20  # per copy_file_range call: small enough for progress and a prompt stop
FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF, errno.EPERM}


def list_files(root: Path, dest: Path) -> tuple[list[SourceFile], list[str]]:
    if not root.is_dir():
        raise CopierError(
            "SourceUnreachable",
            f"The source folder {root} does not exist or is not a folder. For NFS, check the server "
            "and the export path; for a PVC or node path, check that it is mounted.",
        )
    root_real, dest_real = root.resolve(), dest.resolve()
    if dest_real == root_real or root_real in dest_real.parents:
        raise CopierError("BadArguments", f"The destination {dest} is inside the source {root}.")
    files: list[SourceFile] = []
    others: list[str] = []
    try:
        walker = os.walk(root, onerror=_raise)
        for folder, subfolders, names in walker:
            subfolders.sort()
            relative_folder = os.path.relpath(folder, root)
            for name in sorted(names):
                full = os.path.join(folder, name)
                path = name if relative_folder == "." else f"{relative_folder}/{name}"
                try:
                    st = os.stat(full)  # follows links: a linked file is copied as a file
                except OSError:
                    others.append(path)  # a dangling link
                    continue
                if not safe_relative_path(path) or not os.path.isfile(full):
                    others.append(path)
                    continue
                files.append(
                    SourceFile(
                        path=path, size=st.st_size, version={"mtime_ns": st.st_mtime_ns}, location=full
                    )
                )
    except OSError as exc:
        raise CopierError("SourceUnreachable", f"Reading the source folder {root} failed: {exc}.") from exc
    if not files:
        raise CopierError("EmptySource", f"Nothing to copy: the source folder {root} holds no files.")
    return files, others


def _raise(exc: OSError) -> None:
    raise exc


def expected_md5(file: SourceFile) -> str | None:
    return file_md5(file.location)  # a local source can always be hashed (it is read twice)


def copy(
    to_copy: list[SourceFile], dest: Destination, finisher: Finisher, progress: Progress, *, workers: int
) -> None:
    # Imported here, not at the top: an S3 copy does not need it (see finish.py).
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    stop = threading.Event()
    progress.start()
    # Big files first: the tail of the run is then many small files spread over all workers.
    ordered = sorted(to_copy, key=lambda f: f.size, reverse=True)
    with ThreadPoolExecutor(workers, thread_name_prefix="copy") as pool:
        futures = [pool.submit(_copy_one, file, dest, finisher, stop) for file in ordered]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # SIGTERM arrives here as an exception: stop the workers promptly
            stop.set()
            for future in futures:
                future.cancel()
            raise
        for future in done:
            exc = future.exception()
            if exc is not None:
                stop.set()
                for other in futures:
                    other.cancel()
                if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                    raise no_space_error(dest) from exc
                raise exc
    finisher.close()
    finisher.raise_failures("the local copy")


def _copy_one(file: SourceFile, dest: Destination, finisher: Finisher, stop: threading.Event) -> None:
    if stop.is_set():
        return
    partial = dest.partial(file.path)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        _copy_file(file.location, partial, stop)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
        finisher.fail(file.path, f"{exc.strerror or exc} ({exc.filename or file.location})")
        partial.unlink(missing_ok=True)
        return
    if not stop.is_set():
        finisher.finish(file)


def _copy_file(source: str, target: Path, stop: threading.Event) -> None:
    with open(source, "rb") as fin, open(target, "wb") as fout:
        try:
            while not stop.is_set():
                if os.copy_file_range(fin.fileno(), fout.fileno(), CHUNK) == 0:
                    break
            return
        except OSError as exc:
            if exc.errno not in FALLBACK_ERRNOS or os.fstat(fout.fileno()).st_size:
                raise
    # copy_file_range is not possible between these two filesystems: shutil's sendfile copy.
    shutil.copyfile(source, target)

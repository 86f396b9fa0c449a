"""What is at the source, what is already in the destination, and what to copy or remove.

The destination is a cache folder owned by the copier. Besides the copied tree it holds:
- `.prewarm-manifest.json`: path -> size plus the source's version of it (S3 ETag, or the
  object's LastModified when the server gives no ETag; mtime for local sources);
- `.prewarm-journal.jsonl`: one line appended per file finished (or removed) since the manifest
  was last written, so a killed copier loses nothing it had finished;
- `.prewarm-partial/`: temporary files of the copy in progress, renamed into place once their
  size is verified (a file at its final name is always complete);
- `.prewarm-lock`: held while a copier works here (also by its s5cmd child).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets.copier.errors import CopierError

MANIFEST = ".prewarm-manifest.json"
JOURNAL = ".prewarm-journal.jsonl"
PARTIAL = ".prewarm-partial"
LOCK = ".prewarm-lock"
RESERVED = {MANIFEST, JOURNAL, PARTIAL, LOCK}
LOCK_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the source root and to the destination, "/"-separated
    size: int
    version: dict[str, Any]  # {"etag": ...}, {"last_modified": ...} or {"mtime_ns": ...}
    location: str  # the S3 key, or the absolute local path

    def record(self) -> dict[str, Any]:
        return {"size": self.size, **self.version}


def safe_relative_path(path: str) -> bool:
    """False for paths that would land outside the destination or on the copier's own files."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\0" in path:
        return False
    if any(part in ("", ".", "..") for part in parts):
        return False
    return parts[0] not in RESERVED


class Destination:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.partial_root = root / PARTIAL
        self._lock_fd: int | None = None

    def final(self, path: str) -> Path:
        return self.root / path

    def partial(self, path: str) -> Path:
        return self.partial_root / path

    def prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".prewarm-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise CopierError("NoSpace", f"{self.root} is full: {exc.strerror}.") from exc
            raise CopierError(
                "DestinationUnwritable",
                f"Cannot write to the destination {self.root}: {exc.strerror}. "
                "Check that the cache volume is mounted read-write.",
            ) from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[int]:
        """One copier per destination. The lock is an flock: it also stays held by s5cmd (which
        inherits the descriptor) until that child is gone, so a re-run never races a leftover."""
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise CopierError(
                            "Busy",
                            f"Another copier has been working in {self.root} for over "
                            f"{LOCK_WAIT_SECONDS:.0f} s. Wait for it to finish, or stop it.",
                        ) from None
                    time.sleep(0.1)
            self._lock_fd = fd
            yield fd
        finally:
            self._lock_fd = None
            os.close(fd)

    def clear_partial(self) -> None:
        """Temporary files of an earlier, interrupted run: useless (s5cmd cannot resume a part
        file), so they go; the files that run finished are already at their final names."""
        shutil.rmtree(self.partial_root, ignore_errors=True)

    def remove(self, path: str) -> None:
        target = self.final(path)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        # Drop folders the removal left empty, up to the root.
        parent = target.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


class Manifest:
    """What earlier runs copied here: the manifest file plus the journal appended since."""

    def __init__(self, dest: Destination, source: str, files: dict[str, dict[str, Any]]) -> None:
        self.dest = dest
        self.source = source
        self.files = files
        self._journal_fd: int | None = None

    @classmethod
    def load(cls, dest: Destination, source: str) -> Manifest:
        files: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads((dest.root / MANIFEST).read_text())
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                files = data["files"]
                if data.get("source") != source:
                    # Another source was copied here: keep the list (to remove what is not in
                    # this source) but trust no version, so everything is copied again.
                    files = {path: {**record, "stale": True} for path, record in files.items()}
        except (OSError, ValueError):
            pass  # no manifest (first run) or a damaged one: everything counts as missing
        try:
            with open(dest.root / JOURNAL) as journal:
                for line in journal:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a kill
                    if entry.get("deleted"):
                        files.pop(entry["path"], None)
                    else:
                        files[entry["path"]] = entry["record"]
        except OSError:
            pass
        return cls(dest, source, files)

    def _append(self, entry: dict[str, Any]) -> None:
        if self._journal_fd is None:
            self._journal_fd = os.open(
                self.dest.root / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        # One write of one line on an O_APPEND descriptor: lines from threads never interleave.
        os.write(self._journal_fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())

    def record(self, file: SourceFile) -> None:
        """Called after the file is renamed into place, never before: a kill in between only
        means the file is copied again next time."""
        self.files[file.path] = file.record()
        self._append({"path": file.path, "record": file.record()})

    def forget(self, path: str) -> None:
        self.files.pop(path, None)
        self._append({"path": path, "deleted": True})

    def save(self) -> None:
        data = {"version": 1, "source": self.source, "files": dict(sorted(self.files.items()))}
        target = self.dest.root / MANIFEST
        temporary = target.with_name(MANIFEST + ".tmp")
        temporary.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(temporary, target)
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        with contextlib.suppress(FileNotFoundError):
            (self.dest.root / JOURNAL).unlink()


@dataclass
class Plan:
    files: list[SourceFile]  # everything at the source (safe paths only)
    to_copy: list[SourceFile] = field(default_factory=list)
    skipped: list[SourceFile] = field(default_factory=list)
    removed: list[tuple[str, int]] = field(default_factory=list)  # (path, size) gone from the source
    ignored: list[str] = field(default_factory=list)  # source paths that cannot be files here

    @property
    def bytes_total(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def bytes_to_copy(self) -> int:
        return sum(f.size for f in self.to_copy)

    @property
    def bytes_skipped(self) -> int:
        return sum(f.size for f in self.skipped)


def make_plan(listed: list[SourceFile], manifest: Manifest, dest: Destination) -> Plan:
    """Skip a file when the destination has it at the same size and the manifest says it was
    copied from the same version; copy everything else; remove what the source no longer has."""
    plan = Plan(files=[])
    for file in listed:
        if not safe_relative_path(file.path):
            plan.ignored.append(file.path)
            continue
        plan.files.append(file)
        if (
            manifest.files.get(file.path) == file.record()
            and _size_on_disk(dest.final(file.path)) == file.size
        ):
            plan.skipped.append(file)
        else:
            plan.to_copy.append(file)
    present = {f.path for f in plan.files}
    for path, record in manifest.files.items():
        if path not in present:
            plan.removed.append((path, int(record.get("size", 0))))
    return plan


def _size_on_disk(path: Path) -> int:
    try:
        st = path.stat()
    except OSError:
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1

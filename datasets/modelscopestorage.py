"""Reading a ModelScope model repo from the console, without downloading it.

`ModelScopeStorage` implements datasets.storage.Storage over ModelScope's HTTP API (the calls
are described in datasets/copier/modelscope.py): the token is traded for a session once, the
revision is checked against the repo's branches and tags, and the whole file list (paths, sizes)
is read in one recursive listing, so browsing, the layout check and the fit estimate see one
snapshot and make one listing call however many folders they look at. Reads of config.json and
safetensors headers are HTTP `Range` GETs of the file. One attempt per call, bounded by a
timeout: a dead endpoint, a refused token, a missing repo or revision fail at once with their
reason. No Django here.
"""

from __future__ import annotations

import contextlib

from datasets.copier.modelscope import (
    DEFAULT_ENDPOINT,
    DEFAULT_REVISION,
    ModelScopeApi,
    ModelScopeError,
    ModelScopeSource,
)
from datasets.storage import Listing, ManifestStorage, StorageError, clean_path, slice_range

API_TIMEOUT = 10.0  # the console waits on these calls inside a request


class ModelScopeStorage:
    def __init__(
        self,
        repo_id: str,
        revision: str = DEFAULT_REVISION,
        endpoint: str | None = None,
        token: str | None = None,
    ) -> None:
        self.source = ModelScopeSource(
            repo_id=repo_id,
            revision=revision or DEFAULT_REVISION,
            endpoint_url=(endpoint or DEFAULT_ENDPOINT).rstrip("/"),
            token=token or None,
        )
        self._api = ModelScopeApi(self.source, timeout=API_TIMEOUT, retries=0)
        self._files: ManifestStorage | None = None

    def _where(self) -> str:
        where = self.source.url
        return where if self.source.endpoint == DEFAULT_ENDPOINT else f"{where} at {self.source.endpoint}"

    def _tree(self) -> ManifestStorage:
        """Every file and its size, listed once (after the revision check)."""
        if self._files is None:
            try:
                self._api.check_revision()
                entries = self._api.files(recursive=True)
            except ModelScopeError as exc:
                raise self._error(exc, "") from None
            # A git repository has no empty folders: the files say which folders there are.
            self._files = ManifestStorage([(e.path, e.size) for e in entries if not e.is_folder])
        return self._files

    def list_dir(self, path: str = "") -> Listing:
        path = clean_path(path)
        tree = self._tree()
        if not tree.is_folder(path):
            if tree.is_file(path):
                raise StorageError("NotAFolder", f"'{path}' is a file, not a folder.")
            raise StorageError("NotFound", f"There is no folder '{path}' in {self._where()}.")
        return tree.list_dir(path)

    def read_bytes(self, path: str, start: int = 0, length: int | None = None) -> bytes:
        path = clean_path(path)
        if length == 0:
            return b""
        if not path:
            raise StorageError("NotFound", "The root of the repository is a folder, not a file.")
        if not self._tree().is_file(path):
            raise StorageError("NotFound", f"There is no '{path}' in {self._where()}.")
        ranged = bool(start or length is not None)
        end = None if length is None else start + length - 1
        try:
            response = self._api.open_file(path, start=start, end=end)
        except ModelScopeError as exc:
            raise self._error(exc, path) from None
        with contextlib.closing(response):
            if response.status_code == 416:  # reading past the end, as a file read would
                return b""
            data = response.content
        # A server that ignores Range answers 200 with the whole file: still honour the request.
        return slice_range(data, start, length) if ranged and response.status_code == 200 else data

    def exists(self, path: str) -> bool:
        return self._tree().exists(path)

    def check(self) -> None:
        """Log in (the token), check the revision (repo, revision), list the files (not empty)."""
        if not len(self._tree()):
            raise StorageError("EmptyRepo", f"The repository {self._where()} holds no files.")

    def _error(self, exc: ModelScopeError, path: str) -> StorageError:
        error = self._describe(exc, path)
        token = self.source.token
        if token and token in error.message:  # belt and braces: never echo it
            error = StorageError(error.reason, error.message.replace(token, "***"))
        return error

    def _describe(self, exc: ModelScopeError, path: str) -> StorageError:
        if exc.kind == "AccessDenied":
            if self.source.token:
                return StorageError(
                    "AccessDenied",
                    f"ModelScope refused the token ({exc.detail}) for {self._where()}: give an SDK "
                    "token from the ModelScope account page that may read this repository.",
                )
            return StorageError(
                "AccessDenied",
                f"ModelScope does not show {self._where()} without a token ({exc.detail}): the "
                "repository is private. Give a token that can read it, or check the repository id.",
            )
        if exc.kind == "NoSuchRepo":
            return StorageError(
                "NoSuchRepo", f"There is no repository '{self.source.repo_id}' at {self.source.endpoint}."
            )
        if exc.kind == "NoSuchRevision":
            return StorageError(
                "NoSuchRevision",
                f"The repository '{self.source.repo_id}' has no revision '{self.source.revision}' "
                f"({exc.detail}): give a branch or a tag.",
            )
        if exc.kind == "NotFound":
            return StorageError("NotFound", f"There is no '{path}' in {self._where()}.")
        if exc.kind == "NotTheApi":
            return StorageError(
                "NotTheApi",
                f"{self.source.endpoint} does not answer like ModelScope's API ({exc.detail}): check the "
                "endpoint, e.g. https://www.modelscope.cn.",
            )
        if exc.kind == "Unreachable":
            return StorageError(
                "Unreachable", f"ModelScope at {self.source.endpoint} is unreachable ({exc.detail})."
            )
        return StorageError("ModelScopeError", f"Reading {self._where()} failed ({exc.detail}).")

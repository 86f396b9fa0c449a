"""Reading a Hugging Face Hub repo from the console, without downloading it.

`HubStorage` implements datasets.storage.Storage with `huggingface_hub`, the hub's client:
folder listings with sizes from the tree API (`HfApi.list_repo_tree`), existence from
`get_paths_info`, and ranged reads of a file (config.json, safetensors headers) as HTTP
`Range` GETs of its `hf_hub_url` through the client's session, which follows the hub's
redirect of large files to its CDN (and leaves the token behind on the way there).

The revision is resolved to a commit once per HubStorage (`model_info`: one request without
retries, bounded by a timeout), and every listing and read is made at that commit, so the
layout check and the fit estimate see one snapshot, and a dead endpoint, a refused token, a
missing repo or revision fail at once with their reason. No Django here.
"""

from __future__ import annotations

from datasets.copier.hub import DEFAULT_ENDPOINT, DEFAULT_REVISION, error_kind, status_of
from datasets.storage import FileEntry, Listing, StorageError, clean_path

API_TIMEOUT = 10.0  # the console waits on these calls inside a request
READ_TIMEOUT = 20.0


class HubStorage:
    def __init__(
        self,
        repo_id: str,
        revision: str = DEFAULT_REVISION,
        endpoint: str | None = None,
        token: str | None = None,
    ) -> None:
        from huggingface_hub import HfApi

        self.repo_id = repo_id
        self.revision = revision or DEFAULT_REVISION
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self._token = token or None
        # token=False, not None: never fall back to a token of the console's own environment.
        self._api = HfApi(endpoint=self.endpoint, token=self._token or False)
        self._commit: str | None = None

    @property
    def commit(self) -> str:
        """The commit the revision points to, asked once."""
        if self._commit is None:
            try:
                info = self._api.model_info(self.repo_id, revision=self.revision, timeout=API_TIMEOUT)
            except Exception as exc:
                raise self._error(exc, "") from None
            if not info.sha:
                raise StorageError("HubError", f"{self._where()} did not name the commit of the revision.")
            self._commit = str(info.sha)
        return self._commit

    def _where(self) -> str:
        where = f"hf://{self.repo_id}@{self.revision}"
        return where if self.endpoint == DEFAULT_ENDPOINT else f"{where} at {self.endpoint}"

    def list_dir(self, path: str = "") -> Listing:
        from huggingface_hub import RepoFile

        path = clean_path(path)
        commit = self.commit
        try:
            entries = list(self._api.list_repo_tree(self.repo_id, path_in_repo=path or None, revision=commit))
        except Exception as exc:
            error = self._error(exc, path)
            if error.reason == "NotFound" and path and self._is_file(path):
                raise StorageError("NotAFolder", f"'{path}' is a file, not a folder.") from None
            raise error from None
        prefix = f"{path}/" if path else ""
        folders: set[str] = set()
        files: dict[str, int] = {}
        for entry in entries:
            if entry.path == path:  # a file path listed as itself
                raise StorageError("NotAFolder", f"'{path}' is a file, not a folder.")
            name = entry.path.removeprefix(prefix)
            if "/" in name or not name:
                continue
            if isinstance(entry, RepoFile):
                files[name] = int(entry.size)
            else:
                folders.add(name)
        return Listing(
            path=path,
            folders=sorted(folders),
            files=[FileEntry(name, files[name]) for name in sorted(files)],
        )

    def read_bytes(self, path: str, start: int = 0, length: int | None = None) -> bytes:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        path = clean_path(path)
        if length == 0:
            return b""
        if not path:
            raise StorageError("NotFound", "The root of the repository is a folder, not a file.")
        url = hf_hub_url(self.repo_id, path, revision=self.commit, endpoint=self.endpoint)
        headers = build_hf_headers(token=self._token or False)
        ranged = bool(start or length is not None)
        if ranged:
            headers["Range"] = f"bytes={start}-" + ("" if length is None else str(start + length - 1))
        try:
            response = get_session().get(url, headers=headers, timeout=READ_TIMEOUT)
            if response.status_code == 416:  # reading past the end, as a file read would
                return b""
            hf_raise_for_status(response)
        except StorageError:
            raise
        except Exception as exc:
            raise self._error(exc, path) from None
        data = response.content
        # A server that ignores Range answers 200 with the whole file: still honour the request.
        if ranged and response.status_code == 200:
            data = data[start:] if length is None else data[start : start + length]
        return data

    def exists(self, path: str) -> bool:
        path = clean_path(path)
        if not path:
            return True
        return bool(self._paths_info(path))

    def _is_file(self, path: str) -> bool:
        from huggingface_hub import RepoFile

        return any(isinstance(entry, RepoFile) for entry in self._paths_info(path))

    def _paths_info(self, path: str) -> list:
        try:
            return self._api.get_paths_info(self.repo_id, [path], revision=self.commit)
        except Exception as exc:
            raise self._error(exc, path) from None

    def check(self) -> None:
        """Resolve the revision (endpoint, token, repo, revision) and list the root (not empty)."""
        listing = self.list_dir("")
        if not listing.files and not listing.folders:
            raise StorageError("EmptyRepo", f"The repository {self._where()} holds no files.")

    def _error(self, exc: Exception, path: str) -> StorageError:
        error = self._describe(exc, path)
        if self._token and self._token in error.message:  # belt and braces: never echo it
            error = StorageError(error.reason, error.message.replace(self._token, "***"))
        return error

    def _describe(self, exc: Exception, path: str) -> StorageError:
        kind = error_kind(exc)
        status = status_of(exc)
        if kind == "AccessDenied":
            if self._token:
                return StorageError(
                    "AccessDenied",
                    f"The hub refused the token (HTTP {status}) for {self._where()}: check the token "
                    "and that it may read this repository (gated repos also need their terms "
                    "accepted on the hub).",
                )
            return StorageError(
                "AccessDenied",
                f"The hub does not show {self._where()} without a token (HTTP {status}): the repository "
                "is private or gated, or does not exist. Give a token that can read it, or check "
                "the repository id.",
            )
        if kind == "NoSuchRepo":
            return StorageError(
                "NoSuchRepo",
                f"There is no repository '{self.repo_id}' at {self.endpoint} (the id is case-sensitive).",
            )
        if kind == "NoSuchRevision":
            return StorageError(
                "NoSuchRevision",
                f"The repository '{self.repo_id}' has no revision '{self.revision}': give a branch, a tag "
                "or a commit id.",
            )
        if kind == "NotFound":
            return StorageError("NotFound", f"There is no '{path}' in {self._where()}.")
        if kind == "Unreachable":
            return StorageError(
                "Unreachable", f"The hub at {self.endpoint} is unreachable ({type(exc).__name__})."
            )
        # The status only: a server's free-text message could quote request details.
        return StorageError(
            "HubError",
            f"Reading {self._where()} failed ({f'HTTP {status}' if status else type(exc).__name__}).",
        )

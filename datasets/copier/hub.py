"""Hugging Face Hub sources: list and download with `huggingface_hub`, the hub's own client.

`--source=hf://owner/name@revision` (revision defaults to main), `--endpoint-url` for a mirror
(e.g. https://hf-mirror.com), the token from `HF_TOKEN`.

Listing: `model_info` resolves the revision to a commit id (one request, no retries, so a
wrong endpoint, token, repo or revision fails at once with its reason), then `list_repo_tree`
lists that commit recursively: path, size and the file's content id (the git blob id, or the
sha256 of an LFS file). The content id is the manifest's version, so a re-run skips files
whose size and id are unchanged, and a file identical in another revision is not copied again.

Copying: `hf_hub_download` per file, pinned to the listed commit (every file comes from the
same snapshot), into the copier's temporary folder (`local_dir`), then the Finisher checks
the size and renames it into place. The client follows the hub's redirect of large (LFS)
files to its CDN and uses Xet where the hub offers it. Downloads run on daemon threads, one
file each, finished files are recorded as they land (a killed run resumes), and a SIGTERM
ends the copier without waiting for a multi-GB download to end.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from datasets.copier.downloads import download_all
from datasets.copier.errors import CopierError
from datasets.copier.finish import Finisher, no_space_error
from datasets.copier.plan import Destination, SourceFile, safe_relative_path
from datasets.copier.progress import Progress

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
# owner/name as the hub accepts them (huggingface_hub's validate_repo_id, with the owner required).
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
# `local_dir` keeps huggingface_hub's own bookkeeping under .cache/huggingface/: a repo file
# there would collide with it.
CLIENT_FOLDER = ".cache/huggingface/"
API_TIMEOUT = 30.0


def valid_repo_id(repo_id: str) -> bool:
    return bool(REPO_ID.fullmatch(repo_id)) and "--" not in repo_id and ".." not in repo_id


@dataclass(frozen=True)
class RepoSource:
    """A model repository on a hub, `<scheme>owner/name[@revision]`, served by `endpoint`.
    Subclasses give the scheme, the default endpoint and revision, and what a repo id may be."""

    scheme: ClassVar[str]
    default_endpoint: ClassVar[str]
    repo_id: str
    revision: str
    endpoint_url: str | None = None
    token: str | None = None

    @staticmethod
    def valid_repo_id(repo_id: str) -> bool:
        raise NotImplementedError

    @classmethod
    def parse(cls, url: str, *, endpoint_url: str | None = None, token: str | None = None) -> Self:
        repo_id, _, revision = url.removeprefix(cls.scheme).partition("@")
        repo_id = repo_id.strip("/")
        if not cls.valid_repo_id(repo_id):
            raise CopierError(
                "BadArguments", f"{url!r} names no repository: use {cls.scheme}owner/name[@revision]."
            )
        return cls(
            repo_id=repo_id,
            endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
            token=token or None,
            **({"revision": revision} if revision else {}),
        )

    @property
    def endpoint(self) -> str:
        return self.endpoint_url or self.default_endpoint

    @property
    def url(self) -> str:
        return f"{self.scheme}{self.repo_id}@{self.revision}"

    @property
    def where(self) -> str:
        return f"{self.url} at {self.endpoint}"


@dataclass(frozen=True)
class HubSource(RepoSource):
    scheme = "hf://"
    default_endpoint = DEFAULT_ENDPOINT
    revision: str = DEFAULT_REVISION
    valid_repo_id = staticmethod(valid_repo_id)

    @property
    def label(self) -> str:
        """What the manifest remembers as the source. Versions are content ids (git blob ids and
        LFS sha256s), true whatever the revision, endpoint or repo: a file whose id matches is
        the same bytes. So one label for every hub source, and a change of revision or mirror
        copies only the files that differ."""
        return "hf"


# Errors ------------------------------------------------------------------------------------------


def error_kind(exc: BaseException) -> str | None:
    """What a huggingface_hub (or httpx) error means, looking through the exception's causes:
    AccessDenied, NoSuchRepo, NoSuchRevision, NotFound (a file or folder), Unreachable, or
    None (something else). Shared with the console's HubStorage."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, GatedRepoError):
            return "AccessDenied"
        if isinstance(current, RepositoryNotFoundError):
            # Without a valid token the hub answers 401 for a private repo and a missing one alike.
            return "AccessDenied" if status_of(current) in (401, 403) else "NoSuchRepo"
        if isinstance(current, RevisionNotFoundError):
            return "NoSuchRevision"
        if isinstance(current, RemoteEntryNotFoundError):
            return "NotFound"
        if isinstance(current, HfHubHTTPError):
            status = status_of(current)
            if status in (401, 403):
                return "AccessDenied"
            if status is not None and status >= 500:
                return "Unreachable"
            return None
        if isinstance(current, httpx2.TransportError | OfflineModeIsEnabled | ConnectionError | TimeoutError):
            return "Unreachable"
        current = current.__cause__ or current.__context__
    return None


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _listing_error(source: HubSource, exc: BaseException) -> CopierError:
    kind = error_kind(exc)
    status = status_of(exc)
    if kind == "AccessDenied":
        if source.token:
            why = f"refused the token (HTTP {status})" if status else "refused the token"
            return CopierError(
                "AccessDenied",
                f"The hub {why} for {source.where}. Check the dataset's token, and that it may read "
                "this repository (gated repos also need their terms accepted on the hub).",
            )
        return CopierError(
            "AccessDenied",
            f"The hub does not show {source.where} without a token (HTTP {status}): the repository "
            "is private or gated, or does not exist. Give the dataset a token that can read it, or "
            "check the repository id.",
        )
    if kind == "NoSuchRepo":
        return CopierError(
            "NoSuchRepo",
            f"There is no repository {source.repo_id!r} at {source.endpoint_url or DEFAULT_ENDPOINT}. "
            "Check the repository id (owner/name; it is case-sensitive) and the endpoint.",
        )
    if kind == "NoSuchRevision":
        return CopierError(
            "NoSuchRevision",
            f"The repository {source.repo_id!r} has no revision {source.revision!r}: give a branch, "
            "a tag or a commit id.",
        )
    if kind == "Unreachable":
        return CopierError(
            "SourceUnreachable",
            f"Cannot reach the hub at {source.endpoint_url or DEFAULT_ENDPOINT} "
            f"({_short(exc, source)}). Check the endpoint URL and that the cluster can reach it.",
        )
    return CopierError("SourceUnreachable", f"Listing {source.where} failed: {_short(exc, source)}.")


def _short(exc: BaseException, source: HubSource) -> str:
    """The first line of an error, without the token (the client never puts it in messages,
    but a proxy's echo could)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if source.token:
        text = text.replace(source.token, "***")
    return text or type(exc).__name__


# Listing ---------------------------------------------------------------------------------------


def api(source: HubSource) -> Any:
    from huggingface_hub import HfApi

    # token=False, not None: never fall back to a token found in the environment or HF_HOME.
    return HfApi(endpoint=source.endpoint_url or DEFAULT_ENDPOINT, token=source.token or False)


def resolve_commit(source: HubSource) -> str:
    """The commit id the revision points to now (raises huggingface_hub's errors)."""
    info = api(source).model_info(source.repo_id, revision=source.revision, timeout=API_TIMEOUT)
    if not info.sha:
        raise CopierError("SourceUnreachable", f"{source.where} did not name the commit of the revision.")
    return str(info.sha)


def list_files(source: HubSource) -> tuple[str, list[SourceFile], list[str]]:
    """(commit id, files, paths that are not files here), the files' location being the path in
    the repo and their version the content id."""
    from huggingface_hub import RepoFile

    _quiet()
    try:
        commit = resolve_commit(source)
        entries = list(api(source).list_repo_tree(source.repo_id, recursive=True, revision=commit))
    except CopierError:
        raise
    except Exception as exc:
        raise _listing_error(source, exc) from exc
    files: list[SourceFile] = []
    others: list[str] = []
    for entry in entries:
        if not isinstance(entry, RepoFile):
            continue  # folders come with their files
        if not safe_relative_path(entry.path) or entry.path.startswith(CLIENT_FOLDER):
            others.append(entry.path)
            continue
        content_id = entry.lfs.sha256 if entry.lfs else entry.blob_id
        files.append(
            SourceFile(
                path=entry.path, size=int(entry.size), version={"etag": content_id}, location=entry.path
            )
        )
    if not files:
        raise CopierError(
            "EmptySource", f"Nothing to copy: {source.where} (commit {commit[:12]}) holds no files."
        )
    return commit, files, others


def expected_md5(file: SourceFile) -> str | None:
    """The hub publishes no MD5 (git blob ids and sha256s): --verify-md5 checks sizes only."""
    return None


def _quiet() -> None:
    """No progress bars: the pod log is the copier's JSON lines (and errors)."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()


# Copying ---------------------------------------------------------------------------------------

_FATAL = {"AccessDenied", "NoSuchRepo", "NoSuchRevision", "Unreachable"}


def copy(
    source: HubSource,
    commit: str,
    to_copy: list[SourceFile],
    dest: Destination,
    finisher: Finisher,
    progress: Progress,
    *,
    workers: int,
) -> None:
    """Download `to_copy` at `commit` into the temporary folder; the Finisher moves each into place."""
    from huggingface_hub import hf_hub_download

    _quiet()
    partial_root = str(dest.partial_root)
    # Where the client would look for an earlier download: inside the temporary folder, which
    # starts empty, so nothing outside the destination is read or written.
    client_cache = os.path.join(partial_root, CLIENT_FOLDER, "hub")

    def download(file: SourceFile, _stop: threading.Event) -> None:
        hf_hub_download(
            source.repo_id,
            file.location,
            revision=commit,
            endpoint=source.endpoint_url or DEFAULT_ENDPOINT,
            token=source.token or False,
            local_dir=partial_root,
            cache_dir=client_cache,
        )

    download_all(
        to_copy,
        download=download,
        on_error=lambda file, exc: _download_error(source, commit, file, exc, dest, finisher),
        finisher=finisher,
        progress=progress,
        workers=workers,
        name="hub",
        client="huggingface_hub",
    )


def _download_error(
    source: HubSource,
    commit: str,
    file: SourceFile,
    exc: BaseException,
    dest: Destination,
    finisher: Finisher,
) -> CopierError | None:
    """A CopierError that ends the run, or None once the file is recorded as failed."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return no_space_error(dest)
    kind = error_kind(exc)
    done = f"{len(finisher.finished)} file(s) were copied and are kept; a re-run copies the rest."
    if kind in _FATAL:
        if kind == "NoSuchRevision":
            return CopierError(
                "NoSuchRevision",
                f"The commit {commit[:12]} of {source.where} is no longer served (the history was "
                f"rewritten during the copy): run the prewarm again. {done}",
            )
        error = _listing_error(source, exc)
        error.message += f" {done}"
        return error
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return CopierError("Interrupted", f"Stopped while downloading {file.path}. {done}")
    finisher.fail(file.path, _short(exc, source))
    return None

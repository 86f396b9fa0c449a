"""ModelScope sources: list and download over ModelScope's HTTP API with `requests`.

`--source=modelscope://owner/name@revision` (revision defaults to master, ModelScope's default
branch), `--endpoint-url` for a mirror or the international site (default
https://www.modelscope.cn), the SDK token from `MODELSCOPE_API_TOKEN`.

The calls are the ones the `modelscope` package's own client makes (modelscope/hub/api.py and
file_download.py in github.com/modelscope/modelscope):

- `POST /api/v1/login` with `{"AccessToken": token}`: `HubApi.login`; the answer sets the
  `m_session_id` cookie that authenticates every later call (the client sends no
  Authorization header).
- `GET /api/v1/models/{owner}/{name}/revisions`: branches and tags (`Data.RevisionMap`), as
  `get_valid_revision` checks them: a revision must be one of these.
- `GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=True[&Root=]`: every file
  with `Path`, `Size`, `Sha256`, `Revision` (the commit that last changed it) and `Type`
  (`blob` or `tree`); `.gitignore`/`.gitattributes` are skipped, as the client does.
- `GET /api/v1/models/{owner}/{name}/repo?Revision=&FilePath=`: the file, with `Range`.
- Answers are `{"Code": 200, "Data": ..., "Message": ..., "Success": true}`; errors are HTTP
  403 (no or bad credentials for a private repo), 404 (no such repo), or `Code` != 200.

Why not the `modelscope` package: its hub install is light (requests, tqdm, filelock, urllib3,
packaging, setuptools: requirements/hub.txt), but the client keeps state in ~/.modelscope
(pickled cookies, a session id file), retries every request and download five times with
back-off (a console request must fail in seconds), picks a revision by the SDK's release date
when none is given, and parts of it import a top-level `datasets` module (Hugging Face's), which
here is this app's own package. The four calls above are the whole contract: plain `requests`
(already installed for the kubernetes client) is the thinner, well-understood path.

Listing resolves nothing to a commit (the API has no such call): files are downloaded at the
branch or tag and each download is checked against the listed size and sha256, so a repo that
changes mid-copy fails the changed file instead of mixing versions silently. The manifest
version of a file is its sha256 (or, where the listing gives none, the id of the commit that last
changed it): a re-run skips files whose size and content id are unchanged, whatever the revision.
No Django here; the console's ModelScopeStorage uses `ModelScopeApi` too.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any

from datasets.copier.downloads import download_all
from datasets.copier.errors import CopierError
from datasets.copier.finish import Finisher, no_space_error
from datasets.copier.hub import RepoSource
from datasets.copier.plan import Destination, SourceFile, safe_relative_path
from datasets.copier.progress import Progress

SCHEME = "modelscope://"
DEFAULT_ENDPOINT = "https://www.modelscope.cn"
DEFAULT_REVISION = "master"
TOKEN_ENV = "MODELSCOPE_API_TOKEN"  # what the modelscope client reads too
SESSION_COOKIE = "m_session_id"
# owner/name as ModelScope shows them (e.g. ZhipuAI/chatglm2-6b, Qwen/Qwen2.5-7B-Instruct).
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,127}/[A-Za-z0-9][\w.-]{0,127}")
SKIPPED_NAMES = {".gitignore", ".gitattributes"}
API_TIMEOUT = 30.0
CHUNK = 1024 * 1024


def valid_repo_id(repo_id: str) -> bool:
    return bool(REPO_ID.fullmatch(repo_id)) and ".." not in repo_id


@dataclass(frozen=True)
class ModelScopeSource(RepoSource):
    scheme = SCHEME
    default_endpoint = DEFAULT_ENDPOINT
    revision: str = DEFAULT_REVISION
    valid_repo_id = staticmethod(valid_repo_id)

    @property
    def label(self) -> str:
        """Versions are content ids (sha256), true whatever the revision or mirror: one label."""
        return "modelscope"


# The API ------------------------------------------------------------------------------------------


class ModelScopeError(Exception):
    """`kind`: AccessDenied, NoSuchRepo, NoSuchRevision, NotFound, Unreachable, NotTheApi (the
    endpoint answers, but not as ModelScope's API) or None (something else)."""

    def __init__(self, kind: str | None, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class RepoEntry:
    path: str
    size: int
    is_folder: bool
    sha256: str | None
    commit: str | None  # the commit that last changed the file


class ModelScopeApi:
    """The few calls above, on one requests session. `retries`: the copier retries connection
    errors and 5xx a few times; the console (inside a web request) does not."""

    def __init__(self, source: ModelScopeSource, *, timeout: float = API_TIMEOUT, retries: int = 0) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.source = source
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "inference-console-copier"
        adapter = HTTPAdapter(
            max_retries=Retry(
                total=retries,
                connect=retries,
                read=retries,
                status=retries,
                backoff_factor=0.5,
                status_forcelist=(500, 502, 503, 504),
                allowed_methods=frozenset({"GET"}),
                raise_on_status=False,
            ),
            pool_maxsize=32,
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._logged_in = False
        self._lock = threading.Lock()

    @property
    def _models(self) -> str:
        return f"{self.source.endpoint}/api/v1/models/{self.source.repo_id}"

    def login(self) -> None:
        """Trade the SDK token for the session cookie, once (no token: anonymous reads)."""
        with self._lock:
            if self._logged_in or not self.source.token:
                self._logged_in = True
                return
            response = self._request(
                "POST", f"{self.source.endpoint}/api/v1/login", json={"AccessToken": self.source.token}
            )
            body = _json(response)
            if response.status_code in (401, 403) or ("Code" in body and not _ok(body)):
                raise ModelScopeError("AccessDenied", "login refused", response.status_code)
            if "Code" not in body:  # every ModelScope site has this call: not its API
                raise ModelScopeError("NotTheApi", _not_the_api(response), response.status_code)
            _raise_for_status(response, body)
            if not any(cookie.name == SESSION_COOKIE for cookie in self.session.cookies):
                # A server that answers without the cookie: send the token itself, as the
                # client's HubApi.get_cookies(access_token) does, scoped to the endpoint's host.
                host = urllib.parse.urlsplit(self.source.endpoint).hostname or ""
                self.session.cookies.set(SESSION_COOKIE, self.source.token, domain=host, path="/")
            self._logged_in = True

    def revisions(self) -> tuple[list[str], list[str]]:
        """(branches, tags)."""
        self.login()
        response = self._request("GET", f"{self._models}/revisions")
        body = _json(response)
        _raise_for_status(response, body)
        revision_map = (body.get("Data") or {}).get("RevisionMap") or {}
        names = [
            [str(item.get("Revision")) for item in revision_map.get(key) or [] if item.get("Revision")]
            for key in ("Branches", "Tags")
        ]
        return names[0], names[1]

    def check_revision(self) -> None:
        branches, tags = self.revisions()
        if self.source.revision not in branches and self.source.revision not in tags:
            known = ", ".join((branches + tags)[:10]) or "none"
            raise ModelScopeError("NoSuchRevision", f"branches and tags: {known}")

    def files(self, *, recursive: bool = True, root: str | None = None) -> list[RepoEntry]:
        self.login()
        params = {"Revision": self.source.revision, "Recursive": str(recursive)}
        if root:
            params["Root"] = root
        response = self._request("GET", f"{self._models}/repo/files", params=params)
        body = _json(response)
        _raise_for_status(response, body)
        entries = []
        for item in (body.get("Data") or {}).get("Files") or []:
            if item.get("Name") in SKIPPED_NAMES or not item.get("Path"):
                continue
            entries.append(
                RepoEntry(
                    path=str(item["Path"]).strip("/"),
                    size=int(item.get("Size") or 0),
                    is_folder=item.get("Type") == "tree",
                    sha256=item.get("Sha256") or None,
                    commit=item.get("Revision") or None,
                )
            )
        return entries

    def file_url(self, path: str) -> str:
        query = urllib.parse.urlencode({"Revision": self.source.revision, "FilePath": path})
        return f"{self._models}/repo?{query}"

    def open_file(self, path: str, *, start: int = 0, end: int | None = None, stream: bool = False) -> Any:
        """The response for the file (or the byte range start..end inclusive), status checked;
        416 (a range past the end) is returned as it is."""
        self.login()
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-" + ("" if end is None else str(end))
        response = self._request("GET", self.file_url(path), headers=headers, stream=stream)
        if response.status_code in (200, 206, 416):
            return response
        body = _json(response) if not stream else {}
        response.close()
        if response.status_code == 404:
            raise ModelScopeError("NotFound", f"no file {path!r}", 404)
        _raise_for_status(response, body)
        raise ModelScopeError(None, f"HTTP {response.status_code}", response.status_code)

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        import requests

        timeout = (min(self.timeout, 10.0), self.timeout)  # (connect, read)
        try:
            return self.session.request(method, url, timeout=timeout, **kwargs)
        except requests.exceptions.RetryError as exc:
            raise ModelScopeError("Unreachable", "the server kept failing (HTTP 5xx)") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise ModelScopeError("Unreachable", type(exc).__name__) from exc
        except requests.exceptions.RequestException as exc:
            raise ModelScopeError(None, type(exc).__name__) from exc


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _not_the_api(response: Any) -> str:
    return f"HTTP {response.status_code} without ModelScope's JSON envelope"


def _ok(body: dict[str, Any]) -> bool:
    return body.get("Code") == 200 and body.get("Success", True) is not False


def _raise_for_status(response: Any, body: dict[str, Any]) -> None:
    """The client's handle_http_response + raise_on_error: 404 no repo, 403 no access, 5xx the
    server, and a Code other than 200 in a 2xx answer. Only the status goes into messages: a
    server's free text could quote request details."""
    status = response.status_code
    if status == 404:
        raise ModelScopeError("NoSuchRepo", "HTTP 404", status)
    if status in (401, 403):
        raise ModelScopeError("AccessDenied", f"HTTP {status}", status)
    if status >= 500:
        raise ModelScopeError("Unreachable", f"HTTP {status}", status)
    if status >= 400:
        raise ModelScopeError(None, f"HTTP {status}", status)
    if "Code" not in body:
        raise ModelScopeError("NotTheApi", _not_the_api(response), status)
    if not _ok(body):
        raise ModelScopeError(None, f"API code {body.get('Code')}", status)


# Errors for the copier ----------------------------------------------------------------------------


def copier_error(source: ModelScopeSource, exc: ModelScopeError) -> CopierError:
    if exc.kind == "AccessDenied":
        if source.token:
            return CopierError(
                "AccessDenied",
                f"ModelScope refused the token ({exc.detail}) for {source.where}. Check the dataset's "
                "token (an SDK token from the ModelScope account page) and that it may read this "
                "repository.",
            )
        return CopierError(
            "AccessDenied",
            f"ModelScope does not show {source.where} without a token ({exc.detail}): the repository is "
            "private. Give the dataset a token that can read it, or check the repository id.",
        )
    if exc.kind == "NoSuchRepo":
        return CopierError(
            "NoSuchRepo",
            f"There is no repository {source.repo_id!r} at {source.endpoint}. Check the repository id "
            "(owner/name) and the endpoint.",
        )
    if exc.kind == "NoSuchRevision":
        return CopierError(
            "NoSuchRevision",
            f"The repository {source.repo_id!r} has no revision {source.revision!r} ({exc.detail}): "
            "give a branch or a tag.",
        )
    if exc.kind == "Unreachable":
        return CopierError(
            "SourceUnreachable",
            f"Cannot reach ModelScope at {source.endpoint} ({exc.detail}). Check the endpoint URL and "
            "that the cluster can reach it.",
        )
    if exc.kind == "NotTheApi":
        return CopierError(
            "SourceUnreachable",
            f"{source.endpoint} does not answer like ModelScope's API ({exc.detail}). Check the endpoint "
            "URL (e.g. https://www.modelscope.cn).",
        )
    return CopierError("SourceUnreachable", f"Listing {source.where} failed ({exc.detail}).")


# Listing ------------------------------------------------------------------------------------------


def list_files(source: ModelScopeSource) -> tuple[list[SourceFile], list[str]]:
    """(files, paths that cannot be files here): the location is the path in the repo, the
    version the sha256 (or the commit that last changed the file)."""
    api = ModelScopeApi(source, retries=3)
    try:
        api.check_revision()
        entries = api.files(recursive=True)
    except ModelScopeError as exc:
        raise copier_error(source, exc) from exc
    files: list[SourceFile] = []
    others: list[str] = []
    for entry in entries:
        if entry.is_folder:
            continue  # folders come with their files
        if not safe_relative_path(entry.path):
            others.append(entry.path)
            continue
        version = {"sha256": entry.sha256} if entry.sha256 else {"commit": entry.commit}
        files.append(SourceFile(path=entry.path, size=entry.size, version=version, location=entry.path))
    if not files:
        raise CopierError("EmptySource", f"Nothing to copy: {source.where} holds no files.")
    return files, others


def expected_md5(file: SourceFile) -> str | None:
    """ModelScope publishes sha256s, not MD5s; downloads are always checked against the sha256."""
    return None


# Copying ------------------------------------------------------------------------------------------

_FATAL = {"AccessDenied", "NoSuchRepo", "Unreachable", "NotTheApi"}


class _Mismatch(Exception):
    pass


def copy(
    source: ModelScopeSource,
    to_copy: list[SourceFile],
    dest: Destination,
    finisher: Finisher,
    progress: Progress,
    *,
    workers: int,
) -> None:
    """Download `to_copy` into the temporary folder, hashing as the bytes arrive; the Finisher
    checks the size and moves each file into place."""
    api = ModelScopeApi(source, retries=3)
    try:
        api.login()  # once, before the workers share the session cookie
    except ModelScopeError as exc:
        raise copier_error(source, exc) from exc
    download_all(
        to_copy,
        download=lambda file, stop: _download(api, file, dest.partial(file.path), stop),
        on_error=lambda file, exc: _download_error(source, file, exc, dest, finisher),
        finisher=finisher,
        progress=progress,
        workers=workers,
        name="modelscope",
        client="the ModelScope API",
    )


def _download(api: ModelScopeApi, file: SourceFile, partial: Any, stop: threading.Event) -> None:
    partial.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        if file.size:  # no request for an empty file, as the client does
            with contextlib.closing(api.open_file(file.location, stream=True)) as response:
                if response.status_code != 200:
                    raise ModelScopeError(None, f"HTTP {response.status_code} for a whole file")
                for chunk in response.iter_content(CHUNK):
                    if stop.is_set():
                        return
                    out.write(chunk)
                    digest.update(chunk)
    expected = file.version.get("sha256")
    if expected and digest.hexdigest() != expected:
        raise _Mismatch(
            f"sha256 {digest.hexdigest()[:16]}... of the download differs from the listed "
            f"{expected[:16]}... (the file changed during the copy?)"
        )


def _download_error(
    source: ModelScopeSource, file: SourceFile, exc: BaseException, dest: Destination, finisher: Finisher
) -> CopierError | None:
    """A CopierError that ends the run, or None once the file is recorded as failed."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return no_space_error(dest)
    done = f"{len(finisher.finished)} file(s) were copied and are kept; a re-run copies the rest."
    if isinstance(exc, ModelScopeError) and exc.kind in _FATAL:
        error = copier_error(source, exc)
        error.message += f" {done}"
        return error
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return CopierError("Interrupted", f"Stopped while downloading {file.path}. {done}")
    with contextlib.suppress(OSError):
        os.unlink(dest.partial(file.path))
    if isinstance(exc, _Mismatch):
        finisher.fail(file.path, str(exc))
    elif isinstance(exc, ModelScopeError):
        finisher.fail(file.path, exc.detail)
    else:
        finisher.fail(file.path, f"{type(exc).__name__}: {str(exc)[:200]}")
    return None
